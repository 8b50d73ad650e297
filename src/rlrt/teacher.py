"""The teacher view: the same model, shown a privileged context ``c`` the student does not see (RLRT Eq. 1).

``P_T^t(.) = pi_theta(. | h_t, c)``: the teacher's prompt is the student's prompt with ``c`` inserted into the
user turn; the student's sampled response ids are reused unchanged, so ``log P_T(y_t)`` and ``log P_S(y_t)`` score
the very same tokens. Which ``c`` a sample gets:

* ``sibling``   (RLRT, SDPO, SRPO): the first *other* correct rollout of the same group, thinking block stripped;
  the sample itself is never its own context; a group with no correct rollout (or whose only correct rollout is
  the sample itself) gives no context, and the caller then leaves the advantage unweighted (weight 1).
* ``reference`` (RLSD): the dataset's reference solution, for every sample.
* ``answer`` (RLSD where the data has no solution, e.g. DAPO-Math-17k): the gold answer, for every sample, shown
  in RLSD's reference-solution template -- RLSD's own self-distillation teacher (``use_gt_as_hint`` with its
  ``teacher_hint_self_distill`` template) presents the ground-truth answer as the reference solution; RLRT App.
  G.1 / Table 4: RLSD's "teacher conditions on the ground-truth answer".

A per-problem context (``reference``, ``answer``) is never empty: :func:`problem_contexts` refuses an empty one
naming the split and the row id (an empty context would leave the teacher a prompt saying "Here is a reference
solution:" followed by nothing), and :func:`build_contexts` refuses one naming the group.

Templates follow the reference implementations (SDPO re-prompt; RLSD reference-solution prompt).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from rlrt.tasks.prompts import strip_think

SIBLING_TEMPLATE = "{prompt}\nCorrect solution:\n\n{context}\n\n\n\nCorrectly solve the original question.\n"
REFERENCE_TEMPLATE = (
    "{prompt}\n\nHere is a reference solution:\n{context}\n\n"
    "After understanding the reference solution, please try to solve this problem using your own approach below:"
)
ANSWER_TEMPLATE = REFERENCE_TEMPLATE  # RLSD shows the gold answer as the reference solution (module docstring)
CONTEXT_KINDS = ("none", "sibling", "reference", "answer")
PROBLEM_FIELDS = {"reference": "solution", "answer": "answer"}
"""Context kind -> the problem field it is made of (the kinds whose context is the same for a whole group)."""


def sibling_context_index(rewards: Sequence[Sequence[float]]) -> list[list[int | None]]:
    """For each sample (g, i), the index j of the first correct sibling with j != i, or None.

    rewards: (G, n) nested sequence of 0/1 rewards. Returns (G, n) nested list of Optional[int].
    """
    out = []
    for group in rewards:
        correct = [j for j, r in enumerate(group) if r > 0.5]
        out.append([next((j for j in correct if j != i), None) for i in range(len(group))])
    return out


def problem_contexts(kind: str, problems: Sequence[Mapping[str, Any]], split: str) -> list[str]:
    """(G,) each problem's text for a per-problem context ``kind``: its ``solution`` (``reference``) or its gold
    ``answer`` (``answer``), thinking stripped; ``""`` for every problem under the other kinds (unused there).

    problems: (G,) rows with ``id`` and the field the kind reads; split: the data split they come from (named in
    the error). An empty text raises ``ValueError`` naming the split and the row id.
    """
    field = PROBLEM_FIELDS.get(kind)
    if field is None:
        if kind not in CONTEXT_KINDS:
            raise ValueError(f"unknown context kind {kind!r}; expected one of {CONTEXT_KINDS}")
        return [""] * len(problems)
    out = []
    for k, row in enumerate(problems):
        text = strip_think(str(row.get(field) or ""))
        if not text:
            hint = ("; this data set has no reference solutions: use `context: answer` (the gold answer in RLSD's "
                    "template)" if kind == "reference" else "")
            raise ValueError(f"teacher context {kind!r}: split {split!r} row {row.get('id', k)!r} has an empty "
                             f"{field!r}, so the teacher would see no context{hint}")
        out.append(text)
    return out


def build_contexts(
    kind: str,
    rewards: Sequence[Sequence[float]],
    responses: Sequence[Sequence[str]],
    references: Sequence[str] | None = None,
) -> list[list[str | None]]:
    """Privileged context text for every sample, (G, n) nested list; None = no context for that sample.

    references: (G,) each problem's text for a per-problem kind (``reference``: its solution, ``answer``: its gold
    answer; :func:`problem_contexts` picks and checks it); an empty one raises ``ValueError`` naming the group."""
    if kind == "sibling":
        idx = sibling_context_index(rewards)
        return [[None if j is None else strip_think(responses[g][j]) for j in row] for g, row in enumerate(idx)]
    if kind in PROBLEM_FIELDS:
        if references is None:
            raise ValueError(f"context {kind!r} needs each problem's {PROBLEM_FIELDS[kind]!r}")
        out = []
        for g, row in enumerate(rewards):
            text = strip_think(references[g])
            if not text:
                raise ValueError(f"context {kind!r}: group {g} has an empty {PROBLEM_FIELDS[kind]!r} (the teacher "
                                 f"would see no context)")
            out.append([text] * len(row))
        return out
    if kind == "none":
        return [[None] * len(row) for row in rewards]
    raise ValueError(f"unknown context kind {kind!r}; expected one of {CONTEXT_KINDS}")


def teacher_user_message(user_message: str, context: str | None, kind: str) -> str:
    """The teacher's user turn: the student's user message with the context inserted (unchanged if None)."""
    if context is None:
        return user_message
    template = {"sibling": SIBLING_TEMPLATE, "answer": ANSWER_TEMPLATE}.get(kind, REFERENCE_TEMPLATE)
    return template.format(prompt=user_message, context=context)
