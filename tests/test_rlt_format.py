"""RLT formats: converters round-trip the explanation exactly; the SFT mask covers only the explanation."""

from __future__ import annotations

import random

import pytest

from rlrt.tasks.rlt_format import (
    END_EXPLANATION, END_THOUGHT, BEGIN_THOUGHT, explanation_span, parse_explanation, span_token_mask,
    student_text, teacher_prefix, teacher_text, teacher_to_student,
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


def test_explanation_only_token_mask():
    from rlrt.tasks.tokenizer import train_tokenizer

    rng = random.Random(0)
    corpus = [teacher_text(SOL, f"step {rng.randint(1, 99)} plus {rng.randint(1, 99)}") for _ in range(50)]
    tok = train_tokenizer(corpus, 320)
    expl = "step 7 plus 8"
    text = teacher_text(SOL, expl)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = span_token_mask(enc["offset_mapping"], explanation_span(text))
    kept = "".join(text[s:e] for (s, e), m in zip(enc["offset_mapping"], mask) if m)
    assert kept.strip() == (expl + END_EXPLANATION).strip()
    assert sum(mask) < len(mask)  # the solution block and tags are not trained on
    lo, _ = explanation_span(text)
    assert all(m == 0 for (s, e), m in zip(enc["offset_mapping"], mask) if e <= lo)  # nothing before the span
