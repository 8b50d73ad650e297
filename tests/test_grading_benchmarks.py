"""The grader on real benchmark answers: model-style outputs vs the gold answers the loaders produce (MATH-500
LaTeX, AMC floats as "27", GPQA letters). Every expected score below was checked by hand against the gold."""

from __future__ import annotations

import pytest

from rlrt.tasks.grading import Grader, choice_letter, grade

# (model output, gold answer, expected)
MATH_CASES = [
    ("Thus the probability is $\\boxed{\\dfrac12}$.", "\\frac{1}{2}", 1.0),
    ("So $p = \\boxed{0.5}$.", "\\frac{1}{2}", 1.0),
    ("The ratio is \\boxed{\\frac{1}{2}}", "0.5", 1.0),
    ("Hence $\\sin 60^\\circ = \\boxed{\\frac{\\sqrt{3}}{2}}$.", "\\frac{\\sqrt{3}}{2}", 1.0),
    ("\\boxed{\\dfrac{\\sqrt3}{2}}", "\\frac{\\sqrt{3}}{2}", 1.0),
    ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{\\sqrt{3}}{2}", 0.0),                 # wrong value
    ("The solution set is $\\boxed{(-\\infty, 3]}$.", "(-\\infty,3]", 1.0),
    ("\\boxed{(-\\infty, 3)}", "(-\\infty,3]", 0.0),                               # open vs closed end
    ("The side is $\\boxed{12\\text{ cm}}$.", "12", 1.0),                          # units dropped
    ("\\boxed{12}", "12\\text{ cm}", 1.0),
    ("The angle is $\\boxed{30^\\circ}$.", "30", 1.0),
    ("\\boxed{30}", "30^\\circ", 1.0),
    ("The roots are $\\boxed{\\{1,2\\}}$.", "\\{1,2\\}", 1.0),
    ("\\boxed{\\{2, 1\\}}", "\\{1,2\\}", 1.0),                                    # a set is unordered
    ("\\boxed{\\{1,3\\}}", "\\{1,2\\}", 0.0),
    ("\\boxed{27}", "27", 1.0),                                                     # AMC 27.0 staged as "27"
    ("\\boxed{27.0}", "27", 1.0),
    ("so the answer is \\boxed{28}.", "27", 0.0),                                   # wrong answer
    ("The final answer is 27.", "27", 0.0),                                         # unboxed: not graded
    ("\\boxed{204} minutes", "204", 1.0),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)", 1.0),
]

# GPQA: gold is a letter A-D (rlrt.tasks.benchmarks.gpqa_diamond)
CHOICE_CASES = [
    ("The answer is \\boxed{A}.", "A", 1.0),
    ("\\boxed{\\text{(A)}}", "A", 1.0),
    ("\\boxed{(A)}", "A", 1.0),
    ("\\boxed{\\textbf{(A)}\\ gluon}", "A", 1.0),   # math-verify alone: 0.0 (the letter path fixes it)
    ("\\boxed{A) gluon}", "A", 1.0),               # math-verify alone: 0.0
    ("\\boxed{A.}", "A", 1.0),                     # math-verify alone: 0.0
    ("\\boxed{\\text{Option C}}", "C", 1.0),       # math-verify alone: 0.0
    ("\\boxed{B}", "A", 0.0),
    ("\\boxed{\\text{(B)}}", "A", 0.0),
    ("\\boxed{A, B}", "A", 0.0),                   # hedging over two options is wrong
    ("\\boxed{AB}", "A", 0.0),
    ("\\boxed{gluon}", "A", 0.0),                  # the option text instead of its letter
    ("I pick option A.", "A", 0.0),                # unboxed
]


@pytest.mark.parametrize("response,gold,expected", MATH_CASES + CHOICE_CASES)
def test_grade(response, gold, expected):
    assert grade(response, gold) == expected


@pytest.mark.parametrize("pred,letter", [
    ("A", "A"), ("c", "C"), ("(B)", "B"), ("\\text{(D)}", "D"), ("\\mathrm{(C)}", "C"), ("A: 5", "A"),
    ("(A) \\frac{1}{2}", "A"), ("$B$", "B"),
    ("A, B", None), ("A + B", None), ("a. 5", None), ("12", None), ("\\frac{1}{2}", None), ("K", None),
    ("(A) Point C", None),
])
def test_choice_letter(pred, letter):
    assert choice_letter(pred) == letter


def test_grader_process_pool_matches_in_process():
    """workers=2: the non-trivial cases go through the process pool and score exactly as ``grade`` does."""
    cases = MATH_CASES + CHOICE_CASES
    responses = [r for r, _, _ in cases]
    golds = [g for _, g, _ in cases]
    with Grader(workers=2) as g:
        scores = g.grade_batch(responses, golds)
        assert scores == [e for _, _, e in cases]
        assert g.n_errors == 0
        assert g.n_unparseable == 2                     # the two unboxed answers
        # in-process (no math-verify): 5 exact string matches (sqrt3/2, {1,2}, 27, 204, the polar pair), 2 plain
        # decimals (27.0, 28 vs 27), 1 unboxed math answer, and all 13 GPQA-letter cases; the other 13 math cases
        # (fractions vs decimals, intervals, units, degrees, sets) are sent to the pool
        assert g.n_verified == 13 == len(MATH_CASES) - 5 - 2 - 1
        assert g._pool is not None                      # the pool really ran


def test_grader_workers0_same_scores():
    cases = MATH_CASES[:6]
    with Grader(workers=0) as g:
        assert g.grade_batch([r for r, _, _ in cases], [a for _, a, _ in cases]) == [e for _, _, e in cases]
