"""Grading (synthetic task and math benchmarks); the boxed-answer extraction is ``rlrt.tasks.answers``.

``grade`` never raises: any failure counts as a wrong answer (0.0).
math-verify enforces its timeouts with ``signal.alarm``, which only works in a
process's main thread; off the main thread we call it without timeouts, and the
:class:`Grader` runs the non-trivial cases in worker processes (main thread).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import re
import threading
from decimal import Decimal

from rlrt.tasks import countdown
from rlrt.tasks.answers import extract_boxed

__all__ = ["grade", "choice_letter", "Grader", "CountdownGrader", "make_grader", "PARSE_TIMEOUT_S", "VERIFY_TIMEOUT_S"]

PARSE_TIMEOUT_S = 5
VERIFY_TIMEOUT_S = 5
_NUMBER = re.compile(r"^[+-]?\d+(\.\d+)?$")


def _timeouts() -> tuple[int | None, int | None]:
    if threading.current_thread() is threading.main_thread():
        return PARSE_TIMEOUT_S, VERIFY_TIMEOUT_S
    return None, None


def _verify(pred: str, gold: str) -> float:
    """math-verify equivalence of two extracted answers; never raises."""
    try:
        from math_verify import parse, verify

        pt, vt = _timeouts()
        g = parse("$" + gold + "$", parsing_timeout=pt)
        p = parse("$" + pred + "$", parsing_timeout=pt)
        if not g or not p:
            return 0.0
        return 1.0 if verify(g, p, timeout_seconds=vt) else 0.0
    except BaseException as e:  # noqa: BLE001 - includes math-verify TimeoutException
        if isinstance(e, KeyboardInterrupt):
            raise
        return 0.0


_CHOICE_GOLD = re.compile(r"^[A-J]$")
_CHOICE_MARKUP = re.compile(r"\\(?:textbf|textrm|text|mathrm|mathbf|mbox)\b|[{}$]|\\(?=\s)")
_CHOICE_LEAD = re.compile(r"^(?:(?i:option|choice|answer)\s*:?\s*)?\(?([A-J])\)?(?=$|[\s.:])")
_CHOICE_ANY = re.compile(r"(?<![A-Za-z\\])[A-J](?![A-Za-z])")


def choice_letter(pred: str) -> str | None:
    """The option letter of a boxed multiple-choice answer (GPQA: gold is one letter): ``A``, ``(A)``,
    ``\\text{(A)}``, ``\\textbf{(A)}\\ 12``, ``A. 5``, ``Option A``. None when there is none or when the answer
    names more than one letter (``A, B`` hedges). math-verify alone scores ``(A) 5`` against ``A`` as wrong."""
    s = _CHOICE_MARKUP.sub("", pred).strip()
    if len(s) == 1:
        return s.upper() if s.upper() in "ABCDEFGHIJ" else None
    m = _CHOICE_LEAD.match(s)
    if m is None:
        return None
    others = set(_CHOICE_ANY.findall(s[m.end():]))
    return m.group(1) if others <= {m.group(1)} else None


def _fast(response: str, answer: str) -> tuple[float | None, str | None]:
    """(score, pred): score is set when no math-verify call is needed. A gold answer that is one letter A-J is a
    multiple-choice key (GPQA): decided here by :func:`choice_letter`, never by math-verify."""
    pred = extract_boxed(response)
    if pred is None:
        return 0.0, None
    pred_s, gold_s = pred.strip(), str(answer).strip()
    if pred_s == gold_s:
        return 1.0, pred_s
    if _CHOICE_GOLD.match(gold_s):
        return (1.0 if choice_letter(pred_s) == gold_s else 0.0), pred_s
    if not pred_s or not gold_s:
        return 0.0, pred_s
    if _NUMBER.match(pred_s) and _NUMBER.match(gold_s):
        # two plain decimals: compare exactly (424 == 424.0) without a math-verify round trip
        return (1.0 if Decimal(pred_s) == Decimal(gold_s) else 0.0), pred_s
    return None, pred_s


def grade(response: str, answer: str) -> float:
    """1.0 if the last boxed answer in ``response`` equals ``answer``, else 0.0."""
    try:
        score, pred = _fast(response, answer)
        if score is not None:
            return score
        return _verify(pred, str(answer).strip())
    except Exception:  # noqa: BLE001
        return 0.0


def _verify_task(pred: str, gold: str) -> float:
    return _verify(pred, gold)


class Grader:
    """Batch grader. Exact matches are decided in-process; only the rest go to
    a process pool (``workers`` processes, spawn/forkserver context).
    ``workers=0`` grades everything in-process.

    Counters (cumulative): ``n_graded``, ``n_unparseable`` (no boxed answer),
    ``n_errors`` (worker failures/timeouts, scored 0.0), ``n_verified``
    (cases sent to math-verify)."""

    def __init__(self, workers: int = 1, timeout_s: float = 30.0) -> None:
        if workers < 0:
            raise ValueError("workers must be >= 0")
        self.workers = workers
        self.timeout_s = timeout_s
        self.n_graded = 0
        self.n_unparseable = 0
        self.n_errors = 0
        self.n_verified = 0
        self._pool: cf.ProcessPoolExecutor | None = None

    def _get_pool(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            methods = mp.get_all_start_methods()
            ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
            self._pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)
        return self._pool

    def grade_batch(self, responses: list[str], answers: list[str]) -> list[float]:
        if len(responses) != len(answers):
            raise ValueError(f"{len(responses)} responses but {len(answers)} answers")
        scores: list[float] = [0.0] * len(responses)
        todo: list[tuple[int, str, str]] = []
        for k, (r, a) in enumerate(zip(responses, answers)):
            try:
                score, pred = _fast(r, a)
            except Exception:  # noqa: BLE001
                self.n_errors += 1
                continue
            if pred is None:
                self.n_unparseable += 1
            if score is None:
                todo.append((k, pred, str(a).strip()))
            else:
                scores[k] = score
        self.n_graded += len(responses)
        self.n_verified += len(todo)
        if not todo:
            return scores
        if self.workers == 0:
            for k, p, g in todo:
                scores[k] = _verify(p, g)
            return scores
        pool = self._get_pool()
        futs = [(k, pool.submit(_verify_task, p, g)) for k, p, g in todo]
        for k, f in futs:
            try:
                scores[k] = float(f.result(timeout=self.timeout_s))
            except cf.process.BrokenProcessPool:
                self.n_errors += 1
                self._reset_pool()
            except Exception:  # noqa: BLE001 - timeout, pickling, ...
                self.n_errors += 1
        return scores

    def _reset_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CountdownGrader:
    """The :class:`Grader` interface for countdown rows (``answer`` = ``countdown.answer_key``): an exact,
    in-process check of the last boxed equation; ``n_unparseable`` counts responses without one."""

    def __init__(self) -> None:
        self.n_graded = self.n_unparseable = self.n_errors = 0

    def grade_batch(self, responses: list[str], answers: list[str]) -> list[float]:
        self.n_graded += len(responses)
        self.n_unparseable += sum(extract_boxed(r) is None for r in responses)
        return countdown.grade_batch(responses, answers)

    def close(self) -> None:
        pass

    def __enter__(self) -> CountdownGrader:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def make_grader(task: str = "arithmetic", workers: int = 1) -> Grader | CountdownGrader:
    """The grader of a task: ``arithmetic`` (boxed number, exact then math-verify) or ``countdown``."""
    if task == "countdown":
        return CountdownGrader()
    if task == "arithmetic":
        return Grader(workers=workers)
    raise ValueError(f"unknown task {task!r} (arithmetic | countdown)")
