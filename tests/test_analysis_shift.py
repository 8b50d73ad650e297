"""Distribution-shift statistics (Fig 7) on toy distributions: JS, top-k overlap, tail fractions, CCDF."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlrt.analysis.shift import ccdf, overlap_curve, position_stats, tail_fractions, topk_overlap


def test_topk_overlap_by_hand():
    a = torch.tensor([[5, 1, 2, 3]])
    b = torch.tensor([[1, 5, 4, 2]])
    # k=1: {5}∩{1}=0; k=2: {5,1}∩{1,5}=2; k=3: {5,1,2}∩{1,5,4}=2; k=4: {5,1,2,3}∩{1,5,4,2}=3
    assert topk_overlap(a, b)[0].tolist() == pytest.approx([0.0, 1.0, 2 / 3, 3 / 4])
    assert topk_overlap(a, a)[0].tolist() == pytest.approx([1.0] * 4)


def test_position_stats_on_toy_distributions():
    p_base = torch.tensor([0.6, 0.3, 0.09, 0.009, 0.001], dtype=torch.float64)
    p_ft = torch.tensor([0.05, 0.3, 0.05, 0.0, 0.6], dtype=torch.float64)
    p_ft = torch.where(p_ft > 0, p_ft, torch.tensor(1e-12, dtype=torch.float64))
    st = position_stats(p_ft.log().unsqueeze(0), p_base.log().unsqueeze(0), max_k=3)
    # π_ft's top-1 is token 4, which the base gave 0.001
    assert st["top1_base_prob"].item() == pytest.approx(0.001, rel=1e-6)
    # top-3 ft = {4, 1, 0 or 2}, base = {0, 1, 2}: k=1 -> 0, k=2 -> {4,1}∩{0,1} = 1/2
    # k=3: {4, 1, 0 or 2} ∩ {0, 1, 2} = 2/3
    assert st["overlap"][0].tolist() == pytest.approx([0.0, 0.5, 2 / 3])
    from scipy.spatial.distance import jensenshannon

    ref = jensenshannon(p_ft.numpy(), p_base.numpy()) ** 2
    assert st["js"].item() == pytest.approx(ref, abs=1e-6)
    assert st["overlap"].shape == (1, 3) and st["js"].shape == (1,)


def test_ccdf():
    v = np.array([0.0, 0.05, 0.2, 0.2, 0.6])
    assert ccdf(v, np.array([0.0, 0.1, 0.2, 0.5, 0.7])).tolist() == pytest.approx([0.8, 0.6, 0.2, 0.2, 0.0])
    assert ccdf(np.array([]), np.array([0.1])).tolist() == [0.0]


def test_overlap_curve_and_tail_fractions_use_high_divergence_positions_only():
    js = np.array([0.01, 0.2, 0.5, 0.11])
    overlap = np.array([[1.0, 1.0], [0.0, 0.5], [1.0, 0.5], [0.0, 1.0]])
    assert overlap_curve(overlap, js, 0.1).tolist() == pytest.approx([1 / 3, 2 / 3])
    q = np.array([1e-9, 0.5, 2e-4, 5e-2])
    fr = tail_fractions(q, js, 0.1, [1e-1, 1e-2, 1e-3, 1e-4])
    # high positions have q = 0.5, 2e-4, 5e-2
    assert fr.tolist() == pytest.approx([2 / 3, 1 / 3, 1 / 3, 0.0])
    assert all(math.isnan(x) for x in overlap_curve(overlap, js, 0.9))
    assert all(math.isnan(x) for x in tail_fractions(q, js, 0.9, [0.1]))
