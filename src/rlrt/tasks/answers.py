"""Answer extraction shared by the tasks' graders: the last ``\\boxed{...}`` of a response.

A leaf module (no rlrt imports), so ``grading`` (arithmetic, math) and ``countdown`` both read boxed answers
without importing each other.
"""

from __future__ import annotations

__all__ = ["extract_boxed"]

_MARKERS = ("\\boxed", "\\fbox")


def extract_boxed(text: str) -> str | None:
    """Content of the LAST ``\\boxed{...}`` (or ``\\fbox{...}``), with balanced
    nested braces. None if absent or if the last one is unbalanced."""
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
    depth = 0
    for j in range(i, len(text)):
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j]
    return None
