"""The teacher view: the same model, shown a privileged context ``c`` the student does not see (RLRT Eq. 1).

``P_T^t(.) = pi_theta(. | h_t, c)``: the teacher's prompt is the student's prompt with ``c`` inserted into the
user turn; the student's sampled response ids are reused unchanged, so ``log P_T(y_t)`` and ``log P_S(y_t)`` score
the very same tokens. Which ``c`` a sample gets:

* ``sibling``   (RLRT, SDPO, SRPO): the first *other* correct rollout of the same group, thinking block stripped;
  the sample itself is never its own context; a group with no correct rollout (or whose only correct rollout is
  the sample itself) gives no context, and the caller then leaves the advantage unweighted (weight 1).
* ``reference`` (RLSD): the dataset's reference solution, for every sample.

Templates follow the reference implementations (SDPO re-prompt; RLSD reference-solution prompt).
"""

from __future__ import annotations

from typing import Sequence

from rlrt.tasks.prompts import strip_think

SIBLING_TEMPLATE = "{prompt}\nCorrect solution:\n\n{context}\n\n\n\nCorrectly solve the original question.\n"
REFERENCE_TEMPLATE = (
    "{prompt}\n\nHere is a reference solution:\n{context}\n\n"
    "After understanding the reference solution, please try to solve this problem using your own approach below:"
)
CONTEXT_KINDS = ("none", "sibling", "reference")


def sibling_context_index(rewards: Sequence[Sequence[float]]) -> list[list[int | None]]:
    """For each sample (g, i), the index j of the first correct sibling with j != i, or None.

    rewards: (G, n) nested sequence of 0/1 rewards. Returns (G, n) nested list of Optional[int].
    """
    out = []
    for group in rewards:
        correct = [j for j, r in enumerate(group) if r > 0.5]
        out.append([next((j for j in correct if j != i), None) for i in range(len(group))])
    return out


def build_contexts(
    kind: str,
    rewards: Sequence[Sequence[float]],
    responses: Sequence[Sequence[str]],
    references: Sequence[str] | None = None,
) -> list[list[str | None]]:
    """Privileged context text for every sample, (G, n) nested list; None = no context for that sample."""
    if kind == "sibling":
        idx = sibling_context_index(rewards)
        return [[None if j is None else strip_think(responses[g][j]) for j in row] for g, row in enumerate(idx)]
    if kind == "reference":
        if references is None:
            raise ValueError("context 'reference' needs the reference solutions")
        return [[strip_think(references[g])] * len(row) for g, row in enumerate(rewards)]
    if kind == "none":
        return [[None] * len(row) for row in rewards]
    raise ValueError(f"unknown context kind {kind!r}; expected one of {CONTEXT_KINDS}")


def teacher_user_message(user_message: str, context: str | None, kind: str) -> str:
    """The teacher's user turn: the student's user message with the context inserted (unchanged if None)."""
    if context is None:
        return user_message
    template = SIBLING_TEMPLATE if kind == "sibling" else REFERENCE_TEMPLATE
    return template.format(prompt=user_message, context=context)
