"""verl's ``DataProto`` batch <-> ``rlrt.methods.shaping.shape_advantages``'s grouped arguments (pure conversion).

verl keeps one row per rollout in whatever order its trainer left them (``_balance_batch`` reorders rows across
data-parallel ranks), with the prompt group in ``non_tensor_batch["uid"]``. ``shape_advantages`` wants G groups
of n rollouts, row ``g * n + i`` being rollout i of group g. :func:`group_rows` fixes that order
deterministically -- groups in order of their first row in the batch, rollouts in batch order inside a group --
and :func:`shape_batch` runs the method step in that order and scatters the token advantages back to verl's rows,
so nothing downstream (mini-batching, the actor, metrics) sees a reordering.

Fields read (the legacy ``RayPPOTrainer`` batch after old log-probs, verl 0.9.1):

* ``batch["responses"]`` (B, R) right-padded ids, ``batch["response_mask"]`` (B, R);
* ``batch["token_level_rewards"]`` (B, R) (else ``token_level_scores``): the score sits on the last valid token,
  so the row's reward is the row sum (what verl's GRPO estimator takes);
* ``batch["old_log_probs"]`` (B, R), log π_old(y_t) at the rollout temperature;
* ``non_tensor_batch["uid"]`` (group id), ``["raw_prompt"]`` (the chat messages the student saw; else
  ``extra_info["user_message"]``), ``["extra_info"]["solution"]`` / ``["id"]`` and
  ``["reward_model"]["ground_truth"]`` (RLSD's reference / answer context, :func:`rlrt.teacher.problem_contexts`).

Rule for unequal groups: every uid must have the same number of rows; otherwise :func:`group_rows` raises (verl's
rollout gives exactly ``rollout.n`` rows per prompt; a filtered or padded batch must be regrouped by the caller,
never silently reshaped). Rows must carry real rewards in {0, 1} (the gates test r > 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from rlrt.methods.registry import MethodSpec
from rlrt.methods.settings import MethodSettings
from rlrt.methods.shaping import ScoreTeacher, Shaped, shape_advantages
from rlrt.teacher import problem_contexts


@dataclass(frozen=True)
class Grouped:
    """The batch in grouped order (B = G * n rows, R response tokens).

    order:          (B,) long, ``order[g * n + i]`` = the verl row holding rollout i of group g.
    uids:           (G,) the group ids, in group order.
    rewards:        (G, n) float scores.
    texts:          (G, n) decoded responses (valid tokens, special tokens skipped, as the local sampler).
    user_msgs:      (G,) the student's user turn.
    references:     (G,) reference solutions ("" when the data has none).
    response_ids:   (B, R), response_mask: (B, R), old_logp: (B, R), old_entropy: (B, R) or None -- all grouped.
    problems:       (G,) ``{id, solution, answer}`` of each group's problem (the per-problem teacher contexts).
    """

    order: Tensor
    uids: list
    rewards: Tensor
    texts: list[list[str]]
    user_msgs: list[str]
    references: list[str]
    response_ids: Tensor
    response_mask: Tensor
    old_logp: Tensor
    old_entropy: Optional[Tensor]
    problems: list[dict] = field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.rewards.shape[1])

    @property
    def G(self) -> int:
        return int(self.rewards.shape[0])


def group_order(uids: Sequence[Any]) -> tuple[Tensor, list, int]:
    """(order (B,), group ids (G,), n) for the uid of every row; raises on groups of unequal size."""
    groups: dict[Any, list[int]] = {}
    for row, uid in enumerate(uids):
        groups.setdefault(uid, []).append(row)
    sizes = {len(rows) for rows in groups.values()}
    if len(sizes) != 1:
        counts = {str(u): len(r) for u, r in list(groups.items())[:8]}
        raise ValueError(f"verl batch: groups of unequal size {sorted(sizes)} (first uids: {counts}); "
                         "shape_advantages needs exactly n rollouts per prompt")
    order = [row for rows in groups.values() for row in rows]
    return torch.tensor(order, dtype=torch.long), list(groups), sizes.pop()


def user_message_of(non_tensor: dict, row: int) -> str:
    """The student's user turn of ``row``: the last user message of ``raw_prompt`` (what the agent loop rendered),
    else ``extra_info["user_message"]`` (written by ``rlrt.backends.verl.train.verl_rows``)."""
    raw = non_tensor.get("raw_prompt")
    if raw is not None:
        msgs = list(raw[row])
        users = [m["content"] for m in msgs if m["role"] == "user"]
        if users:
            return str(users[-1])
    extra = non_tensor.get("extra_info")
    if extra is not None and isinstance(extra[row], dict) and "user_message" in extra[row]:
        return str(extra[row]["user_message"])
    raise KeyError(f"verl batch row {row}: neither raw_prompt nor extra_info.user_message holds the user turn")


def reference_of(non_tensor: dict, row: int) -> str:
    extra = non_tensor.get("extra_info")
    if extra is None or not isinstance(extra[row], dict):
        return ""
    return str(extra[row].get("solution") or "")


def problem_of(non_tensor: dict, row: int) -> dict[str, str]:
    """``{id, solution, answer}`` of ``row``'s problem: ``extra_info`` id / solution (``rlrt.backends.verl.train``
    writes them) and ``reward_model.ground_truth`` (the gold answer verl's reward reads)."""
    extra = non_tensor.get("extra_info")
    info = extra[row] if extra is not None and isinstance(extra[row], dict) else {}
    rm = non_tensor.get("reward_model")
    truth = rm[row].get("ground_truth") if rm is not None and isinstance(rm[row], dict) else None
    return {"id": str(info.get("id", info.get("index", row))), "solution": reference_of(non_tensor, row),
            "answer": "" if truth is None else str(truth)}


def row_rewards(batch) -> Tensor:
    """(B,) scalar score per row: the row sum of ``token_level_rewards`` (else ``token_level_scores``)."""
    td = batch.batch
    key = "token_level_rewards" if "token_level_rewards" in td.keys() else "token_level_scores"
    return td[key].sum(dim=-1).float()


def decode_responses(tokenizer, response_ids: Tensor, response_mask: Tensor) -> list[str]:
    """Valid response ids decoded with special tokens skipped (the local sampler's ``batch_decode``)."""
    return [tokenizer.decode(ids[m.bool()].tolist(), skip_special_tokens=True)
            for ids, m in zip(response_ids, response_mask)]


def group_rows(batch, tokenizer, old_entropy: Optional[Tensor] = None) -> Grouped:
    """A verl ``DataProto`` -> :class:`Grouped`. ``old_entropy`` (B, R) in verl's row order (the legacy trainer
    pops ``entropys`` before the advantage step; the trainer keeps its own copy)."""
    nt = batch.non_tensor_batch
    if "uid" not in nt:
        raise KeyError("verl batch has no non_tensor_batch['uid'] (the prompt group id)")
    order, uids, n = group_order(list(nt["uid"]))
    G = len(uids)
    td = batch.batch
    resp = td["responses"][order]
    mask = td["response_mask"][order]
    rewards = row_rewards(batch)[order].view(G, n)
    flat_texts = decode_responses(tokenizer, resp, mask)
    first = order.view(G, n)[:, 0].tolist()
    return Grouped(
        order=order, uids=uids, rewards=rewards,
        texts=[flat_texts[g * n:(g + 1) * n] for g in range(G)],
        user_msgs=[user_message_of(nt, r) for r in first],
        references=[reference_of(nt, r) for r in first],
        response_ids=resp, response_mask=mask, old_logp=td["old_log_probs"][order].float(),
        old_entropy=old_entropy[order].float() if old_entropy is not None else None,
        problems=[problem_of(nt, r) for r in first],
    )


def shape_grouped(spec: MethodSpec, settings: MethodSettings, grouped: Grouped, step: int,
                  score_teacher: Optional[ScoreTeacher] = None) -> Shaped:
    """``shape_advantages`` on the grouped batch (the local engine's call, argument for argument): each problem's
    context text from :func:`rlrt.teacher.problem_contexts` (an empty one raises naming the train split's row)."""
    kind = getattr(settings, "context", "none") if spec.teacher != "none" else "none"
    refs = problem_contexts(kind, grouped.problems, "train") if kind != "none" else grouped.references
    return shape_advantages(spec, settings, grouped.rewards, grouped.texts, refs, grouped.old_logp,
                            grouped.old_entropy, grouped.response_mask, step, score_teacher)


def scatter_advantages(batch, grouped: Grouped, token_adv: Tensor) -> None:
    """Write the grouped (B, R) token advantages back to verl's rows: ``advantages`` and ``returns`` (verl's GRPO
    sets returns = advantages), zero outside the response mask, in the dtype verl's estimator uses (float32)."""
    td = batch.batch
    out = torch.zeros_like(td["response_mask"], dtype=torch.float32)
    out[grouped.order] = (token_adv.float() * grouped.response_mask.float())
    td["advantages"] = out
    td["returns"] = out.clone()


def shape_batch(spec: MethodSpec, settings: MethodSettings, batch, tokenizer, step: int,
                make_score_teacher=None, old_entropy: Optional[Tensor] = None) -> tuple[Grouped, Shaped]:
    """The whole method step on a verl batch, in place: group, shape, scatter.

    ``make_score_teacher(grouped) -> ScoreTeacher`` builds the teacher-view scorer for this batch (None for
    methods without a teacher). Returns the grouped view and ``shape_advantages``'s output (grouped order).
    """
    grouped = group_rows(batch, tokenizer, old_entropy)
    scorer = make_score_teacher(grouped) if (make_score_teacher is not None and spec.teacher != "none") else None
    shaped = shape_grouped(spec, settings, grouped, step, scorer)
    scatter_advantages(batch, grouped, shaped.token_adv)
    return grouped, shaped


def ungroup(grouped: Grouped, x: Tensor) -> Tensor:
    """A grouped (B, ...) tensor back in verl's row order."""
    out = torch.empty_like(x)
    out[grouped.order] = x
    return out


def as_object_array(values: Sequence[Any]) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = list(values)
    return arr
