import random

import pytest

from rlrt.tasks.answers import extract_boxed
from rlrt.tasks.grading import Grader, grade


@pytest.mark.parametrize("text,expected", [
    ("So \\boxed{42}.", "42"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{1} then \\boxed{2}", "2"),
    ("\\fbox{7}", "7"),
    ("\\boxed{3} and \\fbox{4}", "4"),
    ("\\fbox{4} and \\boxed{{a}b}", "{a}b"),
    ("no answer", None),
    ("", None),
    ("\\boxed{12", None),
    ("\\boxed{1} \\boxed{{2}", None),
])
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize("response,answer,expected", [
    ("So the answer is \\boxed{424}.", "424", 1.0),
    ("\\boxed{ 424 }", "424", 1.0),
    ("\\boxed{425}", "424", 0.0),
    ("\\boxed{0.5}", "1/2", 1.0),
    ("\\boxed{\\frac{1}{2}}", "0.5", 1.0),
    ("\\boxed{424}", "424.0", 1.0),
    ("", "424", 0.0),
    ("\\boxed{}", "424", 0.0),
    ("\\boxed{abc", "abc", 0.0),
    ("424", "424", 0.0),
])
def test_grade(response, answer, expected):
    assert grade(response, answer) == expected


def test_grade_garbage_never_raises():
    rng = random.Random(0)
    for _ in range(20):
        junk = bytes(rng.randrange(256) for _ in range(40)).decode("latin-1")
        assert grade(junk, "1") == 0.0
        assert grade("\\boxed{" + junk + "}", "1") in (0.0, 1.0)
    assert grade(None, "1") == 0.0  # type: ignore[arg-type]


def test_grader_pool_matches_inprocess():
    responses = ["\\boxed{0.5}", "no box", "\\boxed{3}", "\\boxed{\\frac{1}{2}}",
                 "\\boxed{7}", "\\boxed{abc", "\\boxed{424.0}"]
    answers = ["1/2", "1", "3", "0.5", "8", "abc", "424"]
    expected = [grade(r, a) for r, a in zip(responses, answers)]
    assert expected == [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    with Grader(workers=0) as g0:
        assert g0.grade_batch(responses, answers) == expected
        assert g0.n_unparseable == 2 and g0.n_errors == 0
    with Grader(workers=1) as g1:
        assert g1.grade_batch(responses, answers) == expected
        assert g1.grade_batch(["\\boxed{3}"], ["3"]) == [1.0]
        assert g1.n_unparseable == 2 and g1.n_errors == 0
    with pytest.raises(ValueError):
        Grader(workers=0).grade_batch(["a"], [])


def test_plain_numbers_are_decided_without_math_verify():
    from rlrt.tasks.grading import Grader

    g = Grader(workers=1)
    scores = g.grade_batch(["\\boxed{424.0}", "\\boxed{423}", "\\boxed{-7}", "\\boxed{1/2}"], ["424", "424", "-7", "0.5"])
    assert scores == [1.0, 0.0, 1.0, 1.0]
    assert g.n_verified == 1  # only the fraction needed math-verify
    g.close()
