"""Checks on prepared problem sets: repeated ids, train/test overlap, prompts longer than the model's context.

What each case does, and why:

* a repeated ``id`` across the splits the pipeline generates (synthetic task): an error
  (:func:`check_unique_ids`) -- the generator guarantees unique ids, so a repeat is a bug, never data to skip.
  Within one real data set, repeated ids and questions are counted skips of ``benchmarks.normalise``.
* a training question that also appears in an evaluation split: in the synthetic task an error (the generator
  excludes it by construction); in a real data set (e.g. a DAPO question that is an AIME problem) the training
  row is removed, counted and logged (:func:`remove_overlap`; ``prepare_dataset --exclude``). Questions are
  compared after :func:`question_key` (whitespace collapsed, case folded): exact up to layout, not fuzzy.
* a prompt longer than the model can take: :func:`check_prompt_lengths` -- ``"error"`` (evaluation: a benchmark's
  denominator must not shrink silently) or ``"skip"`` (training: the row is dropped with a logged count).
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["question_key", "check_unique_ids", "find_overlap", "remove_overlap", "prompt_lengths",
           "check_prompt_lengths"]

log = logging.getLogger("rlrt.validate")


def question_key(question: str) -> str:
    """The form in which two questions are compared: whitespace runs collapsed to one space, case folded."""
    return " ".join(question.split()).casefold()


def check_unique_ids(splits: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """Raise ValueError when an ``id`` occurs more than once across ``splits`` (split name -> rows with an
    ``id``); the message names up to 5 repeated ids and the splits they occur in."""
    where: dict[Any, list[str]] = {}
    for name, rows in splits.items():
        for row in rows:
            where.setdefault(row["id"], []).append(name)
    repeated = {i: s for i, s in where.items() if len(s) > 1}
    if repeated:
        shown = ", ".join(f"{i!r} in {s}" for i, s in list(repeated.items())[:5])
        raise ValueError(f"{len(repeated)} repeated id(s) across splits {list(splits)}: {shown}")


def find_overlap(rows: Sequence[Mapping[str, Any]],
                 others: Mapping[str, Iterable[Mapping[str, Any]]]) -> dict[str, list[int]]:
    """Indices of ``rows`` whose question (by :func:`question_key`) is also a question of another split:
    ``{split: [row index, ...]}`` for each split in ``others`` with a match, each index listed once, under the
    first split (in ``others``' order) that contains it."""
    first: dict[str, str] = {}
    for name, split in others.items():
        for row in split:
            first.setdefault(question_key(row["question"]), name)
    hits: dict[str, list[int]] = {}
    for k, row in enumerate(rows):
        name = first.get(question_key(row["question"]))
        if name is not None:
            hits.setdefault(name, []).append(k)
    return hits


def remove_overlap(rows: Sequence[Mapping[str, Any]], others: Mapping[str, Iterable[Mapping[str, Any]]],
                   where: str) -> tuple[list[Mapping[str, Any]], dict[str, int]]:
    """``rows`` without those whose question is in one of ``others`` (split -> rows), in order, and the removed
    count per split (see :func:`find_overlap`); a WARNING names ``where`` and the counts when any is removed."""
    hits = find_overlap(rows, others)
    drop = {k for ks in hits.values() for k in ks}
    counts = {name: len(ks) for name, ks in hits.items()}
    if drop:
        log.warning("%s: removed %d of %d rows whose question is also in an evaluation split: %s", where, len(drop),
                    len(rows), counts)
    return [r for k, r in enumerate(rows) if k not in drop], counts


def prompt_lengths(tokenizer, questions: Sequence[str], template_kwargs: Mapping[str, Any] | None = None) -> list[int]:
    """Token count of each question's generation prompt, built and encoded exactly as the local engine samples it
    (``chat_prompt(tokenizer, user_message(q), template_kwargs)``, no special tokens added)."""
    from rlrt.tasks.prompts import chat_prompt, user_message

    return [len(tokenizer(chat_prompt(tokenizer, user_message(q), template_kwargs),
                          add_special_tokens=False)["input_ids"]) for q in questions]


def check_prompt_lengths(lengths: Sequence[int], limit: int, where: str, policy: str = "error") -> list[int]:
    """Indices (ascending) of the prompts that fit: ``lengths[i] <= limit``.

    ``lengths``: prompt token counts (:func:`prompt_lengths`); ``limit``: the most prompt tokens the model can take
    -- ``max_position_embeddings - max_new_tokens`` for the local engine, or the config's max prompt length.
    ``policy="error"``: any prompt over ``limit`` raises ValueError naming ``where``, the count and the first
    offending rows; ``"skip"``: those rows are left out and their count logged (WARNING). ``limit < 1`` (the
    response budget alone fills the context) is always a ValueError."""
    if policy not in ("error", "skip"):
        raise ValueError(f"policy must be 'error' or 'skip', got {policy!r}")
    if limit < 1:
        raise ValueError(f"{where}: no room for a prompt (limit {limit} tokens): the response budget fills the "
                         f"model's context")
    over = [k for k, n in enumerate(lengths) if n > limit]
    if over:
        shown = ", ".join(f"row {k} ({lengths[k]} tokens)" for k in over[:5])
        if policy == "error":
            raise ValueError(f"{where}: {len(over)} of {len(lengths)} prompts exceed the {limit}-token limit: {shown}")
        log.warning("%s: skipped %d of %d prompts over the %d-token limit: %s", where, len(over), len(lengths),
                    limit, shown)
    bad = set(over)
    return [k for k in range(len(lengths)) if k not in bad]
