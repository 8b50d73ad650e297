"""Synthetic multi-term addition task with several valid solution paths.

The terms may be added in any order, so a problem has many correct reference
solutions; exploration during RL is therefore meaningful.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

__all__ = [
    "make_problem",
    "question_text",
    "solution_text",
    "scratchpad_solution",
    "generate_splits",
]


def question_text(terms: Sequence[int]) -> str:
    return "What is " + " + ".join(str(t) for t in terms) + "?"


def _random_term(rng: random.Random, min_digits: int, max_digits: int) -> int:
    d = rng.randint(min_digits, max_digits)
    lo = 0 if d == 1 else 10 ** (d - 1)
    return rng.randint(lo, 10**d - 1)


def _check_order(terms: Sequence[int], order: Sequence[int]) -> list[int]:
    order = list(order)
    if sorted(order) != list(range(len(terms))):
        raise ValueError(f"order {order} is not a permutation of range({len(terms)})")
    if len(terms) < 2:
        raise ValueError("need at least 2 terms")
    return order


def solution_text(terms: Sequence[int], order: Sequence[int] | None = None) -> str:
    """Compact one-line solution adding ``terms`` pairwise in ``order`` (indices).

    E.g. terms=[12, 345, 67], order=[0, 2, 1] ->
    "12 + 67 = 79. 79 + 345 = 424. So the answer is \\boxed{424}."
    """
    order = _check_order(terms, range(len(terms)) if order is None else order)
    acc = terms[order[0]]
    steps = []
    for i in order[1:]:
        nxt = acc + terms[i]
        steps.append(f"{acc} + {terms[i]} = {nxt}.")
        acc = nxt
    return " ".join(steps) + f" So the answer is \\boxed{{{acc}}}."


def _column_trace(a: int, b: int) -> str:
    """Digit-by-digit column addition, least significant digit first."""
    da, db = str(a)[::-1], str(b)[::-1]
    carry = 0
    parts = []
    n = max(len(da), len(db))
    for k in range(n):
        if k >= min(len(da), len(db)) and carry == 0:
            # shorter number exhausted and no carry: copy the remaining digits
            rest = (da if len(da) > len(db) else db)[k:][::-1]
            parts.append(f"copy {rest}")
            break
        x = int(da[k]) if k < len(da) else 0
        y = int(db[k]) if k < len(db) else 0
        s = x + y + carry
        lhs = f"{x} + {y}" if k == 0 else f"{x} + {y} + {carry}"
        carry = s // 10
        parts.append(f"{lhs} = {s} carry {carry}")
    if carry:
        parts.append(f"write {carry}")
    return f"{a} + {b}: " + "; ".join(parts) + f"; so {a + b}."


def scratchpad_solution(terms: Sequence[int], rng: random.Random,
                        order: Sequence[int] | None = None) -> str:
    """Long "thinking" trace: column additions inside <think>...</think>,
    then the compact solution (same random order) ending in \\boxed{}."""
    if order is None:
        order = list(range(len(terms)))
        rng.shuffle(order)
    order = _check_order(terms, order)
    acc = terms[order[0]]
    lines = []
    for i in order[1:]:
        lines.append(_column_trace(acc, terms[i]))
        acc += terms[i]
    return "<think>\n" + "\n".join(lines) + "\n</think>\n" + solution_text(terms, order)


def steps_text(terms: Sequence[int], order: Sequence[int]) -> str:
    """The pairwise steps of ``solution_text`` without the final sentence, e.g. "12 + 67 = 79. 79 + 345 = 424." """
    return solution_text(terms, order).rsplit(" So the answer is", 1)[0]


def verify_solution(terms: Sequence[int], rng: random.Random, order: Sequence[int] | None = None) -> str:
    """Short "thinking" trace: work the sum in one order, check it in another, then answer.

    ``<think>\n{steps in order A}\nCheck: {steps in order B}\n</think>\n{compact solution in order A}``,
    about 2x the compact length: a thinking model's stand-in that stays affordable on 2 CPU cores (the column
    trace of ``scratchpad_solution`` is ~4x).
    """
    if order is None:
        order = list(range(len(terms)))
        rng.shuffle(order)
    order = _check_order(terms, order)
    other = list(order)
    if len(set(terms)) > 1:
        while [terms[i] for i in other] == [terms[i] for i in order]:
            rng.shuffle(other)
    return ("<think>\n" + steps_text(terms, order) + "\nCheck: " + steps_text(terms, other) + "\n</think>\n"
            + solution_text(terms, order))


def reference_explanation(terms: Sequence[int], solution: str, rng: random.Random) -> str:
    """The RLT branch's reference trace (the analog of Bespoke's post-processed R1 traces): the sum worked out in
    another order than the one the reference ``solution`` writes up (the same order only when all orders read
    alike), e.g. "67 + 345 = 412. 412 + 12 = 424." for the solution "12 + 67 = 79. 79 + 345 = 424. So ...".
    """
    order = list(range(len(terms)))
    steps = solution.rsplit(" So the answer is", 1)[0]
    for _ in range(20):
        rng.shuffle(order)
        text = steps_text(terms, order)
        if text != steps:
            return text
    return text


def make_problem(rng: random.Random, n_terms: int, min_digits: int, max_digits: int) -> dict[str, Any]:
    if n_terms < 2:
        raise ValueError("n_terms must be >= 2")
    if not 1 <= min_digits <= max_digits:
        raise ValueError("need 1 <= min_digits <= max_digits")
    terms = [_random_term(rng, min_digits, max_digits) for _ in range(n_terms)]
    order = list(range(n_terms))
    rng.shuffle(order)
    return {
        "question": question_text(terms),
        "answer": str(sum(terms)),
        "terms": terms,
        "solution": solution_text(terms, order),
    }


def _key(terms: Sequence[int]) -> tuple[int, ...]:
    return tuple(sorted(terms))


def generate_splits(seed: int, specs: dict[str, dict[str, int]],
                    max_tries_factor: int = 50) -> dict[str, list[dict[str, Any]]]:
    """Generate disjoint splits. ``spec["n_terms"]`` may be a list (mixed lengths). "train" first; other splits share no multiset
    of terms with train and have no duplicates within themselves.

    Each split gets its own rng derived from (seed, split name), so adding a
    split does not change the others (except through the train exclusion)."""
    names = sorted(specs, key=lambda s: (s != "train", list(specs).index(s)))
    train_keys: set[tuple[int, ...]] = set()
    out: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        spec = specs[name]
        n = int(spec["n"])
        rng = random.Random(f"{seed}:{name}")
        seen: set[tuple[int, ...]] = set()
        rows: list[dict[str, Any]] = []
        tries, max_tries = 0, max_tries_factor * n + 1000
        while len(rows) < n:
            if tries >= max_tries:
                raise ValueError(
                    f"split {name!r}: found only {len(rows)} unique problems of {n} "
                    f"after {max_tries} tries")
            tries += 1
            nt = spec["n_terms"]  # an int, or a list of term counts to draw from (a mixed-length split)
            n_terms = rng.choice(list(nt)) if isinstance(nt, (list, tuple)) else int(nt)
            p = make_problem(rng, n_terms, int(spec["min_digits"]), int(spec["max_digits"]))
            k = _key(p["terms"])
            if k in seen or (name != "train" and k in train_keys):
                continue
            seen.add(k)
            rows.append({"id": f"{name}-{len(rows):05d}", **p})
        if name == "train":
            train_keys = seen
        out[name] = rows
    return {name: out[name] for name in specs}

