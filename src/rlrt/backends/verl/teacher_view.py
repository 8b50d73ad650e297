"""The teacher view on verl: prompt-with-context ⊕ the student's very response ids, scored by the actor under θ_old.

``rlrt.teacher`` decides which context a rollout gets and how it enters the user turn; this module only builds the
tensors verl's ``actor_rollout_wg.compute_log_prob`` takes and slices the answer back:

* teacher prompt ids = the tokenizer's chat template applied to ``teacher_user_message(user_msg, c, kind)`` with
  the generation prompt and the backbone's ``chat_template_kwargs`` (the student's rollout prompts' own:
  ``data.apply_chat_template_kwargs``), tokenised without special tokens -- the recipe of the local engine's
  ``rlrt.backends.local.rl.teacher_inputs`` (``tests/test_verl_backend.py`` checks the ids are identical);
* capped at ``max_reprompt_length`` tokens by dropping the *middle* (keeps the question's start and the end of the
  turn with the generation prompt; counted and logged, never silent);
* left-padded, then the SAME ``responses`` ids (never re-tokenised), the student's response attention mask,
  ``response_mask``, and position ids recomputed from the new attention mask (verl's
  ``compute_position_id_with_mask``).

Only the rows whose teacher log-prob can change an advantage are scored (:func:`rows_needing_teacher`); the others
get the student's own log-prob (delta = 0, weight 1), which leaves their token advantage exactly as if scored:
the weight is applied only where the gate passes and A != 0. What has NEVER run: the actual
``compute_log_prob`` call on Ray workers (no GPU here); the tests drive :class:`VerlTeacher` with a stand-in.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from rlrt.methods.shaping import TeacherScores, rows_needing_teacher  # noqa: F401 - re-exported for the trainer
from rlrt.tasks.prompts import chat_prompt
from rlrt.teacher import teacher_user_message

log = logging.getLogger("rlrt.verl.teacher")

# compute(teacher DataProto of b rows) -> (log P_T(y_t) (b, R), entropy (b, R)), responses' part only
ComputeLogProb = Callable[[object], tuple[Tensor, Tensor]]


def teacher_prompt_ids(tokenizer, user_msg: str, context: Optional[str], kind: str,
                       template_kwargs: Optional[dict] = None) -> list[int]:
    """Token ids of the teacher's generation prompt (the local engine's recipe: render, then tokenise)."""
    text = chat_prompt(tokenizer, teacher_user_message(user_msg, context, kind), template_kwargs)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def cap_middle(ids: list[int], max_len: int) -> tuple[list[int], bool]:
    """Keep the first ``max_len // 2`` and last ``max_len - max_len // 2`` ids when longer; (ids, truncated)."""
    if max_len <= 0 or len(ids) <= max_len:
        return ids, False
    head = max_len // 2
    return ids[:head] + ids[len(ids) - (max_len - head):], True


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """(b, L) left-padded ids and mask."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s):] = torch.tensor(list(s), dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids, mask


def build_teacher_batch(prompts: Sequence[Sequence[int]], responses: Tensor, response_attention: Tensor,
                        response_mask: Tensor, pad_id: int, meta_info: Optional[dict] = None):
    """A ``DataProto`` for ``compute_log_prob``: b teacher prompts (lists of ids) ⊕ responses (b, R).

    Fields: ``prompts`` (b, P'), ``responses`` (b, R), ``response_mask`` (b, R), ``input_ids`` (b, P' + R),
    ``attention_mask`` (prompt mask ⊕ the student's response attention), ``position_ids`` (cumsum - 1, >= 0);
    meta_info = ``meta_info`` (the rollout ``temperature``) + this batch's ``global_token_num``.
    """
    from verl import DataProto
    from verl.utils.model import compute_position_id_with_mask

    p_ids, p_mask = left_pad(prompts, pad_id)
    attention = torch.cat([p_mask, response_attention.to(p_mask.dtype)], dim=1)
    tensors = {
        "prompts": p_ids,
        "responses": responses.long(),
        "response_mask": response_mask,
        "input_ids": torch.cat([p_ids, responses.long()], dim=1),
        "attention_mask": attention,
        "position_ids": compute_position_id_with_mask(attention),
    }
    # as ``fit`` sets them on the student batch (the workers' MFU counter reads them): this batch's own lengths
    meta = {**dict(meta_info or {}), "global_token_num": attention.sum(-1).tolist(), "images_seqlens": []}
    return DataProto.from_dict(tensors=tensors, meta_info=meta)


class VerlTeacher:
    """``shape_advantages``'s ``score_teacher`` for one grouped verl batch.

    grouped: ``rlrt.backends.verl.batch.Grouped``; response_attention: (B, R) the student's response attention mask
    in grouped order; compute: scores a teacher ``DataProto`` (the trainer passes the actor's ``compute_log_prob``
    under θ_old, padded to its data-parallel size). ``needed(has_context, want_entropy) -> (B,) bool`` narrows the
    rows scored (default: all rows with a context). ``chat_template_kwargs``: the backbone's (the trainer passes
    ``data.apply_chat_template_kwargs``, which the rollout prompts were rendered with).
    """

    def __init__(self, grouped, tokenizer, response_attention: Tensor, compute: ComputeLogProb, max_prompt_len: int,
                 needed: Optional[Callable[[Tensor, bool], Tensor]] = None, meta_info: Optional[dict] = None,
                 chat_template_kwargs: Optional[dict] = None):
        self.g, self.tok, self.att, self.compute = grouped, tokenizer, response_attention, compute
        self.template_kwargs = dict(chat_template_kwargs or {})
        self.max_len, self.needed, self.meta = int(max_prompt_len), needed, meta_info
        self.n_scored = self.n_truncated = 0
        self.contexts: Optional[list[list[Optional[str]]]] = None  # the step's contexts, set by score()
        self.kind = ""

    def inputs(self, contexts: list[list[Optional[str]]], kind: str, rows: Sequence[int]) -> list[list[int]]:
        """Teacher prompt ids of grouped rows ``rows`` (capped), counting truncations."""
        n, out = self.g.n, []
        for r in rows:
            ids, cut = cap_middle(teacher_prompt_ids(self.tok, self.g.user_msgs[r // n], contexts[r // n][r % n],
                                                     kind, self.template_kwargs), self.max_len)
            self.n_truncated += int(cut)
            out.append(ids)
        return out

    def score(self, contexts: list[list[Optional[str]]], kind: str, want_logp: bool,
              want_entropy: bool) -> TeacherScores:
        self.contexts, self.kind = contexts, kind
        has = torch.tensor([c is not None for group in contexts for c in group], dtype=torch.bool)
        logp = self.g.old_logp.clone() if want_logp else None  # unscored rows: delta = 0
        ent = torch.zeros_like(self.g.old_logp) if want_entropy else None
        if not (want_logp or want_entropy):
            return TeacherScores(has, None, None)
        need = self.needed(has, want_entropy) if self.needed is not None else has
        rows = torch.nonzero(need, as_tuple=False).flatten().tolist()
        if rows:
            before = self.n_truncated
            prompts = self.inputs(contexts, kind, rows)
            if self.n_truncated > before:
                log.warning("teacher view: %d of %d prompts cut to %d tokens (max_reprompt_length)",
                            self.n_truncated - before, len(rows), self.max_len)
            idx = torch.tensor(rows, dtype=torch.long)
            tdp = build_teacher_batch(prompts, self.g.response_ids[idx], self.att[idx], self.g.response_mask[idx],
                                      self.tok.pad_token_id, self.meta)
            t_logp, t_ent = self.compute(tdp)
            if logp is not None:
                logp[idx] = t_logp.to(logp.dtype)
            if ent is not None:
                ent[idx] = t_ent.to(ent.dtype)
            self.n_scored += len(rows)
        return TeacherScores(has, logp, ent)

    __call__ = score  # the object itself is ``shape_advantages``'s ``score_teacher``

    def views(self) -> dict[str, Tensor]:
        """Every grouped row's teacher view for the worker-side distillation loss (SDPO / SRPO): its context's
        prompt (the bare student prompt for a row without one, which does not distil), capped as in
        :meth:`score`, ⊕ its response ids. ``input_ids``, ``attention_mask``, ``position_ids`` (B, P' + R)."""
        if self.contexts is None:
            raise RuntimeError("teacher view: score() has not run for this batch (no contexts)")
        n = self.g.n
        prompts = [cap_middle(teacher_prompt_ids(self.tok, self.g.user_msgs[r // n], self.contexts[r // n][r % n],
                                                 self.kind, self.template_kwargs), self.max_len)[0]
                   for r in range(self.g.response_ids.shape[0])]
        tdp = build_teacher_batch(prompts, self.g.response_ids, self.att, self.g.response_mask,
                                  self.tok.pad_token_id, self.meta)
        return {k: tdp.batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
