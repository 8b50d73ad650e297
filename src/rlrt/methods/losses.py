"""Policy-loss primitives: aggregation, DAPO clip-higher surrogate, entropy, log-probs (App. G.1-G.2)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def all_finite(*tensors: Optional[Tensor]) -> bool:
    """True when every element of every given tensor is finite (no NaN, no ±inf); ``None`` arguments are skipped.

    The update loops call it on advantages, logits, log-probs, losses and gradient norms before stepping the
    optimizer, so a non-finite value skips the update instead of entering the weights.
    """
    return all(t is None or bool(torch.isfinite(t).all()) for t in tensors)


def agg_loss(loss_mat: Tensor, mask: Tensor, mode: str) -> Tensor:
    """Aggregate a (N, T) token loss into a scalar, as verl's ``agg_loss`` (single rank).

    Modes:
      - "token-mean": sum(loss * mask) / sum(mask)  (DAPO token-level, Table 5).
      - "seq-mean-token-sum": mean over sequences of sum_t(loss * mask).
      - "seq-mean-token-mean": mean over sequences of sum_t(loss * mask) / sum_t(mask).
    Sequences with no valid token are left out of the sequence mean (as recent verl does);
    an all-zero mask gives 0 (never NaN).

    Args:
        loss_mat: (N, T).
        mask: (N, T) 0/1 or bool.
        mode: one of the above.
    Returns:
        scalar tensor.
    """
    m = mask.to(loss_mat.dtype)
    masked = loss_mat * m
    if mode == "token-mean":
        return masked.sum() / m.sum().clamp(min=1.0)
    tok = m.sum(dim=-1)
    valid = (tok > 0).to(loss_mat.dtype)
    n_seq = valid.sum().clamp(min=1.0)
    if mode == "seq-mean-token-sum":
        seq = masked.sum(dim=-1)
    elif mode == "seq-mean-token-mean":
        seq = masked.sum(dim=-1) / tok.clamp(min=1.0)
    else:
        raise ValueError(f"unknown loss aggregation mode: {mode!r}")
    return (seq * valid).sum() / n_seq


def surrogate_tokens(
    logp: Tensor, old_logp: Tensor, adv: Tensor, clip_low: float = 0.2, clip_high: float = 0.28,
    clip_ratio_c: float | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token clip-higher surrogate, before aggregation (verl's ``compute_policy_loss_vanilla``).

    pg_t = max(-A_t * ratio_t, -A_t * clip(ratio_t, 1 - clip_low, 1 + clip_high)), ratio_t = exp(logp - old_logp),
    with the log ratio clamped to [-20, 20] as verl does. With ``clip_ratio_c`` (dual-clip PPO, verl default 3.0)
    tokens with A_t < 0 take min(pg_t, -A_t * clip_ratio_c), bounding the loss of a very off-policy negative token.

    Args:
        logp, old_logp, adv: (N, T).
        clip_ratio_c: dual-clip bound (> 1) or None for none.
    Returns:
        (pg (N, T), clipped (N, T) bool: the clipped branch is strictly larger, log_ratio (N, T)).
    """
    log_r = torch.clamp(logp - old_logp, min=-20.0, max=20.0)
    ratio = torch.exp(log_r)
    pg1 = -adv * ratio
    pg2 = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    pg = torch.maximum(pg1, pg2)
    if clip_ratio_c is not None:
        if clip_ratio_c <= 1.0:
            raise ValueError(f"clip_ratio_c must be > 1, got {clip_ratio_c}")
        pg = torch.where(adv < 0, torch.minimum(pg, -adv * clip_ratio_c), pg)
    return pg, pg2 > pg1, log_r


def clipped_surrogate(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    agg: str = "token-mean",
    clip_ratio_c: float | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """PPO/DAPO clip-higher surrogate (App. G.1, GRPO: eps_low=0.2, eps_high=0.28), aggregated.

    ratio = exp(logp - old_logp);
    pg = max(-A * ratio, -A * clip(ratio, 1 - clip_low, 1 + clip_high)), and with ``clip_ratio_c`` (dual-clip)
    min(pg, -A * clip_ratio_c) on tokens with A < 0 (``surrogate_tokens``); ``clip_ratio_c=None`` disables it.

    Args:
        logp, old_logp, adv, mask: (N, T).
    Returns:
        (loss scalar, stats) with python-float stats: clip_frac (share of masked tokens where
        the clipped branch is strictly larger), approx_kl (masked mean of old_logp - logp),
        ratio_mean (masked mean), ratio_max (masked max; 0 if mask is empty).
    """
    pg, clipped, log_r = surrogate_tokens(logp, old_logp, adv, clip_low, clip_high, clip_ratio_c)
    ratio = torch.exp(log_r)
    loss = agg_loss(pg, mask, agg)
    with torch.no_grad():
        m = mask.to(ratio.dtype)
        denom = m.sum().clamp(min=1.0)
        stats = {
            "clip_frac": float((clipped.to(ratio.dtype) * m).sum() / denom),
            "approx_kl": float((-log_r * m).sum() / denom),
            "ratio_mean": float((ratio * m).sum() / denom),
            "ratio_max": float(torch.where(m > 0, ratio, torch.zeros_like(ratio)).max())
            if m.sum() > 0 else 0.0,
        }
    return loss, stats


def kl_penalty_low_var(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token KL(π_θ ‖ π_ref) estimate "k3" (verl's ``low_var_kl``, TRL's GRPO ``beta`` term):

        kl_t = exp(d_t) - d_t - 1,  d_t = clamp(ref_t - logp_t, -20, 20),  then clamped to [-10, 10] (as verl).

    Non-negative, unbiased for KL(π_θ‖π_ref) under samples of π_θ, with gradient through ``logp``.
    Args: logp, ref_logp: (N, T). Returns: (N, T).
    """
    d = torch.clamp(ref_logp - logp, min=-20.0, max=20.0)
    return torch.clamp(torch.exp(d) - d - 1.0, min=-10.0, max=10.0)


def entropy_bonus(entropy: Tensor, mask: Tensor, coeff: float, agg: str = "token-mean") -> Tensor:
    """GRPO+EB's entropy term, added to the policy loss: -coeff * agg(H_t) (verl: pg_loss - entropy_coeff * H).

    Minimising it raises the policy entropy (coeff > 0). Args: entropy, mask (N, T). Returns: scalar.
    """
    return -coeff * agg_loss(entropy, mask, agg)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Categorical entropy H = -sum_v p_v log p_v with log p = z - logsumexp(z).

    Computed from ``log_softmax`` (shift-invariant, so large logits lose no precision);
    zero-probability entries (e.g. -inf logits) contribute 0.

    Args:
        logits: (N, T, V).
    Returns:
        (N, T).
    """
    logp = torch.log_softmax(logits, dim=-1)
    p = logp.exp()
    plogp = torch.where(p > 0, p * logp, torch.zeros_like(p))
    return -plogp.sum(dim=-1)


def token_logprobs(logits: Tensor, ids: Tensor, temperature: float = 1.0) -> Tensor:
    """log softmax(logits / temperature) gathered at the sampled ids (log P^t(y_t), Eq. 1).

    Args:
        logits: (N, T, V).
        ids: (N, T) long.
        temperature: sampling temperature.
    Returns:
        (N, T).
    """
    logp = torch.log_softmax(logits / temperature, dim=-1)
    return logp.gather(-1, ids.long().unsqueeze(-1)).squeeze(-1)
