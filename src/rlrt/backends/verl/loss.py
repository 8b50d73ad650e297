"""SDPO / SRPO on verl: the worker-side loss, and the verl loss-mode names it answers to.

SDPO's top-K JSD (``rlrt.methods.distill``) needs, in every micro-batch, the *current* student's logits (its top-K
indices) and the teacher view's logits at the same positions. verl 0.9.1's ``register_policy_loss`` functions
only receive sampled-token log-probs, so the objective cannot be a policy-loss function. What verl does offer:
its engine workers call the actor's loss function (``ActorRolloutRefWorker.set_loss_fn``) twice per micro-batch
when the micro-batch's ``distillation_use_topk`` flag is set -- first as a *logits processor*
(``loss_fn(student_logits=(1, nnz, V), data=micro_batch)``, the packed sequences' logits divided by the rollout
temperature, with gradient; it returns per-token tensors that become ``model_output`` entries), then as the loss
(``loss_fn(model_output=, data=, dp_group=)`` -> (scalar, metrics)). :class:`WorkerLoss` is that function:

1. processor: the response logits (verl's own ``no_padding_2_padding``), the teacher view's log-probs at the
   student's top-K ids from a frozen copy of the initial policy (SDPO's teacher at EMA rate 0; loaded once per
   worker, or given) run on the teacher-view ids the trainer put in the batch -- one row at a time, its LM head
   over :data:`TEACHER_CHUNK` positions at a time (``rlrt.methods.distill.logprobs_at``), so the teacher's
   (b, P' + R, V) logits never exist -- and the registered objective's ``terms`` -- the very function the local
   engine's micro-batch calls (:func:`micro_batch_loss`) -- give the per-token loss (b, R), scattered back to the
   packed positions;
2. loss: that per-token loss aggregated with verl's own ``agg_loss`` over the plan's loss mask and verl's global
   batch normalisation (as verl's ``ppo_loss``); a mini-batch with no loss token gives 0, not 0/0.

Batch fields it reads besides verl's (``old_log_probs``, ``advantages``, ``response_mask``, ``prompts``,
``responses``): :data:`FIELDS` (the plan's rows and weights, the teacher-view ids).

The trainer side (``rlrt.backends.verl.trainer``): ``set_loss_fn`` with this class once the workers start, and per
step the fields, the plan's loss mask as ``response_mask`` and the logits-processor flag. The loss-mode names
(``rlrt_sdpo`` / ``rlrt_srpo``) are registered by the plugin with :func:`worker_loss_only`, which is never
called. Departures from the local engine, both documented: verl's rollout importance weights
(``rollout_is_weights``) do not enter SRPO's surrogate rows; SRPO's entropy weights come from the teacher view
scored under θ_old (the actor's ``compute_log_prob``), not under the frozen initial policy.

Nothing here has run on a GPU; ``tests/test_verl_backend.py`` drives :class:`WorkerLoss` through verl's own
no-padding layout on CPU and checks the loss and the gradients against the local engine's micro-batch.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from rlrt.backends.verl.memory import TEACHER_CHUNK  # positions per full-vocabulary chunk (it counts them)
from rlrt.backends.verl.overrides import LOSS_MODES as VERL_LOSS_MODES
from rlrt.methods.distill import logprobs_at, student_logprobs
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


def worker_loss_only(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None,
                     rollout_is_weights=None):
    """The policy-loss registry entry of SDPO / SRPO's loss-mode names: never called, since the trainer replaces
    the actor's whole loss with :class:`WorkerLoss`; raises if a run reaches verl's ``ppo_loss`` anyway."""
    raise NotImplementedError("rlrt: SDPO/SRPO train through WorkerLoss (set_loss_fn by rlrt.backends.verl.trainer); "
                              "verl's policy-loss path was reached instead: run through rlrt.backends.verl.train")


FIELDS = {
    "pg_rows": "rlrt_pg_rows",                   # (B,) the plan's surrogate rows
    "distill_rows": "rlrt_distill_rows",         # (B,) the plan's distilling rows
    "distill_weight": "rlrt_distill_weight",     # (B, R) per-token weight of the distillation term
    "loss_mask": "rlrt_loss_mask",               # (B, R) tokens of the token-mean
    "teacher_input_ids": "rlrt_teacher_input_ids",            # (B, P' + R) teacher prompt (left-padded) + response
    "teacher_attention_mask": "rlrt_teacher_attention_mask",  # (B, P' + R)
    "teacher_position_ids": "rlrt_teacher_position_ids",      # (B, P' + R)
}
"""Update-batch keys :class:`WorkerLoss` reads (padded tensors, in the batch's row order)."""
def update_fields(plan: Plan, views: dict[str, Tensor]) -> dict[str, Tensor]:
    """:data:`FIELDS` from the step's plan and the teacher views (``VerlTeacher.views``), same row order."""
    return {FIELDS["pg_rows"]: plan.pg_rows.bool(), FIELDS["distill_rows"]: plan.distill_rows.bool(),
            FIELDS["distill_weight"]: plan.distill_weight.float(), FIELDS["loss_mask"]: plan.loss_mask.float(),
            **{FIELDS[f"teacher_{k}"]: v for k, v in views.items()}}


LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling")
"""Model-config attributes by which a causal LM transforms ``lm_head``'s output before returning logits; the chunked
teacher applies the head alone, so a model with one of them set (other than 1 / None) is refused."""


def teacher_parts(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(decoder, LM head) of a Hugging Face causal LM: ``model.base_model`` (returns the final-norm hidden states)
    and ``model.get_output_embeddings()``; their composition is the model's logits for the supported models
    (Qwen3 / Llama-style), refused when the config names a logit post-processing (:data:`LOGIT_POSTPROCESSING`)."""
    cfg = getattr(model, "config", None)
    for name in LOGIT_POSTPROCESSING:
        value = getattr(cfg, name, None)
        if value not in (None, 1, 1.0):
            raise ValueError(f"WorkerLoss: the teacher's config sets {name}={value!r}; the chunked teacher applies "
                             "the LM head alone and would not reproduce its logits")
    decoder, head = model.base_model, model.get_output_embeddings()
    if decoder is model or head is None:
        raise ValueError(f"WorkerLoss: {type(model).__name__} has no separate decoder and LM head")
    return decoder, head


TOKEN_LOSS = "rlrt_token_loss"
"""The ``model_output`` entry the processor call returns (per packed token)."""


def _padded(x: Tensor) -> Tensor:
    return x.to_padded_tensor(0.0) if x.is_nested else x


def _f32(x: Tensor) -> Tensor:
    """At least float32 (bf16 logits on a GPU are lifted; float64 stays)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def scatter_packed(token_values: Tensor, data) -> Tensor:
    """(b, R) response values -> (1, nnz) over the packed sequences, at the positions verl's
    ``no_padding_2_padding`` reads them from (the logit of position t predicts token t + 1); 0 elsewhere."""
    from verl.workers.utils.padding import no_padding_2_padding

    nnz = int(data["input_ids"].values().shape[0])
    index = torch.arange(nnz, device=token_values.device, dtype=torch.float32)
    where = no_padding_2_padding(index, data).long()  # (b, R) packed position of each response slot
    valid = torch.zeros_like(where, dtype=torch.bool)
    lens = _response_lengths(data)
    for i, n in enumerate(lens.tolist()):
        valid[i, :n] = True
    out = token_values.new_zeros(nnz)
    return out.index_put((where[valid],), token_values[valid]).unsqueeze(0)


def _response_lengths(data) -> Tensor:
    r = data["responses"]
    if r.is_nested:
        return r.offsets().diff()
    return data["attention_mask"][:, -r.shape[1]:].sum(-1)


DISTILL_METRIC = "actor/rlrt_distill"
"""verl metric of :class:`WorkerLoss`: the objective's mean distillation term per micro-batch (``Terms.distill``,
the local engine's ``distill_loss``)."""


class WorkerLoss:
    """The actor's loss function for a distilling objective on verl's engine workers (module docstring).

    ``config``: verl's ``ActorConfig`` (``loss_agg_mode``, ``clip_ratio_*``, ``global_batch_info``);
    ``objective``/``settings``: the registered objective (``sdpo`` | ``srpo``) and the method's settings;
    ``temperature``: the rollout temperature verl divided the logits by; ``teacher``: a frozen causal LM, or
    ``teacher_path`` to load one on first use (bf16 on a GPU, fp32 on CPU)."""

    def __init__(self, config: Any, objective: str, settings: object, temperature: float, *,
                 teacher: Optional[torch.nn.Module] = None, teacher_path: Optional[str] = None,
                 chunk: int = TEACHER_CHUNK):
        if teacher is None and not teacher_path:
            raise ValueError("WorkerLoss: give the frozen teacher or its path")
        if int(chunk) < 1:
            raise ValueError(f"WorkerLoss: chunk must be >= 1 position, got {chunk}")
        self.config, self.objective, self.settings = config, objective, settings
        self.temperature, self.chunk = float(temperature), int(chunk)
        self._teacher, self.teacher_path = teacher, teacher_path

    def teacher(self, device: torch.device) -> torch.nn.Module:
        if self._teacher is None:
            from transformers import AutoModelForCausalLM

            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
            self._teacher = AutoModelForCausalLM.from_pretrained(self.teacher_path, dtype=dtype)
            self._teacher = self._teacher.to(device).eval().requires_grad_(False)
        return self._teacher

    def __call__(self, model_output=None, data=None, dp_group=None, student_logits: Optional[Tensor] = None,
                 data_format: str = "thd"):
        if student_logits is not None:
            return {TOKEN_LOSS: scatter_packed(self.token_loss(student_logits, data), data)}
        return self.aggregate(model_output, data)

    def _teacher_logprobs(self, data, R: int) -> Callable[[Tensor], Tensor]:
        """``idx (b, R, K) -> (b, R, K)``: the teacher view's log-probs (at the rollout temperature, as verl divides
        the student's) at the student's top-K ids, without the (b, P' + R, V) logits. The frozen teacher's
        decoder runs one row at a time on that row's real tokens only (no padding, no attention mask: its working
        set is one teacher view, at most ``max_reprompt_length + max_response_length`` tokens, whatever the
        micro-batch's row count); its final hidden states at the response positions, (b, R, H) in the
        teacher's dtype, go through the LM head :attr:`chunk` positions at a time
        (``rlrt.methods.distill.logprobs_at``). Response padding slots get a zero hidden state (finite values,
        never in the loss mask)."""
        ids, att = data[FIELDS["teacher_input_ids"]], data[FIELDS["teacher_attention_mask"]]
        pos = data[FIELDS["teacher_position_ids"]]
        model = self.teacher(ids.device)
        decoder, head = teacher_parts(model)
        P = ids.shape[1] - R
        hidden = None
        with torch.no_grad():
            for i in range(ids.shape[0]):
                keep = att[i].bool()
                r = int(att[i, P:].sum())
                if r == 0:
                    continue
                h = decoder(input_ids=ids[i, keep][None], position_ids=pos[i, keep][None],
                            use_cache=False).last_hidden_state[0]  # (n_i, H)
                if hidden is None:
                    hidden = h.new_zeros(ids.shape[0], R, h.shape[-1])
                n = h.shape[0]
                hidden[i, :r] = h[n - r - 1: n - 1]  # position t - 1 predicts response token t
        if hidden is None:  # no response token in this micro-batch
            hidden = torch.zeros(ids.shape[0], R, head.in_features, device=ids.device,
                                 dtype=next(model.parameters()).dtype)
        return lambda idx: logprobs_at(hidden, head, idx, temperature=self.temperature, chunk=self.chunk)

    def token_loss(self, student_logits: Tensor, data) -> Tensor:
        """(1, nnz, V) packed student logits (already / temperature) -> (b, R) per-token loss of the objective.

        Full-vocabulary tensors it adds to verl's packed logits: their padded (b, R, V) view in the logits' dtype
        (and its gradient); the student's float32 log-softmax exists :data:`TEACHER_CHUNK` positions at a time
        (``rlrt.methods.distill.student_logprobs``), the teacher's likewise (:meth:`_teacher_logprobs`)."""
        from verl.workers.utils.padding import no_padding_2_padding

        nnz = int(data["input_ids"].values().shape[0])
        if student_logits.shape[1] != nnz:  # a sequence-parallel shard (or its padding): not this loss's layout
            raise ValueError(f"WorkerLoss: {student_logits.shape[1]} packed logits for {nnz} tokens; SDPO/SRPO on "
                             "verl need ulysses_sequence_parallel_size = 1")
        logits = no_padding_2_padding(student_logits.squeeze(0), data)  # (b, R, V)
        R = logits.shape[1]
        responses = _padded(data["responses"])[:, :R].long()
        # sampled-token log-probs and the top-K, chunked and checkpointed: no float32 (b, R, V) copy is kept
        logp, top_s, idx = student_logprobs(logits, responses, int(self.settings.topk), chunk=self.chunk)
        plan = Plan(data[FIELDS["pg_rows"]].bool(), data[FIELDS["distill_rows"]].bool(),
                    _f32(data[FIELDS["distill_weight"]]), data[FIELDS["loss_mask"]])
        c = self.config
        mb = MicroBatch(logits, logp, _f32(_padded(data["old_log_probs"])), _f32(_padded(data["advantages"])),
                        _padded(data["response_mask"]), plan, None, 1.0, float(c.clip_ratio_low),
                        float(c.clip_ratio_high), float(c.clip_ratio_c),
                        teacher_logprobs=lambda idx: self._teacher_logprobs(data, R)(idx), student_top=(top_s, idx))
        terms = get_objective(self.objective).terms(mb, self.settings)
        self._distill = terms.distill  # reported by the aggregate call that follows (the local engine's stat)
        return terms.token_loss

    def aggregate(self, model_output, data) -> tuple[Tensor, dict]:
        """verl's loss call: the per-token loss over the plan's loss mask with verl's ``agg_loss`` and its global
        batch normalisation (``dp_size``, ``batch_num_tokens``: the update batch's ``response_mask`` is the plan's
        loss mask, so verl counts the same tokens)."""
        from verl.trainer.ppo.core_algos import agg_loss as verl_agg_loss
        from verl.utils.metric import AggregationType, Metric
        from verl.workers.utils.padding import no_padding_2_padding

        tl = no_padding_2_padding(model_output[TOKEN_LOSS], data)
        mask = data[FIELDS["loss_mask"]].to(tl.dtype)
        info = {"dp_size": data["dp_size"], "batch_num_tokens": data["batch_num_tokens"],
                "global_batch_size": data["global_batch_size"], "loss_scale_factor": self.config.loss_scale_factor}
        if info["batch_num_tokens"] is not None and float(info["batch_num_tokens"]) == 0:
            loss = (tl * 0.0).sum()  # no loss token in this mini-batch: zero, on the graph
        else:
            loss = verl_agg_loss(loss_mat=tl, loss_mask=mask, loss_agg_mode=self.config.loss_agg_mode, **info)
        metrics = {"actor/pg_loss": Metric(value=loss.detach(), aggregation=AggregationType.SUM)}
        distill, self._distill = getattr(self, "_distill", None), None
        if distill is not None:  # the micro-batch's mean distillation term (history's distill_loss)
            metrics[DISTILL_METRIC] = Metric(value=float(distill), aggregation=AggregationType.MEAN)
        return loss, metrics
