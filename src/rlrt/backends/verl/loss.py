"""SDPO / SRPO on verl: the tensor part of the worker-side loss, and the verl loss-mode names it will answer to.

SDPO's top-K JSD (``rlrt.methods.distill``) needs, in every micro-batch, the *current* student's logits (its top-K
indices) and the teacher view's logits at the same positions. verl 0.9.1's ``register_policy_loss`` functions
only receive sampled-token log-probs (``old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config,
rollout_is_weights``), so the objective cannot be a policy-loss function; it needs a whole-batch loss
(``ActorRolloutRefWorker.set_loss_fn``) that runs the teacher-view forward (prompt-with-context ⊕ response) next
to the student forward. Done here: :func:`micro_batch_loss`, the pure function such a worker loss calls -- the
registered objective's ``terms`` (``rlrt.methods.objectives``) and ``losses.agg_loss`` over the plan's loss mask,
exactly the local engine's micro-batch (``rlrt.backends.local.ppo.ppo_update``, without its accumulation scale).

NOT done (needs a GPU to develop and test): the worker wiring -- carrying the teacher-view ids and the plan
(``distill_rows``, ``distill_weight``, ``loss_mask``) through verl's no-padding tensordict to the actor, the
second forward inside the micro-batch, and the frozen teacher (verl's ref worker, ``use_kl_loss`` with a zero
coefficient). Until then :data:`LOSS_MODES`'s names are registered (``rlrt.backends.verl.plugin``) with
:func:`not_wired`, which raises on first use with this explanation, and ``rlrt.backends.verl.trainer`` refuses
SDPO / SRPO at start.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional

from torch import Tensor

from rlrt.backends.verl.overrides import LOSS_MODES as VERL_LOSS_MODES
from rlrt.methods.losses import agg_loss
from rlrt.methods.objectives import MicroBatch, Plan, Terms, get_objective

LOSS_MODES = {obj: mode for obj, mode in VERL_LOSS_MODES.items() if mode.startswith("rlrt_")}
"""The objectives whose verl ``policy_loss.loss_mode`` is ours (not verl's ``vanilla``): SDPO and SRPO."""


def plan_rows(plan: Plan, rows: slice | Tensor) -> Plan:
    """The step's plan restricted to a micro-batch's rows."""
    return replace(plan, pg_rows=plan.pg_rows[rows], distill_rows=plan.distill_rows[rows],
                   distill_weight=plan.distill_weight[rows], loss_mask=plan.loss_mask[rows])


def micro_batch_loss(objective: str, settings: object, *, logits: Tensor, logp: Tensor, old_logp: Tensor,
                     token_adv: Tensor, response_mask: Tensor, plan: Plan,
                     teacher_logits: Optional[Callable[[], Tensor]], temperature: float, clip_low: float,
                     clip_high: float, clip_ratio_c: Optional[float], loss_agg: str) -> tuple[Tensor, Terms]:
    """One micro-batch's scalar loss for a registered objective (b rows, R tokens, V vocabulary).

    logits (b, R, V) current policy with gradient; logp (b, R) its sampled-token log-probs at ``temperature``;
    old_logp, token_adv, response_mask (b, R); ``plan`` already restricted to these rows (:func:`plan_rows`);
    ``teacher_logits() -> (b, R, V)`` the teacher view's logits (distilling objectives). Returns
    (``agg_loss(terms.token_loss, plan.loss_mask, loss_agg)``, the objective's ``Terms``).
    """
    mb = MicroBatch(logits, logp, old_logp, token_adv, response_mask, plan, teacher_logits, temperature, clip_low,
                    clip_high, clip_ratio_c)
    terms = get_objective(objective).terms(mb, settings)
    return agg_loss(terms.token_loss, plan.loss_mask, loss_agg), terms


def not_wired(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None,
              rollout_is_weights=None):
    """verl policy-loss stand-in for SDPO / SRPO: raises (see the module docstring)."""
    raise NotImplementedError("rlrt: SDPO/SRPO's top-K JSD is not wired into verl's actor (it needs the teacher's "
                              "logits per micro-batch, not a policy-loss function); use backend: local")
