"""Reflection-injection helpers (Fig 6): positions, insertion, binning, flip rates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rlrt.analysis.injection import bin_problem, choose_positions, flip_table, inject


def test_choose_positions():
    d = [0.1, 2.0, 0.0, 0.5, 2.0]
    pos = choose_positions(d, np.random.default_rng(0))
    assert pos["max_kl"] == 1 and pos["min_kl"] == 2  # ties -> earliest
    draws = [choose_positions(d, np.random.default_rng(s))["random"] for s in range(200)]
    assert set(draws) == set(range(5))
    assert choose_positions(d, np.random.default_rng(7)) == choose_positions(d, np.random.default_rng(7))
    with pytest.raises(ValueError):
        choose_positions([], np.random.default_rng(0))


def test_inject_inserts_exactly_before_the_chosen_token():
    resp = [10, 11, 12, 13, 2]
    refl = [90, 91]
    assert inject(resp, 2, refl) == [10, 11, 90, 91]
    assert inject(resp, 0, refl) == [90, 91]
    assert inject(resp, 5, refl) == resp + refl
    with pytest.raises(ValueError):
        inject(resp, 6, refl)


def test_bin_problem():
    hard, easy = (0, 2), (5, 7)
    assert [bin_problem(k, hard, easy) for k in range(9)] == ["hard"] * 3 + [None, None] + ["easy"] * 3 + [None]


def test_flip_table():
    rec = pd.DataFrame([
        # hard: wrong rollouts; flip->R = became right
        {"run": "rlrt", "step": 0, "bin": "hard", "position": "max_kl", "before": 0, "after": 1},
        {"run": "rlrt", "step": 0, "bin": "hard", "position": "max_kl", "before": 0, "after": 0},
        {"run": "rlrt", "step": 0, "bin": "hard", "position": "max_kl", "before": 0, "after": 1},
        {"run": "rlrt", "step": 0, "bin": "hard", "position": "random", "before": 0, "after": 0},
        # easy: right rollouts; flip->W = became wrong
        {"run": "rlrt", "step": 0, "bin": "easy", "position": "max_kl", "before": 1, "after": 0},
        {"run": "rlrt", "step": 0, "bin": "easy", "position": "max_kl", "before": 1, "after": 1},
    ])
    t = flip_table(rec).set_index(["bin", "position"])
    assert t.loc[("hard", "max_kl"), "rate"] == pytest.approx(2 / 3)
    assert t.loc[("hard", "max_kl"), "metric"] == "flip->R" and t.loc[("hard", "max_kl"), "n"] == 3
    assert t.loc[("hard", "max_kl"), "se"] == pytest.approx(np.sqrt(2 / 9 / 3))
    assert t.loc[("hard", "random"), "rate"] == 0.0
    assert t.loc[("easy", "max_kl"), "rate"] == pytest.approx(0.5)
    assert t.loc[("easy", "max_kl"), "metric"] == "flip->W"
