"""Token-level distribution shift of a fine-tuned policy against its base (RLRT Sec. 6.3, Fig 7; Meng et al.).

Per position ``t`` of a fine-tuned rollout, with ``π_ft = π_ft(. | h_t)`` and ``π_base = π_base(. | h_t)``:

* ``JS_t = JS(π_ft || π_base)`` (nats, in ``[0, ln 2]``);
* top-k overlap ``O_t(k) = |top-k(π_ft) ∩ top-k(π_base)| / k`` for ``k = 1..K``;
* ``q_t = π_base(argmax_v π_ft(v))``, the base probability of the fine-tuned policy's top-1 token.

Positions with ``JS_t > τ`` (paper: 0.1) are *high-divergence*. Fig 7 plots (a) the CCDF of ``JS_t`` over all
positions, (b) the mean of ``O_t(k)`` over high-divergence positions, (c) the fraction of high-divergence
positions with ``q_t`` below each threshold (10^-1 ... 10^-6).

:func:`position_stats` reduces one chunk of logits ``(..., V)`` to per-position values; the aggregations below
take the per-position arrays of all chunks, so no ``(T, V)`` tensor is kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from rlrt.analysis.divergence import js_divergence, log_probs


def topk_overlap(ids_a: Tensor, ids_b: Tensor) -> Tensor:
    """``|A[:k] ∩ B[:k]| / k`` for every ``k = 1..K`` from two top-K index lists (each sorted, distinct ids).

    ids_a, ids_b: (..., K) long -> (..., K) float; entry ``k-1`` is the overlap of the top-k prefixes
    (the diagonal of the 2-D cumulative sum of the match matrix).
    """
    eq = (ids_a.unsqueeze(-1) == ids_b.unsqueeze(-2)).to(torch.float32)  # (..., K, K): a_i == b_j
    c = eq.cumsum(-1).cumsum(-2)
    k = ids_a.shape[-1]
    diag = torch.diagonal(c, dim1=-2, dim2=-1)  # (..., K): count of matches among a[:k], b[:k]
    return diag / torch.arange(1, k + 1, dtype=torch.float32, device=ids_a.device)


def position_stats(logits_ft: Tensor, logits_base: Tensor, max_k: int = 20, temperature: float = 1.0) -> dict[str, Tensor]:
    """Per-position shift statistics: logits (..., V) -> ``js`` (...), ``overlap`` (..., max_k), ``top1_base_prob`` (...)."""
    lp_ft, lp_b = log_probs(logits_ft, temperature), log_probs(logits_base, temperature)
    k = min(max_k, lp_ft.shape[-1])
    top_ft = lp_ft.topk(k, dim=-1).indices
    top_b = lp_b.topk(k, dim=-1).indices
    return {
        "js": js_divergence(logits_ft, logits_base, temperature),
        "overlap": topk_overlap(top_ft, top_b),
        "top1_base_prob": lp_b.gather(-1, top_ft[..., :1]).squeeze(-1).exp(),
    }


def ccdf(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Fraction of ``values`` strictly above each grid point: (N,), (G,) -> (G,) (empty values -> zeros)."""
    v = np.sort(np.asarray(values, dtype=float))
    if not len(v):
        return np.zeros(len(grid))
    return 1.0 - np.searchsorted(v, np.asarray(grid, dtype=float), side="right") / len(v)


def overlap_curve(overlap: np.ndarray, js: np.ndarray, threshold: float) -> np.ndarray:
    """Mean top-k overlap over high-divergence positions: overlap (N, K), js (N,) -> (K,); NaN if none is high."""
    high = np.asarray(js) > threshold
    if not high.any():
        return np.full(np.asarray(overlap).shape[-1], np.nan)
    return np.asarray(overlap, dtype=float)[high].mean(0)


def tail_fractions(top1_base_prob: np.ndarray, js: np.ndarray, threshold: float,
                   prob_thresholds: Sequence[float]) -> np.ndarray:
    """Fraction of high-divergence positions whose fine-tuned top-1 token had base probability below each
    threshold: (N,), (N,) -> (len(prob_thresholds),); NaN if no position is high-divergence."""
    high = np.asarray(js) > threshold
    if not high.any():
        return np.full(len(prob_thresholds), np.nan)
    q = np.asarray(top1_base_prob, dtype=float)[high]
    return np.array([(q < p).mean() for p in prob_thresholds])
