"""How sure a comparison is: paired differences over problems x seeds, a bootstrap interval, and a verdict.

Every claim of the two papers that the pipeline tests is a *directional* comparison of two arms on the same test
problems (RLRT vs GRPO, RLRT-all vs RLRT, ...), each arm trained with the same seeds. The procedure, fixed before
looking at any number:

* per arm, a (S, P) matrix: S seeds (the same seed indices in both arms: seed s of RLRT and seed s of GRPO start
  from the same weights and see the same questions in the same order) x P test problems, each entry a per-problem
  score (avg@n as a fraction, or an unbiased pass@k);
* the statistic: the mean over seeds and problems of ``a - b`` (paired by seed and problem);
* its 95 % interval: a two-level percentile bootstrap that resamples seeds and, independently, problems, with
  replacement (both are sources of variation the claim should survive: a new seed, a new problem set), 10,000
  draws from a fixed generator;
* the verdict, for a claim that ``a`` beats ``b`` (``direction=+1``, or loses to it with -1): the interval
  entirely on the claimed side of 0 -> "reproduced"; entirely on the other side -> "not reproduced"; containing
  0 -> "inconclusive".

A correlation claim (RLT's reward rank predicts student accuracy) uses the same bootstrap over problems for
Pearson r across the ranks (:func:`bootstrap_pearson`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
N_BOOT = 10_000


@dataclass(frozen=True)
class Comparison:
    """A paired difference and its interval. ``diff``, ``lo``, ``hi``, ``se`` are in the scores' units; ``se`` is
    the standard deviation of the bootstrap statistic (the standard error over seeds and problems), so
    ``diff / se`` is the difference in standard errors (the claims issue's learning target: > 3)."""

    diff: float
    lo: float
    hi: float
    n_seeds: int
    n_problems: int
    se: float = float("nan")


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = N_BOOT, alpha: float = 0.05,
                     seed: int = 0) -> Comparison:
    """Mean paired difference ``a - b`` of two (S, P) score matrices and its (1 - alpha) percentile interval,
    resampling seeds (rows) and problems (columns) independently with replacement.

    Raises ValueError when the shapes differ, a matrix is empty, or a score is not finite."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 2 or a.shape != b.shape or a.size == 0:
        raise ValueError(f"need two (seeds, problems) matrices of one shape, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("scores must be finite")
    d = a - b
    S, P = d.shape
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, S, size=(n_boot, S))
    cols = rng.integers(0, P, size=(n_boot, P))
    # mean over the resampled seeds x problems grid = mean over seeds of (mean over problems of the row)
    stats = np.array([d[r][:, c].mean() for r, c in zip(rows, cols)])
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return Comparison(float(d.mean()), float(lo), float(hi), S, P,
                      float(stats.std(ddof=1)) if n_boot > 1 else float("nan"))


def verdict(lo: float, hi: float, direction: int = 1) -> str:
    """The verdict for a claim that the difference is > 0 (``direction=+1``) or < 0 (-1), given its interval."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction}")
    lo, hi = (lo, hi) if direction == 1 else (-hi, -lo)
    if lo > 0:
        return REPRODUCED
    if hi < 0:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def bootstrap_pearson(x: np.ndarray, y: np.ndarray, n_boot: int = N_BOOT, alpha: float = 0.05,
                      seed: int = 0) -> Comparison:
    """Pearson r between ``x`` (R,) (e.g. the reward rank) and the mean accuracy of ``y`` per rank, with a
    percentile interval. ``y`` is (R, P) (ranks x problems: problems are resampled) or (S, R, P) (seeds x ranks x
    problems: seeds and problems are resampled independently, as in :func:`paired_bootstrap`). ``n_seeds`` reports
    S (1 for a 2-D ``y``), ``n_problems`` P. Draws where the resampled accuracies are all equal (r undefined) are
    left out; an undefined point estimate gives NaN bounds."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if y.ndim == 2:
        y = y[None]
    if y.ndim != 3 or y.shape[1] != x.shape[0] or x.shape[0] < 3 or y.shape[2] == 0:
        raise ValueError(f"need >= 3 ranks and a (ranks, problems) or (seeds, ranks, problems) array, got "
                         f"{x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("scores must be finite")
    S, R, P = y.shape

    def r(v: np.ndarray) -> float:
        if np.std(v) == 0 or np.std(x) == 0:
            return float("nan")
        return float(np.corrcoef(x, v)[0, 1])

    rng = np.random.default_rng(seed)
    per_seed = y  # (S, R, P)
    draws = np.empty(n_boot)
    for i in range(n_boot):
        rows = rng.integers(0, S, size=S)
        cols = rng.integers(0, P, size=P)
        draws[i] = r(per_seed[rows][:, :, cols].mean(axis=(0, 2)))
    draws = draws[np.isfinite(draws)]
    point = r(y.mean(axis=(0, 2)))
    if not draws.size or not np.isfinite(point):
        return Comparison(point, float("nan"), float("nan"), S, P)
    lo, hi = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    return Comparison(point, float(lo), float(hi), S, P)
