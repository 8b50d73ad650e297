"""Logit-level self-distillation: SDPO's top-K generalized JSD and SRPO's routing weights (App. G.1, Table 4-5).

SDPO (Hübotter et al.) pulls the student view P_S^t = pi_theta(. | h_t) toward the teacher view
P_T^t = pi_teacher(. | h_t, c) on every rollout that has a context c (a correct sibling), with a generalized
Jensen-Shannon divergence over the student's top-K tokens. SRPO routes by correctness: r = 1 rollouts take the
GRPO surrogate, r = 0 rollouts with a correct sibling take the SDPO loss with entropy-aware token weights.

Everything here is a pure function of tensors; the engine (``rlrt.backends.local.rl``) supplies logits.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def topk_distributions(
    student_logits: Tensor, teacher_logits: Tensor, k: int, tail: bool = True, temperature: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Student and teacher log-distributions restricted to the student's top-K tokens (SDPO).

    The support is the K tokens with the largest *student* log-probability (ties broken by ``torch.topk``);
    the teacher's log-probs are gathered at the same indices. With ``tail`` the remaining mass of each
    distribution becomes one extra bucket, log(1 - sum_k p_k), so both are proper distributions over K + 1
    outcomes; without it both are renormalised over the K tokens (log-softmax of the gathered log-probs).

    Args:
        student_logits: (N, T, V), with gradient.
        teacher_logits: (N, T, V), no gradient needed (detached here).
        k: top-K size (clipped to V).
        tail: add the tail bucket.
        temperature: both logits are divided by it (the rollout temperature).
    Returns:
        (log_s, log_t, idx): (N, T, K') log-probs with K' = K + 1 if tail else K, and idx (N, T, K) the token ids.
    """
    v = student_logits.shape[-1]
    k = min(int(k), v)
    dtype = torch.promote_types(student_logits.dtype, torch.float32)  # bf16 logits are upcast, float64 kept
    log_s_full = torch.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    log_t_full = torch.log_softmax(teacher_logits.detach().to(dtype) / temperature, dim=-1)
    top_s, idx = log_s_full.topk(k, dim=-1)
    top_t = log_t_full.gather(-1, idx)
    if tail and k < v:
        return torch.cat([top_s, _log_tail(top_s)], dim=-1), torch.cat([top_t, _log_tail(top_t)], dim=-1), idx
    if tail:  # K = V: the tail is empty, nothing to add
        return top_s, top_t, idx
    return torch.log_softmax(top_s, dim=-1), torch.log_softmax(top_t, dim=-1), idx


def _log_tail(top_logp: Tensor, eps: float = 1e-7) -> Tensor:
    """log(1 - sum_k exp(top_logp_k)), (N, T, 1), clamped so a numerically full top-K gives log(eps), not -inf."""
    covered = torch.logsumexp(top_logp, dim=-1, keepdim=True)
    return torch.log((-torch.expm1(covered)).clamp(min=eps))


def kl_div(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) = sum_v p_v (log p_v - log q_v) over the last axis, from log-probs. (..., V) -> (...)."""
    p = log_p.exp()
    return (p * (log_p - log_q)).sum(dim=-1)


def generalized_jsd(log_s: Tensor, log_t: Tensor, alpha: float = 0.5) -> Tensor:
    """Generalized Jensen-Shannon divergence between student S and teacher T (SDPO / GKD form).

    M = (1 - alpha) * S + alpha * T, computed in log space as
    log M = logsumexp(log S + log(1 - alpha), log T + log alpha), and
        JSD_alpha = (1 - alpha) * KL(S || M) + alpha * KL(T || M)       (= lerp(KL(S||M), KL(T||M), alpha)).
    The endpoints are the two KLs (as in SDPO and TRL's GKD, where the mixture form would vanish):
        alpha = 0 -> forward KL(T || S);  alpha = 1 -> reverse KL(S || T).
    alpha = 0.5 is the symmetric JSD (bounded by log 2).

    Args:
        log_s, log_t: (..., K) log-probs over the same support.
        alpha: in [0, 1].
    Returns:
        (...) per-position divergence (differentiable in log_s).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if alpha == 0.0:
        return kl_div(log_t, log_s)
    if alpha == 1.0:
        return kl_div(log_s, log_t)
    log_m = torch.logsumexp(torch.stack([log_s + math.log(1.0 - alpha), log_t + math.log(alpha)]), dim=0)
    return (1.0 - alpha) * kl_div(log_s, log_m) + alpha * kl_div(log_t, log_m)


def clamped_is_ratio(logp: Tensor, old_logp: Tensor, clip: float = 2.0) -> Tensor:
    """Detached importance ratio pi_theta(y_t) / pi_old(y_t), clamped from above at ``clip`` (Table 5: 2).

    SDPO multiplies its per-token divergence by it so tokens sampled from the stale policy are reweighted
    toward the current one without letting a single token dominate. (N, T) -> (N, T).
    """
    return torch.exp((logp - old_logp).detach()).clamp(max=clip)


def sdpo_token_loss(
    student_logits: Tensor, teacher_logits: Tensor, logp: Tensor, old_logp: Tensor, *,
    topk: int = 100, tail: bool = True, alpha: float = 0.5, is_clip: float = 2.0, temperature: float = 1.0,
) -> Tensor:
    """SDPO per-token loss: JSD_alpha(top-K S, top-K T) * clamp(IS ratio, max=is_clip). (N, T, V) -> (N, T).

    Aggregate it with ``agg_loss(loss, response_mask * has_context[:, None], "token-mean")``.
    """
    log_s, log_t, _ = topk_distributions(student_logits, teacher_logits, topk, tail, temperature)
    return generalized_jsd(log_s, log_t, alpha) * clamped_is_ratio(logp, old_logp, is_clip)


def srpo_entropy_weights(teacher_entropy: Tensor, mask: Tensor, beta: float) -> Tensor:
    """SRPO's entropy-aware dynamic token weights for the routed (r = 0, has context) tokens.

    SRPO has no public code; we implement the description "entropy-aware dynamic weighting" as
        w_t = exp(-beta * H_T^t) / mean_{routed tokens}(exp(-beta * H_T^t)),
    where H_T^t is the teacher view's entropy at position t. Why this form: a confident teacher (low entropy)
    carries a sharper, more trustworthy target, so its tokens get more of the distillation signal; normalising
    to mean 1 over the routed tokens keeps the loss scale independent of beta, and beta = 0 recovers plain SDPO
    (all weights 1). The weights are detached (they rescale, they are not optimised).

    Args:
        teacher_entropy: (N, T) entropy of the teacher distribution.
        mask: (N, T) routed-token mask (response mask x routed rows).
        beta: coefficient >= 0 (Table 5 sweeps {0, 0.5, 1}).
    Returns:
        (N, T) weights, mean 1 over ``mask`` (0 outside it; all-zero mask gives zeros).
    """
    m = mask.to(teacher_entropy.dtype)
    raw = torch.exp(-beta * teacher_entropy.detach()) * m
    denom = raw.sum() / m.sum().clamp(min=1.0)
    return torch.where(denom > 0, raw / denom.clamp(min=1e-12), raw)


def srpo_route(rewards: Tensor, has_context: Tensor) -> tuple[Tensor, Tensor]:
    """SRPO's routing by correctness (Table 4 "route by r").

    Args:
        rewards: (N,) in {0, 1}.
        has_context: (N,) bool, True where a correct sibling exists (so all-wrong groups are False).
    Returns:
        (pg_rows, distill_rows): (N,) bool. r = 1 rows take the GRPO surrogate; r = 0 rows with a correct sibling
        take the SDPO loss; r = 0 rows of all-wrong groups take neither (zero advantage, no gradient).
    """
    correct = rewards > 0.5
    return correct, (~correct) & has_context.bool()
