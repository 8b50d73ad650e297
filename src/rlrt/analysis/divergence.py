"""Information asymmetry between the student and teacher next-token distributions (RLRT Sec. 4.1-4.3, Eq. 3-5).

Notation (paper Eq. 1): ``P_S^t = pi_theta(. | h_t)``, ``P_T^t = pi_theta(. | h_t, c)`` with ``c`` a correct solution.

* token-level asymmetry    ``D̂_t(v) = log P_S^t(v) - log P_T^t(v)``                       (Eq. 3)
* position-level asymmetry ``D̄_t = E_{v~P_S^t}[D̂_t(v)] = KL(P_S^t || P_T^t)``             (Eq. 3)
* Bayesian teacher          ``P_T^t(v) = P_S^t(v) f(v) / f̄_S^t  <=>  D̂_t(v) = log f̄_S^t - log f(v)`` (Lemma 1)
* influence                 ``Inf_S(t) = E_{v~P_S^t} |f(v) - f̄_S^t|``, and ``Inf_S(t)^2 <= 2 D̄_t``  (Eq. 5, Thm 2)

Every function takes logits (or probabilities) of shape ``(..., V)`` -- any leading shape, typically one chunk of
positions ``(B, c, V)`` -- and reduces over the vocabulary (last) axis. Long sequences at paper scale are fed one
chunk of positions at a time (:func:`rlrt.analysis.views.pair_position_stats`), so no ``(T, V)`` tensor is held
for a whole sequence. Logits are divided by ``temperature`` before the softmax (1.0 = the policy itself).
"""

from __future__ import annotations

import torch
from torch import Tensor


def log_probs(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``log softmax(logits / temperature)`` in float32 (float64 kept): (..., V) -> (..., V)."""
    x = logits if logits.dtype == torch.float64 else logits.float()
    return torch.log_softmax(x / temperature, dim=-1)


def kl(logp: Tensor, logq: Tensor) -> Tensor:
    """``KL(P || Q) = sum_v P(v) (log P(v) - log Q(v))`` from log-probabilities: (..., V) -> (...).

    Terms with ``P(v) = 0`` contribute 0. Clamped at 0 (the exact value is >= 0; float rounding can give -1e-9).
    """
    p = logp.exp()
    terms = torch.where(p > 0, p * (logp - logq), torch.zeros_like(p))
    return terms.sum(-1).clamp(min=0.0)


def position_asymmetry(logits_s: Tensor, logits_t: Tensor, temperature: float = 1.0) -> Tensor:
    """``D̄_t = KL(P_S^t || P_T^t)`` (Eq. 3): student logits (..., V), teacher logits (..., V) -> (...), >= 0."""
    return kl(log_probs(logits_s, temperature), log_probs(logits_t, temperature))


def token_asymmetry_all(logits_s: Tensor, logits_t: Tensor, temperature: float = 1.0) -> Tensor:
    """``D̂_t(v) = log P_S^t(v) - log P_T^t(v)`` for every vocabulary entry v: (..., V) -> (..., V)."""
    return log_probs(logits_s, temperature) - log_probs(logits_t, temperature)


def token_asymmetry(logits_s: Tensor, logits_t: Tensor, ids: Tensor, temperature: float = 1.0) -> Tensor:
    """``D̂_t(y_t)`` at the sampled tokens: logits (..., V), ids (...) long -> (...)."""
    return token_asymmetry_all(logits_s, logits_t, temperature).gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def extreme_tokens(logits_s: Tensor, logits_t: Tensor, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """``(argmax_v D̂_t(v), argmin_v D̂_t(v))`` over the whole vocabulary (App. D): (..., V) -> two (...) long.

    The argmax is the token the student favours most over the teacher (explore corpus), the argmin the token the
    teacher favours most over the student (exploit corpus); neither is the sampled token.
    """
    d = token_asymmetry_all(logits_s, logits_t, temperature)
    return d.argmax(-1), d.argmin(-1)


def explore_exploit_candidates(
    logits_s: Tensor, logits_t: Tensor, top: int = 100, show: int = 4, temperature: float = 1.0,
) -> dict[str, Tensor]:
    """The candidates shown at a critical position (Fig 2 / Fig 10).

    Candidates = union of the student's and the teacher's ``top`` most likely tokens. Among them, the ``show``
    tokens with the largest ``P_S - P_T > 0`` (explore, D̂ > 0) and the ``show`` with the largest ``P_T - P_S > 0``
    (exploit, D̂ < 0), each sorted by that gap, largest first.

    Args:
        logits_s, logits_t: (..., V).
    Returns:
        ``explore_ids``, ``exploit_ids``: (..., show) long, -1 where fewer than ``show`` candidates have that sign;
        ``explore_ps``, ``explore_pt``, ``exploit_ps``, ``exploit_pt``: (..., show) probabilities (0 where id -1).
    """
    lp_s, lp_t = log_probs(logits_s, temperature), log_probs(logits_t, temperature)
    p_s, p_t = lp_s.exp(), lp_t.exp()
    k = min(top, p_s.shape[-1])
    cand = torch.zeros_like(p_s, dtype=torch.bool)
    cand.scatter_(-1, p_s.topk(k, dim=-1).indices, True)
    cand.scatter_(-1, p_t.topk(k, dim=-1).indices, True)
    out: dict[str, Tensor] = {}
    for name, gap in (("explore", p_s - p_t), ("exploit", p_t - p_s)):
        gap = torch.where(cand, gap, torch.full_like(gap, -float("inf")))
        val, idx = gap.topk(min(show, gap.shape[-1]), dim=-1)
        ok = val > 0
        out[f"{name}_ids"] = torch.where(ok, idx, torch.full_like(idx, -1))
        out[f"{name}_ps"] = torch.where(ok, p_s.gather(-1, idx), torch.zeros_like(val))
        out[f"{name}_pt"] = torch.where(ok, p_t.gather(-1, idx), torch.zeros_like(val))
    return out


def js_divergence(logits_p: Tensor, logits_q: Tensor, temperature: float = 1.0) -> Tensor:
    """Jensen-Shannon divergence in nats, ``JS(P||Q) = ½KL(P||M) + ½KL(Q||M)``, ``M = ½(P+Q)``: (..., V) -> (...).

    Symmetric, in ``[0, ln 2]``; equals ``scipy.spatial.distance.jensenshannon(p, q) ** 2`` (scipy returns the
    distance, the square root). Computed in log space so tail tokens do not underflow.
    """
    lp, lq = log_probs(logits_p, temperature), log_probs(logits_q, temperature)
    lm = torch.logaddexp(lp, lq) - torch.log(torch.tensor(2.0, dtype=lp.dtype, device=lp.device))
    return (0.5 * kl(lp, lm) + 0.5 * kl(lq, lm)).clamp(min=0.0)


def bayesian_teacher(p_s: Tensor, f: Tensor) -> Tensor:
    """The Bayesian teacher of Lemma 1: ``P_T(v) = P_S(v) f(v) / f̄_S``, ``f̄_S = sum_v P_S(v) f(v)``.

    Args:
        p_s: (..., V) student probabilities; f: (..., V) per-token success probabilities ``Pr[R=1 | h_t, y_t=v]``.
    Returns:
        (..., V) teacher probabilities (the student tilted toward tokens with higher f).
    """
    w = p_s * f
    return w / w.sum(-1, keepdim=True)


def influence(p_s: Tensor, f: Tensor) -> Tensor:
    """``Inf_S(t) = E_{v~P_S}|f(v) - f̄_S|`` (Eq. 5): (..., V) -> (...). Theorem 2: ``Inf_S^2 <= 2 D̄_t``."""
    fbar = (p_s * f).sum(-1, keepdim=True)
    return (p_s * (f - fbar).abs()).sum(-1)
