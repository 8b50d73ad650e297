"""The claims' statistics on made-up numbers: a clear win, a clear loss, an interval around zero, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from rlrt.analysis.claims import (INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, bootstrap_pearson, paired_bootstrap,
                                  verdict)


def arms(delta: float, noise: float, S: int = 3, P: int = 64, seed: int = 0):
    """Two (S, P) score matrices in [0, 1]: b random per problem, a = b + delta + independent noise."""
    rng = np.random.default_rng(seed)
    b = rng.uniform(0.1, 0.6, size=(S, P))
    a = np.clip(b + delta + rng.normal(0, noise, size=(S, P)), 0, 1)
    return a, b


def test_a_clear_win_is_reproduced():
    a, b = arms(0.15, 0.05)
    c = paired_bootstrap(a, b)
    assert c.lo > 0.1 and c.hi < 0.2 and c.lo < c.diff < c.hi
    assert verdict(c.lo, c.hi) == REPRODUCED
    assert verdict(c.lo, c.hi, direction=-1) == NOT_REPRODUCED  # "a is worse" is refuted by the same interval


def test_a_clear_loss_is_not_reproduced():
    a, b = arms(-0.15, 0.05)
    c = paired_bootstrap(a, b)
    assert c.hi < 0
    assert verdict(c.lo, c.hi) == NOT_REPRODUCED
    assert verdict(c.lo, c.hi, direction=-1) == REPRODUCED


def test_noise_around_zero_is_inconclusive():
    a, b = arms(0.0, 0.3, seed=1)
    c = paired_bootstrap(a, b)
    assert c.lo < 0 < c.hi
    assert verdict(c.lo, c.hi) == INCONCLUSIVE and verdict(c.lo, c.hi, -1) == INCONCLUSIVE


def test_the_point_estimate_and_degenerate_interval_by_hand():
    a = np.array([[1.0, 0.5], [0.0, 0.5]])
    b = np.array([[0.5, 0.5], [0.5, 0.0]])
    c = paired_bootstrap(a, b)
    assert c.diff == pytest.approx((0.5 + 0.0 - 0.5 + 0.5) / 4) and (c.n_seeds, c.n_problems) == (2, 2)
    one = paired_bootstrap(np.array([[0.7]]), np.array([[0.2]]))
    assert (one.diff, one.lo, one.hi) == pytest.approx((0.5, 0.5, 0.5))  # nothing to resample


def test_more_seeds_and_problems_narrow_the_interval():
    small = paired_bootstrap(*arms(0.05, 0.2, S=3, P=32, seed=2))
    large = paired_bootstrap(*arms(0.05, 0.2, S=6, P=256, seed=2))
    assert (large.hi - large.lo) < 0.6 * (small.hi - small.lo)


def test_the_bootstrap_is_deterministic_and_refuses_bad_input():
    a, b = arms(0.05, 0.1)
    assert paired_bootstrap(a, b) == paired_bootstrap(a, b)
    with pytest.raises(ValueError, match="one shape"):
        paired_bootstrap(a, b[:, :-1])
    bad = a.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap(bad, b)
    with pytest.raises(ValueError, match="direction"):
        verdict(0.1, 0.2, direction=0)


def test_pearson_over_ranks():
    rng = np.random.default_rng(0)
    ranks = np.arange(4)
    rising = np.clip(0.2 + 0.1 * ranks[:, None] + rng.normal(0, 0.05, size=(4, 200)), 0, 1)
    c = bootstrap_pearson(ranks, rising)
    assert c.diff > 0.9 and c.lo > 0.5 and verdict(c.lo, c.hi) == REPRODUCED
    flat = rng.uniform(0, 1, size=(4, 50))
    f = bootstrap_pearson(ranks, flat)
    assert f.lo < 0 < f.hi and verdict(f.lo, f.hi) == INCONCLUSIVE
    same = np.full((4, 10), 0.5)  # r undefined: no interval, inconclusive
    s = bootstrap_pearson(ranks, same)
    assert np.isnan(s.diff) and verdict(s.lo, s.hi) == INCONCLUSIVE
