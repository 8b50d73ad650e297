"""Countdown: generated problems are solvable by their own solution, the verifier is strict, splits are disjoint."""

from __future__ import annotations

import random

import pytest

from rlrt.tasks.countdown import generate_splits, grade, make_problem, verify_equation


def test_constructed_solution_verifies():
    rng = random.Random(0)
    for _ in range(200):
        p = make_problem(rng, n_numbers=3, max_number=20)
        assert verify_equation(p["equation"], p["numbers"], p["target"]), p
        assert grade(p["solution"], p["numbers"], p["target"]) == 1.0


@pytest.mark.parametrize("eq, ok", [
    ("(3 + 5) * 2", True), ("2 * (5 + 3) = 16", True), ("3 × 2 + 5 × 2", False),  # 2 used twice, 3 once
    ("(3 + 5) * 2 + 0", False), ("16", False), ("3 + 5 + 2", False), ("__import__('os')", False),
    ("(3 + 5) ** 2", False), ("(3 - 3) / 0", False), ("", False),
])
def test_verifier_by_hand(eq, ok):
    assert verify_equation(eq, [3, 5, 2], 16) is ok


def test_division_is_exact():
    assert verify_equation("(6 / 4) * 2", [6, 4, 2], 3)
    assert not verify_equation("6 / 4 * 2", [6, 4, 2], 2)


def test_splits_are_disjoint_and_deterministic():
    a = generate_splits(1, {"train": 300, "test": 50})
    b = generate_splits(1, {"train": 300, "test": 50})
    assert a == b
    key = lambda p: (tuple(sorted(p["numbers"])), p["target"])  # noqa: E731
    assert not {key(p) for p in a["train"]} & {key(p) for p in a["test"]}
    with pytest.raises(ValueError, match="cannot draw"):
        generate_splits(0, {"train": 10_000}, n_numbers=2, max_number=3)
