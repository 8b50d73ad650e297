"""Evaluation metrics: unbiased pass@k and avg@n."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k = 1 - C(n - c, k) / C(n, k) (Chen et al. 2021).

    Stable product form: C(n-c, k) / C(n, k) = prod_{i = n-c+1}^{n} (1 - k / i).
    Returns 1.0 when n - c < k. Raises ValueError when k > n or k < 1 or c not in [0, n].
    """
    if k < 1 or k > n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if c < 0 or c > n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def avg_at_k(correct: Sequence[int] | np.ndarray) -> float:
    """Mean correctness over the n samples of one problem (fraction in [0, 1])."""
    a = np.asarray(correct, dtype=float)
    return float(a.mean())


def summarize(correct_matrix: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Aggregate a (P, n) 0/1 matrix into percentages (0-100).

    Returns {"avg@n": mean over problems of avg_at_k, "pass@k": mean over problems of pass_at_k}
    with the literal key "avg@n" and one "pass@{k}" key per k.
    """
    m = np.asarray(correct_matrix)
    n = m.shape[1]
    c = m.sum(axis=1).astype(int)
    out = {"avg@n": 100.0 * float(np.mean([avg_at_k(row) for row in m]))}
    for k in ks:
        out[f"pass@{k}"] = 100.0 * float(np.mean([pass_at_k(n, int(ci), int(k)) for ci in c]))
    return out


def passk_curve(correct_counts: Sequence[int], n: int) -> np.ndarray:
    """Mean unbiased pass@k over problems, in percent, for k = 1..n, from each problem's number of correct samples
    out of n. (n,)"""
    return np.array([100.0 * np.mean([pass_at_k(n, c, k) for c in correct_counts]) for k in range(1, n + 1)])


def pearson_r(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation of two equal-length samples (n >= 2); None when either is constant (undefined).

    r = sum((x - mx)(y - my)) / sqrt(sum((x - mx)^2) sum((y - my)^2)).
    """
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"need two 1-D samples of the same length >= 2, got {a.shape} and {b.shape}")
    da, db = a - a.mean(), b - b.mean()
    den = float(np.sqrt((da**2).sum() * (db**2).sum()))
    if den == 0.0:
        return None
    return float((da * db).sum() / den)
