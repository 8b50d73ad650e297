"""Answer extraction shared by the tasks' graders: the last ``\\boxed{...}`` of a response.

A leaf module (no rlrt imports), so ``grading`` (arithmetic, math) and ``countdown`` both read boxed answers
without importing each other.
"""

from __future__ import annotations

__all__ = ["extract_boxed", "AnswerTooLong", "MAX_ANSWER_CHARS"]

_MARKERS = ("\\boxed", "\\fbox")

MAX_ANSWER_CHARS = 1000
"""The longest boxed answer the math grader reads (characters between the braces). Gold answers of the math
benchmarks are far shorter (MATH-500's longest are ~100 characters); a longer boxed answer is scored 0 and
counted (``Grader.n_oversized``) instead of being scanned or sent to math-verify."""


class AnswerTooLong(ValueError):
    """The last boxed answer runs past ``max_chars`` characters (balanced or not)."""


def extract_boxed(text: str, max_chars: int | None = None) -> str | None:
    """Content of the LAST ``\\boxed{...}`` (or ``\\fbox{...}``), with balanced
    nested braces. None if absent or if the last one is unbalanced.

    ``max_chars``: scan at most that many characters of content after the opening brace, so the cost is bounded by
    ``max_chars`` whatever ``len(text)`` is (finding the marker is a C-speed ``rfind``); an answer longer than that,
    or an unclosed one that runs on past it, raises :class:`AnswerTooLong`. None: no limit (linear in the text)."""
    if not isinstance(text, str):
        return None
    start = -1
    marker_len = 0
    for m in _MARKERS:
        i = text.rfind(m + "{")
        if i > start:
            start, marker_len = i, len(m)
    if start < 0:
        return None
    i = start + marker_len  # at "{"
    stop = len(text) if max_chars is None else min(len(text), i + max_chars + 2)  # +2: both braces
    depth = 0
    for j in range(i, stop):
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j]
    if stop < len(text):
        raise AnswerTooLong(f"boxed answer longer than {max_chars} characters")
    return None
