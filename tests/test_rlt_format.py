"""RLT formats: converters round-trip the explanation exactly; distillation keeps raw outputs."""

from __future__ import annotations

import pytest

from rlrt.tasks.rlt_format import (
    BEGIN_SOLUTION, BEGIN_THOUGHT, END_EXPLANATION, END_THOUGHT, parse_explanation, raw_explanation, student_text,
    teacher_prefix, teacher_text, teacher_to_student,
)

SOL = "12 + 30 = 42. \\boxed{42}"


@pytest.mark.parametrize("expl", ["Add the tens first: 10 + 30 = 40, then 2.", "", "  spaces\n\nand lines  "])
def test_teacher_output_to_student_keeps_the_exact_explanation(expl):
    full = teacher_text(SOL, expl)
    completion = full[len(teacher_prefix(SOL)):]
    assert parse_explanation(completion) == expl
    st = teacher_to_student(completion, SOL)
    assert st == student_text(expl, SOL)
    assert st[st.index(BEGIN_THOUGHT) + len(BEGIN_THOUGHT):st.index(END_THOUGHT)] == expl
    assert st.endswith(SOL + "<|end_of_solution|>")


def test_format_failures():
    assert parse_explanation("no end tag here") is None
    assert teacher_to_student("text <|begin_of_solution|>x" + END_EXPLANATION, SOL) is None
    assert parse_explanation("fine" + END_EXPLANATION + " trailing junk is ignored") == "fine"


def test_raw_explanation_keeps_every_output():
    assert raw_explanation("a + b" + END_EXPLANATION + "junk") == ("a + b", True)
    assert raw_explanation("ran out of tokens before the tag") == ("ran out of tokens before the tag", False)
    assert raw_explanation("text " + BEGIN_SOLUTION + "x") == ("text ", False)  # cut at the first tag
    assert raw_explanation("") == ("", False)
