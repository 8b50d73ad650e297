import json
import os
import random

import pytest

from rlrt.io import read_jsonl, write_jsonl
from rlrt.tasks.arithmetic import generate_splits, make_problem, scratchpad_solution, solution_text
from rlrt.tasks.answers import extract_boxed
from rlrt.tasks.grading import grade
from rlrt.tasks.prompts import INSTRUCTION, strip_think, user_message

SPECS = {
    "train": {"n": 300, "n_terms": 3, "min_digits": 1, "max_digits": 2},
    "test": {"n": 50, "n_terms": 3, "min_digits": 1, "max_digits": 2},
    "test_hard": {"n": 30, "n_terms": 4, "min_digits": 1, "max_digits": 2},
}


def test_make_problem_deterministic_and_correct():
    a = make_problem(random.Random(3), 3, 1, 3)
    b = make_problem(random.Random(3), 3, 1, 3)
    assert a == b
    assert a["answer"] == str(sum(a["terms"]))
    assert a["question"] == "What is " + " + ".join(map(str, a["terms"])) + "?"
    assert a["solution"].endswith("\\boxed{%s}." % a["answer"])
    assert all(1 <= len(str(t)) <= 3 for t in a["terms"])


def test_splits_deterministic_disjoint_correct():
    s1 = generate_splits(7, SPECS)
    s2 = generate_splits(7, SPECS)
    assert s1 == s2
    assert generate_splits(8, SPECS) != s1
    assert list(s1) == list(SPECS)
    train_keys = {tuple(sorted(r["terms"])) for r in s1["train"]}
    for name, rows in s1.items():
        assert len(rows) == SPECS[name]["n"]
        keys = [tuple(sorted(r["terms"])) for r in rows]
        assert len(set(keys)) == len(keys)
        if name != "train":
            assert not train_keys & set(keys)
        for i, r in enumerate(rows):
            assert r["id"] == f"{name}-{i:05d}"
            assert len(r["terms"]) == SPECS[name]["n_terms"]
            assert int(r["answer"]) == sum(r["terms"])
            assert extract_boxed(r["solution"]) == r["answer"]
            assert grade(r["solution"], r["answer"]) == 1.0


def test_orders_give_different_paths_same_answer():
    terms = [12, 345, 67]
    s1 = solution_text(terms, [0, 1, 2])
    s2 = solution_text(terms, [0, 2, 1])
    assert s2 == "12 + 67 = 79. 79 + 345 = 424. So the answer is \\boxed{424}."
    assert s1 != s2
    assert extract_boxed(s1) == extract_boxed(s2) == "424"
    with pytest.raises(ValueError):
        solution_text(terms, [0, 0, 1])


def test_scratchpad():
    terms = [12, 345, 67, 999]
    rng = random.Random(0)
    s = scratchpad_solution(terms, rng)
    assert s.startswith("<think>") and "</think>" in s
    assert grade(s, str(sum(terms))) == 1.0
    compact = strip_think(s)
    assert "<think>" not in compact and compact.endswith("\\boxed{%d}." % sum(terms))
    assert len(s) <= 5 * len(compact)
    fixed = scratchpad_solution([12, 67], rng, order=[0, 1])
    assert fixed.startswith("<think>\n12 + 67: 2 + 7 = 9 carry 0; 1 + 6 + 0 = 7 carry 0; so 79.\n</think>\n")
    carry = scratchpad_solution([999, 1], rng, order=[0, 1])
    assert "write 1; so 1000." in carry


def test_prompts():
    assert user_message("What is 1 + 2?") == "What is 1 + 2? " + INSTRUCTION
    assert strip_think("<think>\nabc\n</think>\n x \\boxed{3}. ") == "x \\boxed{3}."
    assert strip_think("a <think>b</think> c") == "a c"
    assert strip_think("no tags") == "no tags"


def test_jsonl_roundtrip_atomic_and_malformed(tmp_path):
    rows = generate_splits(1, {"train": {"n": 5, "n_terms": 2, "min_digits": 1, "max_digits": 2}})["train"]
    path = tmp_path / "sub" / "train.jsonl"
    write_jsonl(path, rows)
    assert read_jsonl(path) == rows
    write_jsonl(path, rows[:2])  # overwrite
    assert read_jsonl(path) == rows[:2]
    assert os.listdir(path.parent) == ["train.jsonl"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n{not json\n")
    with pytest.raises(ValueError, match=":2:"):
        read_jsonl(bad)


def test_generate_splits_impossible():
    # 1-digit, 2 terms: only 55 distinct multisets
    with pytest.raises(ValueError, match="train"):
        generate_splits(0, {"train": {"n": 60, "n_terms": 2, "min_digits": 1, "max_digits": 1}})
    with pytest.raises(ValueError, match="test"):
        generate_splits(0, {
            "train": {"n": 50, "n_terms": 2, "min_digits": 1, "max_digits": 1},
            "test": {"n": 10, "n_terms": 2, "min_digits": 1, "max_digits": 1},
        })


def test_mixed_length_split_draws_each_term_count():
    from rlrt.tasks.arithmetic import generate_splits

    rows = generate_splits(3, {"train": {"n": 200, "n_terms": [2, 3, 4], "min_digits": 1, "max_digits": 2}})["train"]
    assert {len(r["terms"]) for r in rows} == {2, 3, 4}
    assert all(sum(r["terms"]) == int(r["answer"]) for r in rows)


def test_verify_trace_checks_in_another_order_and_grades():
    import random

    from rlrt.tasks.arithmetic import solution_text, verify_solution
    from rlrt.tasks.grading import grade
    from rlrt.tasks.prompts import strip_think

    text = verify_solution([73, 8, 26], random.Random(0), order=[0, 2, 1])
    think, answer = text.split("</think>\n")
    assert think.startswith("<think>\n73 + 26 = 99. 99 + 8 = 107.\nCheck: ")
    assert "Check: 73 + 26" not in think  # the check takes another order
    assert answer == solution_text([73, 8, 26], [0, 2, 1])
    assert strip_think(text) == answer and grade(text, "107") == 1.0
