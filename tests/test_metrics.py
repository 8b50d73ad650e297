import itertools

import numpy as np
import pytest

from rlrt.metrics import avg_at_k, pass_at_k, summarize


def _brute(n, c, k):
    items = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(items[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n,c,k", [(4, 1, 2), (5, 2, 2), (6, 3, 1), (8, 2, 4), (8, 5, 3), (10, 1, 5), (7, 0, 3), (7, 7, 2)])
def test_pass_at_k_brute(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(_brute(n, c, k), abs=1e-12)


def test_pass_at_k_hand_and_edges():
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(10, 0, 3) == 0.0
    assert pass_at_k(10, 10, 3) == 1.0
    assert pass_at_k(10, 8, 3) == 1.0  # n - c = 2 < k
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_avg_at_k():
    assert avg_at_k([1, 0, 0, 1]) == pytest.approx(0.5)
    assert avg_at_k(np.array([1, 1, 1])) == 1.0


def test_summarize():
    m = np.array([[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    s = summarize(m, [1, 2, 4])
    assert s["avg@n"] == pytest.approx(41.6666667)  # (25 + 100 + 0) / 3
    assert s["pass@1"] == pytest.approx(41.6666667)
    assert s["pass@2"] == pytest.approx(50.0)  # (50 + 100 + 0) / 3
    assert s["pass@4"] == pytest.approx(66.6666667)  # (100 + 100 + 0) / 3


def test_pearson_r_by_hand():
    from rlrt.metrics import pearson_r

    # x - mean = (-1, 0, 1), y - mean = (-1, 1, 0): r = 1 / sqrt(2 * 2) = 0.5
    assert pearson_r([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert pearson_r([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert pearson_r([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson_r([1, 2, 3], [5, 5, 5]) is None  # undefined, not NaN
    with pytest.raises(ValueError):
        pearson_r([1], [2])
