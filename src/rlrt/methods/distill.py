"""Logit-level self-distillation: SDPO's top-K generalized JSD and SRPO's routing weights (App. G.1, Table 4-5).

SDPO (Hübotter et al.) pulls the student view P_S^t = pi_theta(. | h_t) toward the teacher view
P_T^t = pi_teacher(. | h_t, c) on every rollout that has a context c (a correct sibling), with a generalized
Jensen-Shannon divergence over the student's top-K tokens. SRPO routes by correctness: r = 1 rollouts take the
GRPO surrogate, r = 0 rollouts with a correct sibling take the SDPO loss with entropy-aware token weights.

Everything here is a pure function of tensors; the engine (``rlrt.backends.local.rl``) supplies logits.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor


def student_topk(student_logits: Tensor, k: int, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """The student's top-K log-probabilities and their token ids (SDPO's support).

    Args:
        student_logits: (N, T, V), with gradient.
        k: top-K size (clipped to V).
        temperature: the logits are divided by it.
    Returns:
        (top_s, idx): (N, T, K) log-probs in at least float32 (float64 kept), with gradient; (N, T, K) token ids
        (ties broken by ``torch.topk``).
    """
    k = min(int(k), student_logits.shape[-1])
    dtype = torch.promote_types(student_logits.dtype, torch.float32)  # bf16 logits are upcast, float64 kept
    return torch.log_softmax(student_logits.to(dtype) / temperature, dim=-1).topk(k, dim=-1)


def student_logprobs(logits: Tensor, targets: Tensor, k: int, *, temperature: float = 1.0,
                     chunk: int = 1024) -> tuple[Tensor, Tensor, Tensor]:
    """The student's log-probs of ``targets`` and its top-K (:func:`student_topk`), ``chunk`` positions at a time
    under activation checkpointing, so that no float32 (N, T, V) tensor is kept for the backward pass: each
    chunk's upcast log-softmax exists only while that chunk is computed (forward) or recomputed (backward).

    Args:
        logits: (N, T, V), with gradient, any float dtype (bf16 at paper scale; not copied).
        targets: (N, T) token ids (the sampled tokens).
        k: top-K size (clipped to V).
        temperature: the logits are divided by it.
        chunk: positions per chunk (>= 1).
    Returns:
        (logp (N, T), top_s (N, T, K), idx (N, T, K)): log-probs in ``promote_types(logits.dtype, float32)`` with
        gradient, and the top-K ids; equal to ``log_softmax(logits / temperature)``'s gather and top-K.
    """
    from torch.utils.checkpoint import checkpoint

    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    N, T, V = logits.shape
    k = min(int(k), V)
    z, y = logits.reshape(N * T, V), targets.reshape(N * T, 1).long()

    def piece(zc: Tensor, yc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        lp = torch.log_softmax(zc.to(torch.promote_types(zc.dtype, torch.float32)) / temperature, dim=-1)
        top = lp.topk(k, dim=-1)
        return lp.gather(-1, yc).squeeze(-1), top.values, top.indices

    parts = [checkpoint(piece, z[s:s + chunk], y[s:s + chunk], use_reentrant=False) if z.requires_grad
             else piece(z[s:s + chunk], y[s:s + chunk]) for s in range(0, N * T, chunk)]
    if not parts:
        dt = torch.promote_types(logits.dtype, torch.float32)
        return (logits.new_zeros(N, T, dtype=dt), logits.new_zeros(N, T, k, dtype=dt),
                torch.zeros(N, T, k, dtype=torch.long, device=logits.device))
    logp, top_s, idx = (torch.cat(x) for x in zip(*parts))
    return logp.reshape(N, T), top_s.reshape(N, T, k), idx.reshape(N, T, k)


def topk_pair(top_s: Tensor, top_t: Tensor, vocab: int, tail: bool = True) -> tuple[Tensor, Tensor]:
    """Student and teacher top-K log-probs -> the two distributions the JSD compares.

    With ``tail`` the remaining mass of each distribution becomes one extra bucket, log(1 - sum_k p_k), so both are
    proper distributions over K + 1 outcomes (none is added when K = ``vocab``: the tail is empty); without it
    both are renormalised over the K tokens. The tail needs nothing beyond the K log-probs, provided they are
    normalised over the whole vocabulary.

    Args:
        top_s, top_t: (N, T, K) log-probs at the same token ids (the student's top-K).
        vocab: V, the vocabulary size.
    Returns:
        (log_s, log_t): (N, T, K') with K' = K + 1 if ``tail`` and K < V, else K.
    """
    if tail and top_s.shape[-1] < vocab:
        return torch.cat([top_s, _log_tail(top_s)], dim=-1), torch.cat([top_t, _log_tail(top_t)], dim=-1)
    if tail:  # K = V: the tail is empty, nothing to add
        return top_s, top_t
    return torch.log_softmax(top_s, dim=-1), torch.log_softmax(top_t, dim=-1)


def topk_distributions(
    student_logits: Tensor, teacher_logits: Tensor, k: int, tail: bool = True, temperature: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Student and teacher log-distributions restricted to the student's top-K tokens (SDPO).

    The support is the K tokens with the largest *student* log-probability (:func:`student_topk`); the teacher's
    log-probs are gathered at the same indices; :func:`topk_pair` adds the tail bucket (or renormalises).

    Args:
        student_logits: (N, T, V), with gradient.
        teacher_logits: (N, T, V), no gradient needed (detached here).
        k: top-K size (clipped to V).
        tail: add the tail bucket.
        temperature: both logits are divided by it (the rollout temperature).
    Returns:
        (log_s, log_t, idx): (N, T, K') log-probs with K' = K + 1 if tail else K, and idx (N, T, K) the token ids.
    """
    top_s, idx = student_topk(student_logits, k, temperature)
    log_t_full = torch.log_softmax(teacher_logits.detach().to(top_s.dtype) / temperature, dim=-1)
    log_s, log_t = topk_pair(top_s, log_t_full.gather(-1, idx), student_logits.shape[-1], tail)
    return log_s, log_t, idx


def logprobs_at(hidden: Tensor, head: Callable[[Tensor], Tensor], idx: Tensor, *, temperature: float = 1.0,
                chunk: int = 1024) -> Tensor:
    """log softmax(head(hidden) / temperature) at token ids ``idx``, never holding more than ``chunk`` positions'
    full-vocabulary logits (the teacher side of SDPO's top-K JSD at paper scale).

    Positions (the N * T of them, flattened) are taken ``chunk`` at a time: the chunk's logits (chunk, V) come
    out of ``head`` in its own dtype (bf16 at paper scale), one upcast copy (at least float32) gives the
    chunk's log-sum-exp, and only the K gathered log-probs are kept. Equal to
    ``log_softmax(head(hidden) / temperature).gather(-1, idx)`` up to rounding; no gradient (a frozen teacher).

    Args:
        hidden: (N, T, H) final hidden states (after the model's last norm) at the positions that predict.
        head: (n, H) -> (n, V) output projection (the LM head), applied to each chunk.
        idx: (N, T, K) token ids (the student's top-K).
        temperature: the logits are divided by it.
        chunk: positions per chunk (>= 1).
    Returns:
        (N, T, K) log-probs, in ``promote_types(head's output dtype, float32)``.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    N, T, K = idx.shape
    h, ix = hidden.reshape(N * T, hidden.shape[-1]), idx.reshape(N * T, K)
    parts = []
    with torch.no_grad():
        for s in range(0, N * T, chunk):
            z = head(h[s:s + chunk])  # (c, V), head's dtype
            z = z.to(torch.promote_types(z.dtype, torch.float32)) / temperature
            parts.append(z.gather(-1, ix[s:s + chunk]) - torch.logsumexp(z, dim=-1, keepdim=True))
            del z
    if not parts:
        return torch.zeros(N, T, K, dtype=torch.promote_types(hidden.dtype, torch.float32), device=hidden.device)
    return torch.cat(parts).reshape(N, T, K)


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
    student_logits: Tensor, teacher_logits: Optional[Tensor], logp: Tensor, old_logp: Tensor, *,
    topk: int = 100, tail: bool = True, alpha: float = 0.5, is_clip: float = 2.0, temperature: float = 1.0,
    teacher_logprobs: Optional[Callable[[Tensor], Tensor]] = None,
    student_top: Optional[tuple[Tensor, Tensor]] = None,
) -> Tensor:
    """SDPO per-token loss: JSD_alpha(top-K S, top-K T) * clamp(IS ratio, max=is_clip). (N, T, V) -> (N, T).

    The teacher is either its logits ``teacher_logits`` (N, T, V) (divided by ``temperature`` like the student's)
    or ``teacher_logprobs(idx (N, T, K)) -> (N, T, K)``: its log-probs at the student's top-K ids, normalised over
    the whole vocabulary at the temperature the student is compared at (e.g. :func:`logprobs_at`, which never
    builds the (N, T, V) tensor). ``student_top``: the student's (top_s, idx) (N, T, K) at ``temperature`` when
    already computed (e.g. by :func:`student_logprobs`), else taken from ``student_logits``.
    Aggregate with ``agg_loss(loss, response_mask * has_context[:, None], "token-mean")``.
    """
    if teacher_logprobs is None:
        log_s, log_t, _ = topk_distributions(student_logits, teacher_logits, topk, tail, temperature)
    else:
        top_s, idx = student_top if student_top is not None else student_topk(student_logits, topk, temperature)
        if top_s.shape[-1] != min(int(topk), student_logits.shape[-1]):
            raise ValueError(f"student_top has K = {top_s.shape[-1]}, the loss's top-K is {topk}")
        log_s, log_t = topk_pair(top_s, teacher_logprobs(idx).detach().to(top_s.dtype), student_logits.shape[-1],
                                 tail)
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
