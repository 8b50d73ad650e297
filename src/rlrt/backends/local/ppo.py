"""One PPO epoch over mini-batches of rollouts: the single update every local RL loop uses (policy RL and the RLT
teacher's RL). The per-token loss comes from a registered objective (``rlrt.methods.objectives``); this module
only slices, accumulates gradients and steps the optimizer.

Mini-batches are whole groups in sampling order; each is split into micro-batches whose gradients are weighted so
that their sum equals the whole mini-batch's aggregate (token-mean: by their share of loss tokens). A mini-batch
with no loss token (SDPO with no context anywhere in it) takes no optimizer step.

Rows that add nothing (``rows_with_loss``: a surrogate row whose advantages are all 0, e.g. every rollout of a
group that got the same reward, and that does not distil) are left out of the forward and backward passes under
the token-mean (the default) without a KL term: they still count in the denominator, so the gradient is the one
the whole mini-batch gives, up to rounding (the micro-batches hold other rows). A mini-batch whose rows all add
nothing still steps the optimizer, on zero gradients, as the full pass would. ``clip_frac`` and ``approx_kl`` are
then over the rows that were run.

Non-finite guard: a mini-batch whose advantages, logits, log-probs, loss or gradient norm hold a NaN or an inf
takes no optimizer step either (its gradients are dropped, the weights stay as they were); it is logged and
listed in the returned ``nonfinite`` stats, which the step's metrics count as ``nonfinite_skips``. When every
value is finite the update is exactly the unguarded one (the checks only read).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch
from torch import Tensor

from rlrt.backends.local.rollout import shared_prefix_logits
from rlrt.methods.losses import agg_loss, all_finite, kl_penalty_low_var, token_logprobs
from rlrt.methods.objectives import MicroBatch, Objective, Plan, rows_with_loss

log = logging.getLogger("rlrt.ppo")


@dataclass(frozen=True)
class PPOConfig:
    """The update's knobs (the ``rl`` block's, or ``rlt.teacher_rl``'s)."""

    rows_per_minibatch: int  # questions per mini-batch x rollouts per question
    micro_batch: int
    temperature: float
    clip_low: float = 0.2
    clip_high: float = 0.28
    clip_ratio_c: Optional[float] = 3.0
    loss_agg: str = "token-mean"
    grad_clip: float = 1.0
    kl_coef: float = 0.0  # β of a KL(π_θ ‖ π_ref) term (k3 estimator); needs ``ref_logp``


@dataclass(frozen=True)
class UpdateBatch:
    """B rows: left-padded prompts (B, P), right-padded responses (B, R), and what the objective needs."""

    prompt_ids: Tensor
    prompt_mask: Tensor
    response_ids: Tensor
    response_mask: Tensor
    old_logp: Tensor  # (B, R)
    token_adv: Tensor  # (B, R)
    plan: Plan
    ref_logp: Optional[Tensor] = None  # (B, R) reference policy (kl_coef > 0)


def _rows(plan: Plan, sl: slice | Tensor) -> Plan:
    return replace(plan, pg_rows=plan.pg_rows[sl], distill_rows=plan.distill_rows[sl],
                   distill_weight=plan.distill_weight[sl], loss_mask=plan.loss_mask[sl])


def ppo_update(model, optimizer, batch: UpdateBatch, objective: Objective, settings: object, cfg: PPOConfig,
               teacher_logits: Optional[Callable[[Tensor], Tensor]] = None) -> dict[str, list]:
    """One epoch over ``batch``; returns per-mini-batch ``loss``/``grad_norm`` and per-micro-batch ``clip_frac``,
    ``approx_kl``, ``distill``, ``kl`` lists (empty where undefined) of the mini-batches that stepped, and
    ``nonfinite``: one entry per mini-batch skipped on a non-finite value, naming it ("advantages",
    "logits/log-probs", "loss" or "gradients").

    ``teacher_logits(rows)`` gives the teacher view's logits (b, R, V) for the row indices ``rows`` (b,)
    (logit-level objectives).
    """
    if cfg.kl_coef and batch.ref_logp is None:
        raise ValueError("kl_coef > 0 needs ref_logp")
    model.train()
    B = batch.response_ids.shape[0]
    loss_mask = batch.plan.loss_mask
    stats: dict[str, list] = {"loss": [], "clip_frac": [], "approx_kl": [], "grad_norm": [], "distill": [],
                              "kl": [], "nonfinite": []}
    # the rows worth a forward pass (module docstring); every row when a term spans them all
    if cfg.loss_agg == "token-mean" and not cfg.kl_coef:
        active = rows_with_loss(objective, batch.plan, batch.token_adv)
    else:
        active = torch.ones(B, dtype=torch.bool)
    for s in range(0, B, cfg.rows_per_minibatch):
        mb_end = min(s + cfg.rows_per_minibatch, B)
        n_tok = loss_mask[s:mb_end].sum()
        if n_tok == 0:
            continue  # nothing to learn from in this mini-batch (e.g. SDPO rows without a context): no step
        optimizer.zero_grad(set_to_none=True)
        mb_loss = 0.0
        mb_stats: dict[str, list[float]] = {"clip_frac": [], "approx_kl": [], "distill": [], "kl": []}
        bad = None if all_finite(batch.token_adv[s:mb_end]) else "advantages"
        rows = torch.arange(s, mb_end)[active[s:mb_end]]
        for m0 in range(0, len(rows), cfg.micro_batch):
            if bad:
                break
            sl = rows[m0:m0 + cfg.micro_batch]
            logits = shared_prefix_logits(model, batch.prompt_ids[sl], batch.prompt_mask[sl], batch.response_ids[sl],
                                          batch.response_mask[sl])
            logp = token_logprobs(logits, batch.response_ids[sl], cfg.temperature)
            if not all_finite(logits, logp):
                bad = "logits/log-probs"
                break
            mb = MicroBatch(logits, logp, batch.old_logp[sl], batch.token_adv[sl], batch.response_mask[sl],
                            _rows(batch.plan, sl), (lambda sl=sl: teacher_logits(sl)) if teacher_logits else None,
                            cfg.temperature, cfg.clip_low, cfg.clip_high, cfg.clip_ratio_c)
            terms = objective.terms(mb, settings)
            tok_loss = terms.token_loss
            if cfg.kl_coef:
                kl = kl_penalty_low_var(logp, batch.ref_logp[sl])
                tok_loss = tok_loss + cfg.kl_coef * kl
                mb_stats["kl"].append(float((kl.detach() * mb.mask).sum() / mb.mask.sum().clamp(min=1)))
            loss = agg_loss(tok_loss, loss_mask[sl], cfg.loss_agg)
            if not all_finite(loss):
                bad = "loss"
                break
            if cfg.loss_agg == "token-mean":
                scale = float(loss_mask[sl].sum() / n_tok.clamp(min=1))
            else:
                scale = len(sl) / (mb_end - s)
            (loss * scale).backward()
            mb_loss += float(loss.detach() * scale)
            for key in ("clip_frac", "approx_kl", "distill"):
                value = getattr(terms, key)
                if value is not None:
                    mb_stats[key].append(value)
        if not bad:
            if not len(rows):  # no row adds anything: the step a zero loss's backward would give
                for p in model.parameters():
                    if p.requires_grad:
                        p.grad = torch.zeros_like(p)
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            bad = None if all_finite(gn) else "gradients"
        if bad:
            optimizer.zero_grad(set_to_none=True)
            log.warning("non-finite %s in the mini-batch of rows %d:%d: its optimizer step is skipped, the weights "
                        "are unchanged by it", bad, s, mb_end)
            stats["nonfinite"].append(bad)
            continue
        optimizer.step()
        stats["loss"].append(mb_loss)
        stats["grad_norm"].append(float(gn))
        for key, values in mb_stats.items():
            stats[key].extend(values)
    return stats


def mean(values: list[float], default: float = 0.0) -> float:
    return sum(values) / len(values) if values else default
