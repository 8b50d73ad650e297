"""RLT's teacher and student formats (SakanaAI/RLT; RLT paper Sec. 3.2, Fig. 2) and the converters between them.

Teacher (sees the solution, writes the explanation; generation starts after the explanation tag):
    <|begin_of_solution|>{solution}<|end_of_solution|>\\n\\n<|begin_of_explanation|>\\n\\n{explanation}<|end_of_explanation|>
Student (distillation target: the explanation as its think block, then the solution):
    <|begin_of_thought|>{explanation}<|end_of_thought|>\\n\\n<|begin_of_solution|>{solution}<|end_of_solution|>

Converters never edit the explanation: the teacher's raw text becomes the student's think block byte for byte
(the paper distils raw outputs, no filtering and no post-processing).
"""

from __future__ import annotations

BEGIN_SOLUTION, END_SOLUTION = "<|begin_of_solution|>", "<|end_of_solution|>"
BEGIN_EXPLANATION, END_EXPLANATION = "<|begin_of_explanation|>", "<|end_of_explanation|>"
BEGIN_THOUGHT, END_THOUGHT = "<|begin_of_thought|>", "<|end_of_thought|>"
TAGS = (BEGIN_SOLUTION, END_SOLUTION, BEGIN_EXPLANATION, END_EXPLANATION, BEGIN_THOUGHT, END_THOUGHT)


def teacher_prefix(solution: str) -> str:
    """The teacher's assistant text up to where its generation starts."""
    return f"{BEGIN_SOLUTION}{solution}{END_SOLUTION}\n\n{BEGIN_EXPLANATION}\n\n"


def teacher_text(solution: str, explanation: str) -> str:
    """Full teacher assistant text (SFT warm-up target; the loss covers the explanation and its end tag)."""
    return teacher_prefix(solution) + explanation + END_EXPLANATION


def parse_explanation(completion: str) -> str | None:
    """The explanation of a teacher completion (text generated after :func:`teacher_prefix`), or None when the
    end tag is missing or the completion opens another block (format failure: the reward's -1 case)."""
    end = completion.find(END_EXPLANATION)
    if end < 0:
        return None
    explanation = completion[:end]
    if any(tag in explanation for tag in TAGS):
        return None
    return explanation


def student_text(explanation: str, solution: str) -> str:
    """The student's assistant text: the explanation as its think block, then the solution."""
    return f"{BEGIN_THOUGHT}{explanation}{END_THOUGHT}\n\n{BEGIN_SOLUTION}{solution}{END_SOLUTION}"


def teacher_to_student(completion: str, solution: str) -> str | None:
    """Teacher completion -> student distillation target (None on a format failure)."""
    explanation = parse_explanation(completion)
    return None if explanation is None else student_text(explanation, solution)


def raw_explanation(completion: str) -> tuple[str, bool]:
    """(explanation, well_formatted) for distillation, which keeps every raw output (no filtering): the parsed
    explanation when the format is right, else the completion up to its first tag (all of it if it has none,
    e.g. when the teacher ran out of tokens before closing the block)."""
    explanation = parse_explanation(completion)
    if explanation is not None:
        return explanation, True
    cut = min([completion.find(t) for t in TAGS if t in completion] or [len(completion)])
    return completion[:cut], False
