"""Countdown: combine the given numbers with + - * / (each exactly once) to reach a target (RLT's OOD task).

Generated locally (no download): pick numbers, combine them in a random order with random operations that keep
every intermediate value a positive integer, and the result is the target; the construction is the reference
solution. Train and test are disjoint as (sorted numbers, target) pairs. Verification parses the proposed
equation with ``ast`` (numbers and binary + - * / only), checks the multiset of numbers used and evaluates it
exactly with fractions.
"""

from __future__ import annotations

import ast
import json
import random
from fractions import Fraction

from rlrt.tasks.answers import extract_boxed

OPS = "+-*/"


def question_text(numbers: list[int], target: int) -> str:
    return (f"Using the numbers {numbers}, create an equation that equals {target}. Use every number exactly once "
            f"with + - * / and parentheses, and put the equation in \\boxed{{}}.")


def make_problem(rng: random.Random, n_numbers: int = 3, max_number: int = 20) -> dict:
    """One problem with its constructive solution. Returns {question, numbers, target, solution, answer}."""
    while True:
        numbers = [rng.randint(1, max_number) for _ in range(n_numbers)]
        order = numbers[:]
        rng.shuffle(order)
        expr, value = str(order[0]), order[0]
        for x in order[1:]:
            op = rng.choice(OPS)
            if op == "+":
                value = value + x
            elif op == "-":
                if value - x <= 0:  # keep intermediates positive: fall back to +
                    op, value = "+", value + x
                else:
                    value = value - x
            elif op == "*":
                value = value * x
            else:
                if value % x:
                    op, value = "*", value * x
                else:
                    value = value // x
            expr = f"({expr} {op} {x})"
        if 1 <= value <= 999:
            eq = expr[1:-1] if expr.startswith("(") else expr
            return {"question": question_text(numbers, value), "numbers": numbers, "target": value,
                    "solution": f"{eq} = {value}. \\boxed{{{eq}}}", "equation": eq,
                    "answer": answer_key(numbers, value)}


def _evaluate(node: ast.AST, used: list[int]) -> Fraction:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, used)
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        used.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        a, b = _evaluate(node.left, used), _evaluate(node.right, used)
        if isinstance(node.op, ast.Add):
            return a + b
        if isinstance(node.op, ast.Sub):
            return a - b
        if isinstance(node.op, ast.Mult):
            return a * b
        if b == 0:
            raise ZeroDivisionError
        return a / b
    raise ValueError(f"not allowed in a countdown equation: {ast.dump(node)[:60]}")


def verify_equation(equation: str, numbers: list[int], target: int) -> bool:
    """True iff ``equation`` (an expression, optionally followed by '= target') uses exactly ``numbers`` and
    evaluates to ``target``."""
    expr = equation.split("=")[0].replace("×", "*").replace("÷", "/").strip()
    if not expr or len(expr) > 200:
        return False
    try:
        used: list[int] = []
        value = _evaluate(ast.parse(expr, mode="eval"), used)
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        return False
    return sorted(used) == sorted(numbers) and value == target


def answer_key(numbers: list[int], target: int) -> str:
    """The ``answer`` field of a countdown row: what grading needs (there are many correct equations)."""
    return json.dumps({"numbers": list(numbers), "target": int(target)}, sort_keys=True)


def grade_batch(responses: list[str], answers: list[str]) -> list[float]:
    """Grade responses against :func:`answer_key` strings (the RL engine's and evaluation's grade_fn signature)."""
    out = []
    for resp, key in zip(responses, answers, strict=True):
        k = json.loads(key)
        out.append(grade(resp, k["numbers"], k["target"]))
    return out


def grade(response: str, numbers: list[int], target: int) -> float:
    """1.0 if the last \\boxed{} of ``response`` holds a valid equation, else 0.0."""
    boxed = extract_boxed(response)
    return float(boxed is not None and verify_equation(boxed, numbers, target))


def generate_splits(seed: int, sizes: dict[str, int], n_numbers: int = 3, max_number: int = 20) -> dict[str, list]:
    """Disjoint splits (no (sorted numbers, target) pair shared), drawn in the order of ``sizes``."""
    rng = random.Random(seed)
    seen: set[tuple] = set()
    out: dict[str, list] = {}
    for name, n in sizes.items():
        rows: list[dict] = []
        tries = 0
        while len(rows) < n:
            tries += 1
            if tries > 100 * n + 1000:
                raise ValueError(f"countdown split {name!r}: cannot draw {n} distinct problems "
                                 f"(n_numbers={n_numbers}, max_number={max_number})")
            p = make_problem(rng, n_numbers, max_number)
            key = (tuple(sorted(p["numbers"])), p["target"])
            if key in seen:
                continue
            seen.add(key)
            rows.append(p)
        out[name] = rows
    return out
