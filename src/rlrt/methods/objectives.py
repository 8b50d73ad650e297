"""Objectives as registered functions (like verl's ``register_policy_loss``): what each rollout token is trained on.

An objective has two pure parts, both backend-neutral:

* ``plan`` (once per step): which rows take the policy-gradient surrogate, which take logit-level distillation
  toward the teacher view, each distilled token's weight, and the token mask of the aggregate;
* ``terms`` (once per micro-batch): the per-token loss (N, T) from the current policy's logits / log-probs, θ_old's
  log-probs, the token advantages and (for distillation) the teacher view's logits.

The update loop (``rlrt.backends.local.ppo.ppo_update``, and the verl backend's actor) aggregates ``terms``'s
output with ``losses.agg_loss`` over ``plan.loss_mask``; it never asks which objective it runs.

Registered: ``pg`` (GRPO's clipped surrogate; every token-weight method), ``pg_entropy`` (the surrogate minus a
loss-level entropy bonus: GRPO+EB's ``loss`` variant), ``sdpo`` (top-K JSD on every rollout with a context),
``srpo`` (surrogate on r = 1 rows, entropy-weighted JSD on r = 0 rows with a context).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from rlrt.methods.distill import sdpo_token_loss, srpo_entropy_weights, srpo_route
from rlrt.methods.losses import entropy_from_logits, surrogate_tokens


@dataclass(frozen=True)
class Plan:
    """One step's routing (B rows of R response tokens).

    pg_rows:        (B,) bool, rows trained with the clipped surrogate on their token advantages.
    distill_rows:   (B,) bool, rows trained toward the teacher view's distribution.
    distill_weight: (B, R) float, per-token weight of the distillation term (1 = unweighted).
    loss_mask:      (B, R), the tokens of the aggregate (token-mean denominator); a mini-batch with none is skipped.
    """

    pg_rows: Tensor
    distill_rows: Tensor
    distill_weight: Tensor
    loss_mask: Tensor


@dataclass(frozen=True)
class MicroBatch:
    """What ``terms`` sees for b rows of one micro-batch (R response tokens, V vocabulary).

    logits:     (b, R, V) current policy, with gradient (not yet divided by the temperature).
    logp:       (b, R) log π_θ(y_t) at the rollout temperature, with gradient.
    old_logp:   (b, R) log π_old(y_t), no gradient.
    token_adv:  (b, R) token advantages.
    mask:       (b, R) response mask.
    plan:       the step's ``Plan`` sliced to these rows.
    teacher_logits: () -> (b, R, V) the teacher view's logits (called only for rows that distill).
    teacher_logprobs: instead of ``teacher_logits`` (which may then be None): idx (b, R, K) -> (b, R, K), the
                teacher view's log-probs at the student's top-K ids, at the temperature the student is compared at
                (the verl worker's chunked teacher: ``rlrt.methods.distill.logprobs_at``).
    student_top: (top_s, idx) (b, R, K) the student's top-K log-probs (with gradient) and ids at ``temperature``
                when the backend computed them already (``rlrt.methods.distill.student_logprobs``); else from logits.
    """

    logits: Tensor
    logp: Tensor
    old_logp: Tensor
    token_adv: Tensor
    mask: Tensor
    plan: Plan
    teacher_logits: Optional[Callable[[], Tensor]]
    temperature: float
    clip_low: float
    clip_high: float
    clip_ratio_c: Optional[float]
    teacher_logprobs: Optional[Callable[[Tensor], Tensor]] = None
    student_top: Optional[tuple[Tensor, Tensor]] = None


@dataclass(frozen=True)
class Terms:
    """Per-token loss (b, R) and the statistics the step reports (python floats; None = not defined here)."""

    token_loss: Tensor
    clip_frac: Optional[float] = None
    approx_kl: Optional[float] = None
    distill: Optional[float] = None


@dataclass(frozen=True)
class Objective:
    name: str
    plan: Callable[..., Plan]
    terms: Callable[[MicroBatch, object], Terms]
    description: str
    uses_teacher_logits: bool = False
    uses_teacher_entropy: bool = False
    gate: str = "-"
    direction: str = "-"
    # every row's loss vanishes when its token advantages are 0 and it does not distil (``rows_with_loss``);
    # False for an objective with a term on every token (e.g. a loss-level entropy bonus)
    sparse: bool = True


OBJECTIVES: dict[str, Objective] = {}


def register_objective(name: str, plan: Callable[..., Plan], terms: Callable[[MicroBatch, object], Terms],
                       description: str, *, uses_teacher_logits: bool = False, uses_teacher_entropy: bool = False,
                       gate: str = "-", direction: str = "-", sparse: bool = True) -> Objective:
    """Add an objective under ``name`` (refuses a duplicate); ``description``/``gate``/``direction`` are its
    Table 4 cells."""
    if name in OBJECTIVES:
        raise ValueError(f"objective {name!r} registered twice")
    OBJECTIVES[name] = Objective(name, plan, terms, description, uses_teacher_logits, uses_teacher_entropy, gate,
                                 direction, sparse)
    return OBJECTIVES[name]


def rows_with_loss(objective: Objective, plan: Plan, token_adv: Tensor) -> Tensor:
    """(B,) bool: the rows whose token loss can be non-zero, i.e. whose gradient can be.

    A surrogate row with every token advantage 0 (a group whose rollouts all got the same reward, under GRPO's
    group baseline) has pg_t = max(−0·ρ_t, −0·clip(ρ_t)) = 0 and a zero gradient whatever its ratio; a row that
    neither takes the surrogate with a non-zero advantage nor distils adds exactly nothing to the update. Such rows
    still count in the token-mean's denominator (``Plan.loss_mask``); the update may leave them out of its
    forward and backward passes. Every row, for an objective that is not ``sparse``.

    Args:
        plan: the step's routing (B rows).
        token_adv: (B, R) token advantages.
    """
    if not objective.sparse:
        return torch.ones(token_adv.shape[0], dtype=torch.bool)
    return (plan.pg_rows.bool() & (token_adv != 0).any(dim=-1)) | plan.distill_rows.bool()


def get_objective(name: str) -> Objective:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise KeyError(f"unknown objective {name!r}; registered: {sorted(OBJECTIVES)}") from None


def _masked_mean(x: Tensor, mask: Tensor) -> float:
    m = mask.to(x.dtype)
    return float((x * m).sum() / m.sum().clamp(min=1))


# ---- plans ------------------------------------------------------------------------------------------------------

def all_rows_plan(rewards: Tensor, has_context: Optional[Tensor], response_mask: Tensor,
                  teacher_entropy: Optional[Tensor], settings: object) -> Plan:
    """Every row takes the surrogate over every response token."""
    B = response_mask.shape[0]
    return Plan(torch.ones(B, dtype=torch.bool), torch.zeros(B, dtype=torch.bool),
                torch.ones_like(response_mask, dtype=torch.float32), response_mask)


def sdpo_plan(rewards: Tensor, has_context: Optional[Tensor], response_mask: Tensor,
              teacher_entropy: Optional[Tensor], settings: object) -> Plan:
    """SDPO: every rollout with a context distils; the token-mean runs over response_mask × context_mask."""
    B = response_mask.shape[0]
    rows = has_context.bool()
    return Plan(torch.zeros(B, dtype=torch.bool), rows, torch.ones_like(response_mask, dtype=torch.float32),
                response_mask * rows[:, None].to(response_mask.dtype))


def srpo_plan(rewards: Tensor, has_context: Optional[Tensor], response_mask: Tensor,
              teacher_entropy: Optional[Tensor], settings: object) -> Plan:
    """SRPO: route by r (``srpo_route``); routed tokens weighted by exp(−β H_T), mean 1; token-mean over every
    response token, so all-wrong groups contribute 0 to the numerator and still count in the denominator."""
    pg_rows, distill_rows = srpo_route(rewards, has_context)
    weight = srpo_entropy_weights(teacher_entropy, response_mask * distill_rows[:, None], float(settings.beta))
    return Plan(pg_rows, distill_rows, weight, response_mask)


# ---- per-token terms --------------------------------------------------------------------------------------------

def _surrogate(mb: MicroBatch) -> tuple[Tensor, float | None, float | None]:
    pg, clipped, log_r = surrogate_tokens(mb.logp, mb.old_logp, mb.token_adv, mb.clip_low, mb.clip_high,
                                          mb.clip_ratio_c)
    with torch.no_grad():
        pmask = mb.mask * mb.plan.pg_rows[:, None]
        if pmask.sum() > 0:
            return pg, _masked_mean(clipped.float(), pmask), _masked_mean(-log_r.detach(), pmask)
    return pg, None, None


def _distill(mb: MicroBatch, settings: object) -> tuple[Tensor, float]:
    teacher = mb.teacher_logits() if mb.teacher_logprobs is None else None
    jsd = sdpo_token_loss(mb.logits, teacher, mb.logp, mb.old_logp, topk=int(settings.topk),
                          tail=bool(settings.tail), alpha=float(settings.alpha), is_clip=float(settings.is_clip),
                          temperature=mb.temperature, teacher_logprobs=mb.teacher_logprobs,
                          student_top=mb.student_top)
    rows = mb.plan.distill_rows[:, None]
    return mb.plan.distill_weight * jsd * rows, _masked_mean(jsd.detach(), mb.mask * rows)


def pg_terms(mb: MicroBatch, settings: object) -> Terms:
    """pg_t = max(−A_t·ρ_t, −A_t·clip(ρ_t, 1−ε_low, 1+ε_high)), dual-clipped on A_t < 0 (``surrogate_tokens``)."""
    pg, clip_frac, approx_kl = _surrogate(mb)
    return Terms(pg * mb.plan.pg_rows[:, None], clip_frac, approx_kl)


def pg_entropy_terms(mb: MicroBatch, settings: object) -> Terms:
    """The surrogate minus ``entropy_coeff``·H_t of the current policy (with gradient): raises the entropy."""
    pg, clip_frac, approx_kl = _surrogate(mb)
    ent = entropy_from_logits(mb.logits / mb.temperature)
    return Terms(pg * mb.plan.pg_rows[:, None] - float(settings.entropy_coeff) * ent, clip_frac, approx_kl)


def sdpo_terms(mb: MicroBatch, settings: object) -> Terms:
    """SDPO: JSD_α(top-K S, top-K T)·clamp(ρ, max=is_clip) on distilled rows; no surrogate."""
    if not mb.plan.distill_rows.any():
        return Terms(mb.logp * 0.0)  # zero, but on the graph: the mini-batch's backward still runs
    loss, distill = _distill(mb, settings)
    return Terms(loss, distill=distill)


def srpo_terms(mb: MicroBatch, settings: object) -> Terms:
    """SRPO: the surrogate on r = 1 rows plus exp(−β H_T)-weighted SDPO terms on routed r = 0 rows."""
    pg, clip_frac, approx_kl = _surrogate(mb)
    loss = pg * mb.plan.pg_rows[:, None]
    distill = None
    if mb.plan.distill_rows.any():
        d, distill = _distill(mb, settings)
        loss = loss + d
    return Terms(loss, clip_frac, approx_kl, distill)


register_objective("pg", all_rows_plan, pg_terms, "clipped surrogate on token advantages")
register_objective("pg_entropy", all_rows_plan, pg_entropy_terms,
                   "clipped surrogate - entropy_coeff * H (loss-level entropy bonus)", sparse=False,
                   direction="uniform token-level entropy")
register_objective("sdpo", sdpo_plan, sdpo_terms, "logit-level JSD(P_S, P_T) over student top-K",
                   uses_teacher_logits=True, gate="all (with a context)", direction="P_S -> P_T")
register_objective("srpo", srpo_plan, srpo_terms, "surrogate if r=1; SDPO loss x exp(-beta H_T) if r=0",
                   uses_teacher_logits=True, uses_teacher_entropy=True, gate="route by r",
                   direction="P_S -> P_T on r=0")
