"""The method-specific part of one RL step, backend-neutral: rewards -> token advantages and the objective's plan.

``shape_advantages`` is all a backend calls between "graded rollouts and θ_old's log-probs" and "the update":

1. DIVER-style reward bonus per group (before normalisation);
2. group advantages A (std-normalised or not);
3. the teacher view: each rollout's privileged context (``rlrt.teacher.build_contexts``), scored by the backend's
   ``score_teacher`` callable (the local engine passes its no-grad scorer; the verl backend its
   ``compute_log_prob`` on the teacher prompts) -> log P_T(y_t) and/or the teacher's entropy;
4. token advantages of Eq. 7 (weight, gate, λ schedule, ε_w clip) and GRPO+EB's entropy advantage;
5. the registered objective's plan (which rows take the surrogate, which distil, the loss mask).

Every equation it applies lives in the modules it imports; this file only orders them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from rlrt.methods.advantages import group_advantages, linear_decay
from rlrt.methods.objectives import Plan, get_objective
from rlrt.methods.registry import MethodSpec, objective_name
from rlrt.methods.settings import MethodSettings
from rlrt.methods.weights import log_ratio, mixed_weight, reweight_advantages
from rlrt.teacher import build_contexts


@dataclass(frozen=True)
class TeacherScores:
    """What ``score_teacher`` returns for B = G * n rows (R response tokens).

    has_context: (B,) bool, rows whose teacher prompt carries a context.
    logp:        (B, R) log P_T(y_t) at the rollout temperature, or None when not asked for.
    entropy:     (B, R) entropy of the teacher view, or None when not asked for.
    """

    has_context: Tensor
    logp: Optional[Tensor] = None
    entropy: Optional[Tensor] = None


# score_teacher(contexts (G, n) nested list of str | None, context kind, want_logp, want_entropy) -> TeacherScores
ScoreTeacher = Callable[[list[list[Optional[str]]], str, bool, bool], TeacherScores]


@dataclass(frozen=True)
class Shaped:
    """The output of ``shape_advantages`` (B = G * n rows, R response tokens)."""

    shaped_rewards: Tensor  # (B,) scores after the reward bonus
    adv: Tensor  # (B,) group advantages
    token_adv: Tensor  # (B, R)
    weight: Tensor  # (B, R) applied multiplier token_adv / A (1 where unweighted), 0 outside the mask
    lam: float
    has_context: Optional[Tensor]  # (B,) bool, None when the method has no teacher
    plan: Plan
    objective: str
    # (B, R) sg(log P_T(y_t) - log P_S(y_t)) on the rows whose token weight applies (gate, context, A != 0), 0
    # elsewhere, and those rows (B,) bool; None for methods without token weights. Its mean says whether the
    # teacher view is informed (> 0: the context raises the sampled tokens' probability) or confused (< 0).
    delta: Optional[Tensor] = None
    weighted_rows: Optional[Tensor] = None


def rows_needing_teacher(spec: MethodSpec, settings: MethodSettings, rewards: Tensor, has_context: Tensor,
                         want_entropy: bool) -> Tensor:
    """(B,) bool: rows whose teacher score can matter. rewards (G, n), has_context (B,).

    Teacher entropy (SRPO's plan) is wanted on every row with a context. Token weights change the advantage only
    where the spec's gate passes and the group advantage is non-zero (``group_advantages``, the same call
    ``shape_advantages`` makes; methods with a teacher have no reward bonus, so the scores are the rewards).
    """
    has = has_context.bool().reshape(-1)
    if want_entropy or spec.weight_fn is None:
        return has
    adv = group_advantages(rewards, bool(settings.norm_adv_by_std)).reshape(-1)
    return has & spec.gate(rewards.reshape(-1)) & (adv != 0)


def gated_rows(spec: MethodSpec, rewards: Tensor, has_context: Optional[Tensor]) -> Tensor:
    """(N,) bool: the rows a token weight applies to -- a context (every row when None) and the spec's gate."""
    has = has_context.bool() if has_context is not None else torch.ones_like(rewards, dtype=torch.bool)
    return has & spec.gate(rewards)


def token_advantages(
    spec: MethodSpec,
    adv: Tensor,
    response_mask: Tensor,
    rewards: Optional[Tensor] = None,
    delta: Optional[Tensor] = None,
    has_context: Optional[Tensor] = None,
    lam: float = 0.0,
    eps_w: float = 0.2,
) -> tuple[Tensor, Tensor]:
    """Per-token advantages for ``spec`` (Eq. 7 / Table 4) and the weights actually applied.

    adv (N,), response_mask (N,T), rewards (N,) in {0,1}, delta (N,T) = sg(log P_T - log P_S),
    has_context (N,) bool. Returns (token_adv (N,T), weight (N,T)) where weight is the clipped-and-mixed
    multiplier ``token_adv / A`` (1 where unweighted), zeroed outside the response mask. The weight applies to the
    rows that have a context and pass the spec's gate.
    """
    mask = response_mask.to(adv.dtype)
    if spec.weight_fn is None or delta is None:
        tok = adv[:, None] * mask
        return tok, mask.clone()
    if rewards is None:
        raise ValueError(f"method {spec.name!r}: the gate needs the rewards")
    apply = gated_rows(spec, rewards, has_context)
    w = spec.weight_fn(delta, adv)
    tok = reweight_advantages(adv, w, lam, eps_w, apply) * mask
    eff = torch.where(apply[:, None], mixed_weight(w, lam, eps_w), torch.ones_like(w)) * mask
    return tok, eff


def shape_advantages(
    spec: MethodSpec,
    settings: MethodSettings,
    rewards: Tensor,
    texts: Sequence[Sequence[str]],
    references: Sequence[str],
    old_logp: Tensor,
    old_entropy: Optional[Tensor],
    response_mask: Tensor,
    step: int,
    score_teacher: Optional[ScoreTeacher] = None,
) -> Shaped:
    """Rewards of G groups of n rollouts -> token advantages and the objective's plan.

    Args:
        spec, settings: the method and its settings (``spec.make_settings``).
        rewards: (G, n) verifiable scores in {0, 1}.
        texts: (G, n) the rollouts' texts; references: (G,) reference solutions (RLSD's context).
        old_logp: (B, R) log π_old(y_t); old_entropy: (B, R) the rollout policy's entropy (GRPO+EB), or None.
        response_mask: (B, R).
        step: 0-based step (λ and bonus schedules).
        score_teacher: the backend's teacher-view scorer; required when ``spec.teacher != "none"``.
    """
    G, n = rewards.shape
    flat = rewards.reshape(-1)
    shaped = flat
    if spec.reward_bonus is not None:  # DIVER: the bonus joins the score *before* the group normalisation
        bonus = np.concatenate([spec.reward_bonus(texts[g], rewards[g].tolist(), step, settings) for g in range(G)])
        shaped = flat + torch.tensor(bonus, dtype=torch.float32)
    adv = group_advantages(shaped.view(G, n), bool(settings.norm_adv_by_std)).reshape(-1)  # (B,)

    objective = objective_name(spec, settings)
    obj = get_objective(objective)
    lam = (linear_decay(step, float(settings.lambda_init), settings.lambda_decay_steps)
           if spec.weight_fn is not None else 0.0)
    delta = has_ctx = t_ent = None
    if spec.teacher != "none":
        if score_teacher is None:
            raise ValueError(f"method {spec.name!r} needs a teacher view: pass score_teacher")
        kind = settings.context
        contexts = build_contexts(kind, rewards.tolist(), texts, list(references))
        scores = score_teacher(contexts, kind, spec.weight_fn is not None, obj.uses_teacher_entropy)
        has_ctx, t_ent = scores.has_context, scores.entropy
        if spec.weight_fn is not None:
            delta = log_ratio(scores.logp, old_logp)
    eps_w = float(settings.eps_w) if spec.weight_fn is not None else 0.0
    tok_adv, weight = token_advantages(spec, adv, response_mask, flat, delta, has_ctx, lam, eps_w)
    if spec.advantage_bonus is not None and settings.variant == "advantage":
        if old_entropy is None:
            raise ValueError(f"method {spec.name!r} shapes the advantage with the entropy: pass old_entropy")
        tok_adv = spec.advantage_bonus(tok_adv, old_entropy, response_mask, float(settings.alpha),
                                       float(settings.kappa))
    plan = obj.plan(flat, has_ctx, response_mask, t_ent, settings)
    weighted = None
    if delta is not None:
        weighted = gated_rows(spec, flat, has_ctx) & (adv != 0)
        delta = delta * (weighted[:, None] & response_mask.bool())
    return Shaped(shaped, adv, tok_adv, weight, lam, has_ctx, plan, objective, delta, weighted)
