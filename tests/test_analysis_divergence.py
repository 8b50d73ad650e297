"""Information asymmetry on toy distributions: D̄_t, D̂_t, Lemma 1, Theorem 2, JS, explore/exploit candidates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from rlrt.analysis.divergence import (bayesian_teacher, explore_exploit_candidates, extreme_tokens, influence,
                                      js_divergence, position_asymmetry, token_asymmetry, token_asymmetry_all)


def logits_of(p):
    return torch.log(torch.tensor(p, dtype=torch.float64))


def test_position_asymmetry_is_the_kl_by_hand():
    p_s, p_t = [0.5, 0.25, 0.25], [0.25, 0.25, 0.5]
    by_hand = 0.5 * math.log(0.5 / 0.25) + 0.25 * math.log(1.0) + 0.25 * math.log(0.25 / 0.5)  # = 0.25 ln 2
    d = position_asymmetry(logits_of(p_s), logits_of(p_t))
    assert d.item() == pytest.approx(by_hand, abs=1e-6)
    assert d.item() == pytest.approx(0.25 * math.log(2), abs=1e-6)
    # KL is not symmetric: KL(P_T || P_S) weighs the other way
    rev = 0.25 * math.log(0.25 / 0.5) + 0.25 * 0 + 0.5 * math.log(0.5 / 0.25)
    assert position_asymmetry(logits_of(p_t), logits_of(p_s)).item() == pytest.approx(rev, abs=1e-6)


def test_position_asymmetry_is_nonnegative_and_zero_iff_equal():
    g = torch.Generator().manual_seed(0)
    ls, lt = torch.randn(4, 7, 50, generator=g) * 3, torch.randn(4, 7, 50, generator=g) * 3
    d = position_asymmetry(ls, lt)
    assert d.shape == (4, 7)
    assert (d >= 0).all() and (d > 1e-3).all()
    assert position_asymmetry(ls, ls).abs().max().item() < 1e-6
    # shifting logits by a constant does not change the distribution
    assert torch.allclose(position_asymmetry(ls + 5.0, lt), d, atol=1e-5)


def test_dbar_is_the_student_expectation_of_dhat():
    g = torch.Generator().manual_seed(1)
    ls, lt = torch.randn(3, 20, generator=g), torch.randn(3, 20, generator=g)
    dhat = token_asymmetry_all(ls, lt)
    expect = (torch.softmax(ls, -1) * dhat).sum(-1)
    assert torch.allclose(position_asymmetry(ls, lt), expect, atol=1e-6)


def test_token_asymmetry_at_sampled_ids():
    p_s, p_t = [0.5, 0.25, 0.25], [0.25, 0.25, 0.5]
    ls, lt = logits_of([p_s, p_s]), logits_of([p_t, p_t])
    d = token_asymmetry(ls, lt, torch.tensor([0, 2]))
    assert d.tolist() == pytest.approx([math.log(2), -math.log(2)], abs=1e-6)


def test_temperature_scales_logits_before_the_softmax():
    ls, lt = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([0.0, 1.0, 0.0])
    ps, pt = torch.softmax(ls / 2, -1), torch.softmax(lt / 2, -1)
    by_hand = float((ps * (ps.log() - pt.log())).sum())
    assert position_asymmetry(ls, lt, temperature=2.0).item() == pytest.approx(by_hand, abs=1e-6)


def test_lemma1_bayesian_teacher():
    """P_T = P_S f / f̄  <=>  D̂_t(v) = log f̄ - log f(v), for every v (Lemma 1)."""
    g = torch.Generator().manual_seed(2)
    p_s = torch.softmax(torch.randn(5, 30, generator=g, dtype=torch.float64), -1)
    f = torch.rand(5, 30, generator=g, dtype=torch.float64) * 0.98 + 0.01
    p_t = bayesian_teacher(p_s, f)
    assert torch.allclose(p_t.sum(-1), torch.ones(5, dtype=torch.float64))
    fbar = (p_s * f).sum(-1, keepdim=True)
    dhat = token_asymmetry_all(p_s.log(), p_t.log())
    assert torch.allclose(dhat, fbar.log() - f.log(), atol=1e-5)
    # tokens with above-average success are teacher-favoured (D̂ < 0: exploit), below-average ones explore
    assert ((dhat < 0) == (f > fbar)).all()


def test_theorem2_influence_bounded_by_dbar():
    """Inf_S(t)^2 <= 2 D̄_t for the Bayesian teacher (Theorem 2); an inert position (constant f) has both 0."""
    g = torch.Generator().manual_seed(3)
    p_s = torch.softmax(torch.randn(200, 12, generator=g, dtype=torch.float64) * 2, -1)
    f = torch.rand(200, 12, generator=g, dtype=torch.float64) * 0.99 + 0.005
    dbar = position_asymmetry(p_s.log(), bayesian_teacher(p_s, f).log())
    inf = influence(p_s, f)
    assert (inf**2 <= 2 * dbar + 1e-7).all()
    const = torch.full_like(f, 0.3)
    assert position_asymmetry(p_s.log(), bayesian_teacher(p_s, const).log()).abs().max() < 1e-6
    assert influence(p_s, const).abs().max() < 1e-12


def test_js_divergence_matches_scipy_and_is_bounded():
    rng = np.random.default_rng(4)
    p = rng.dirichlet(np.ones(40), size=6)
    q = rng.dirichlet(np.ones(40) * 0.3, size=6)
    ours = js_divergence(torch.tensor(np.log(p)), torch.tensor(np.log(q))).numpy()
    ref = jensenshannon(p, q, axis=-1) ** 2  # scipy returns the distance (square root), natural log
    assert ours == pytest.approx(ref, abs=1e-6)
    assert (ours >= 0).all() and (ours <= math.log(2) + 1e-9).all()
    disjoint = js_divergence(logits_of([1.0, 1e-30]), logits_of([1e-30, 1.0]))
    assert disjoint.item() == pytest.approx(math.log(2), abs=1e-6)
    sym = js_divergence(torch.tensor(np.log(q)), torch.tensor(np.log(p))).numpy()
    assert sym == pytest.approx(ours, abs=1e-9)


def test_extreme_tokens_over_the_whole_vocabulary():
    p_s = [0.4, 0.3, 0.2, 0.1]
    p_t = [0.1, 0.3, 0.2, 0.4]
    hi, lo = extreme_tokens(logits_of(p_s), logits_of(p_t))
    assert (hi.item(), lo.item()) == (0, 3)
    # the argmax is a ratio, not a gap: a rare token the teacher suppresses 100x wins over a likely one
    hi2, _ = extreme_tokens(logits_of([0.5, 0.49, 0.01]), logits_of([0.3, 0.6999, 0.0001]))
    assert hi2.item() == 2


def test_explore_exploit_candidates_by_hand():
    p_s = [0.30, 0.24, 0.20, 0.10, 0.10, 0.06]
    p_t = [0.05, 0.26, 0.10, 0.30, 0.20, 0.09]
    c = explore_exploit_candidates(logits_of(p_s), logits_of(p_t), top=100, show=4)
    # P_S - P_T = [.25, -.02, .10, -.20, -.10, -.03]: explore = 0, 2 (only two positive gaps; the rest padded -1)
    assert c["explore_ids"].tolist() == [0, 2, -1, -1]
    assert c["explore_ps"].tolist() == pytest.approx([0.30, 0.20, 0.0, 0.0])
    assert c["explore_pt"].tolist() == pytest.approx([0.05, 0.10, 0.0, 0.0])
    assert c["exploit_ids"].tolist() == [3, 4, 5, 1]  # P_T - P_S = .20, .10, .03, .02
    assert c["exploit_pt"].tolist() == pytest.approx([0.30, 0.20, 0.09, 0.26])
    assert c["exploit_ps"].tolist() == pytest.approx([0.10, 0.10, 0.06, 0.24])


def test_candidates_come_from_the_union_of_top_lists():
    # top-1 of the student is token 0, of the teacher token 1; token 2 has the largest gap but is in neither top-1
    p_s = [0.50, 0.10, 0.40 - 1e-6, 1e-6]
    p_t = [0.30, 0.60, 0.05, 0.05]
    c = explore_exploit_candidates(logits_of(p_s), logits_of(p_t), top=1, show=2)
    assert c["explore_ids"].tolist() == [0, -1]
    assert c["exploit_ids"].tolist() == [1, -1]
    c2 = explore_exploit_candidates(logits_of(p_s), logits_of(p_t), top=4, show=2)
    assert c2["explore_ids"].tolist() == [2, 0]
