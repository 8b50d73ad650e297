"""Grading (synthetic task and math benchmarks); the boxed-answer extraction is ``rlrt.tasks.answers``.

``grade`` never raises: any failure counts as a wrong answer (0.0).
math-verify enforces its timeouts with ``signal.alarm``, which only works in a
process's main thread, and only between Python bytecodes; off the main thread we call it without timeouts. The
:class:`Grader` therefore runs the non-trivial cases in worker processes of a :class:`TimeoutPool`, which kills
(SIGKILL) and replaces a worker whose call runs past ``GRADE_TIMEOUT_S``: the bound is the pool's, not the
answer's kindness.

Adversarial answers, and what bounds each (``tests/test_grading_adversarial.py``):

* a boxed answer longer than ``MAX_ANSWER_CHARS`` (10^5 nested braces, a 1 MB string): extraction in the parent
  scans at most that many characters, scores 0, counts ``n_oversized``; never sent to a worker;
* thousands of ``\\boxed{}``: only the last is read (a C-speed ``rfind``);
* a short answer math-verify chokes on (``\\boxed{9^{9^{9}}}``): killed at ``GRADE_TIMEOUT_S``, scores 0, counts
  ``n_timeouts``;
* a worker that dies (SIGKILL, ``os._exit``, a crash in C): replaced; the answer it held scores 0 and counts
  ``n_crashes``; a worker found dead while idle is replaced before it is given work.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing as mp
import queue
import re
import threading
from decimal import Decimal
from typing import Any, Callable

from rlrt.tasks import countdown
from rlrt.tasks.answers import MAX_ANSWER_CHARS, AnswerTooLong, extract_boxed

__all__ = ["grade", "choice_letter", "Grader", "CountdownGrader", "make_grader", "TimeoutPool", "WorkerCrashed",
           "PARSE_TIMEOUT_S", "VERIFY_TIMEOUT_S", "GRADE_TIMEOUT_S", "MAX_ANSWER_CHARS"]

log = logging.getLogger("rlrt.grading")

PARSE_TIMEOUT_S = 5
VERIFY_TIMEOUT_S = 5
GRADE_TIMEOUT_S = 1.0
"""The :class:`Grader`'s hard wall-clock limit for one math-verify call in a worker (parse both + verify). Warm
workers decide real benchmark answers in ~10-60 ms, so this leaves a wide margin on a loaded machine."""
START_TIMEOUT_S = 120.0
"""How long a new worker may take to start and warm up (import math-verify, a few calls) before it is replaced."""
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
    multiple-choice key (GPQA): decided here by :func:`choice_letter`, never by math-verify. Raises
    :class:`AnswerTooLong` for a boxed answer over ``MAX_ANSWER_CHARS`` (the work done here stays bounded)."""
    pred = extract_boxed(response, MAX_ANSWER_CHARS)
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
    """1.0 if the last boxed answer in ``response`` equals ``answer``, else 0.0. In-process: math-verify's own
    timeouts only (main thread); use a :class:`Grader` with workers for a hard time bound."""
    try:
        score, pred = _fast(response, answer)
        if score is not None:
            return score
        return _verify(pred, str(answer).strip())
    except Exception:  # noqa: BLE001
        return 0.0


# ---- a process pool with a hard per-call deadline ----

_WARMUP = (("1", "1"), ("\\frac{\\sqrt{2}}{2}", "\\frac{\\sqrt{3}}{2}"), ("(-\\infty, 3]", "(-\\infty,3]"),
           ("\\{2, 1\\}", "\\{1,2\\}"), ("x^2+1", "1+x^2"))
"""Calls a new worker makes before it reports ready: the first math-verify calls import sympy and build lazy
tables (~0.5 s), which must not be charged to a real answer's ``GRADE_TIMEOUT_S``."""


class WorkerCrashed(RuntimeError):
    """A pool worker died while running a call (SIGKILL, ``os._exit``, a crash in native code)."""


def _worker_main(conn) -> None:
    """Body of a :class:`TimeoutPool` worker: warm up, send ``"ready"``, then answer each ``(fn, args)`` message
    with ``(True, fn(*args))`` or ``(False, repr(exception))``, until it receives None or the pipe closes. It runs
    in the worker's main thread, so math-verify's ``signal.alarm`` timeouts are active."""
    for pred, gold in _WARMUP:
        _verify(pred, gold)
    conn.send("ready")
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        fn, args = msg
        try:
            reply = (True, fn(*args))
        except Exception as e:  # noqa: BLE001 - reported to the caller
            reply = (False, repr(e))
        conn.send(reply)


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, ctx) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child,), daemon=True, name="rlrt-grader")
        self.proc.start()
        child.close()
        self.ready = False

    def wait_ready(self, timeout_s: float) -> bool:
        """True once the worker has warmed up; False if it died or did not start within ``timeout_s``."""
        if not self.ready:
            try:
                self.ready = self.conn.poll(timeout_s) and self.conn.recv() == "ready"
            except (EOFError, OSError):
                return False
        return self.ready

    def call(self, fn: Callable, args: tuple, timeout_s: float) -> Any:
        """``fn(*args)`` in the worker. TimeoutError after ``timeout_s`` (the worker is left running: the caller
        kills it), WorkerCrashed if it dies, RuntimeError carrying the repr of an exception ``fn`` raised."""
        try:
            self.conn.send((fn, args))
            answered = self.conn.poll(timeout_s)  # also True when the worker died (EOF)
            if answered:
                ok, value = self.conn.recv()
        except (EOFError, OSError) as e:
            self.proc.join(1)
            raise WorkerCrashed(f"grader worker pid {self.proc.pid} died (exit code {self.proc.exitcode})") from e
        if not answered:
            raise TimeoutError(f"{getattr(fn, '__name__', fn)} ran past {timeout_s} s (pid {self.proc.pid})")
        if not ok:
            raise RuntimeError(f"in grader worker: {value}")
        return value

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join(5)
        self.conn.close()

    def stop(self) -> None:
        """Ask the worker to exit (kill it if it does not within 2 s)."""
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(2)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


class TimeoutPool:
    """``workers`` processes (forkserver, else spawn), each running one call at a time under a hard deadline.

    :meth:`call` runs ``fn(*args)`` (``fn`` a picklable module-level function) in an idle worker and returns its
    value. A call still running after ``timeout_s`` has its worker killed (SIGKILL) and replaced, and raises
    TimeoutError; a worker that dies during a call is replaced and the call raises :class:`WorkerCrashed`. The
    deadline starts when the call is sent to a warm worker: start-up and warm-up are not charged to it, and a
    replacement warms up in the background while the rest of a batch runs. A worker found dead while idle (or
    during start-up) is replaced before it gets the call; 3 such failures in a row raise RuntimeError (the
    workers cannot start at all: a broken environment, not a bad answer). Thread-safe: concurrent callers each
    take an idle worker or wait for one. ``n_restarts`` counts every replacement."""

    def __init__(self, workers: int, timeout_s: float, start_timeout_s: float = START_TIMEOUT_S) -> None:
        if workers < 1:
            raise ValueError("TimeoutPool needs workers >= 1")
        self.timeout_s, self.start_timeout_s = float(timeout_s), float(start_timeout_s)
        methods = mp.get_all_start_methods()
        self._ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
        if "forkserver" in methods:  # workers fork with math-verify imported: a replacement starts in ~0.3 s, not ~1 s
            self._ctx.set_forkserver_preload(["rlrt.tasks.grading", "math_verify"])  # no effect once it runs
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        for _ in range(workers):
            self._idle.put(_Worker(self._ctx))
        self.n_restarts = 0
        self._lock = threading.Lock()

    def pids(self) -> list[int]:
        """The process ids of the idle workers (for tests and diagnostics)."""
        ws = []
        while True:
            try:
                ws.append(self._idle.get_nowait())
            except queue.Empty:
                break
        for w in ws:
            self._idle.put(w)
        return [w.proc.pid for w in ws]

    def _replace(self, w: _Worker, why: str) -> _Worker:
        log.warning("grader worker pid %s %s: replaced", w.proc.pid, why)
        w.kill()
        with self._lock:
            self.n_restarts += 1
        return _Worker(self._ctx)

    def _ready_worker(self) -> _Worker:
        w = self._idle.get()
        for _ in range(3):
            if w.proc.is_alive() and w.wait_ready(self.start_timeout_s):
                return w
            w = self._replace(w, "died while idle or starting")
        self._idle.put(w)
        raise RuntimeError("grader workers die during start-up (3 in a row; their stderr says why): math-verify "
                           "not importable, or a main script without an `if __name__ == '__main__':` guard?")

    def call(self, fn: Callable, *args: Any) -> Any:
        """``fn(*args)`` in a warm worker, under the deadline; see the class docstring for what it raises."""
        w = self._ready_worker()
        try:
            return w.call(fn, args, self.timeout_s)
        except TimeoutError:
            w = self._replace(w, f"ran past {self.timeout_s} s")
            raise
        except WorkerCrashed:
            w = self._replace(w, "died during a call")
            raise
        finally:
            self._idle.put(w)

    def close(self) -> None:
        """Stop the idle workers (call it once no :meth:`call` is running)."""
        while True:
            try:
                self._idle.get_nowait().stop()
            except queue.Empty:
                return


# ---- graders ----


class Grader:
    """Batch grader. Exact matches are decided in-process; only the rest go to
    a :class:`TimeoutPool` (``workers`` processes, a hard ``timeout_s`` per answer).
    ``workers=0`` grades everything in-process (math-verify's own timeouts only: tests and debugging).

    Counters (cumulative): ``n_graded``, ``n_unparseable`` (no boxed answer), ``n_verified`` (cases sent to
    math-verify), ``n_errors`` (scored 0.0 because grading could not finish), of which ``n_oversized`` (boxed
    answer over ``MAX_ANSWER_CHARS``), ``n_timeouts`` (worker killed at ``timeout_s``) and ``n_crashes`` (worker
    died mid-answer); :meth:`counts` returns them all. Safe to call from several threads."""

    def __init__(self, workers: int = 1, timeout_s: float = GRADE_TIMEOUT_S) -> None:
        if workers < 0:
            raise ValueError("workers must be >= 0")
        self.workers = workers
        self.timeout_s = timeout_s
        self.n_graded = self.n_unparseable = self.n_errors = self.n_verified = 0
        self.n_oversized = self.n_timeouts = self.n_crashes = 0
        self._pool: TimeoutPool | None = None
        self._threads: cf.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def counts(self) -> dict[str, int]:
        """All counters by name (without the ``n_`` prefix), e.g. for a stage's summary JSON."""
        return {k[2:]: v for k, v in vars(self).items() if k.startswith("n_")}

    def _add(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)

    def _get_pool(self) -> tuple[TimeoutPool, cf.ThreadPoolExecutor]:
        with self._lock:
            if self._pool is None:
                self._pool = TimeoutPool(self.workers, self.timeout_s)
                self._threads = cf.ThreadPoolExecutor(self.workers, thread_name_prefix="rlrt-grader")
            return self._pool, self._threads

    def _pool_verify(self, pred: str, gold: str) -> float:
        pool, _ = self._get_pool()
        try:
            return float(pool.call(_verify, pred, gold))
        except TimeoutError:
            self._add(n_timeouts=1, n_errors=1)
        except WorkerCrashed:
            self._add(n_crashes=1, n_errors=1)
        return 0.0

    def grade_batch(self, responses: list[str], answers: list[str]) -> list[float]:
        """Scores (1.0 / 0.0) of ``responses[i]`` against ``answers[i]``, in order; never raises for an answer
        (only for mismatched lengths, or workers that cannot start at all)."""
        if len(responses) != len(answers):
            raise ValueError(f"{len(responses)} responses but {len(answers)} answers")
        scores: list[float] = [0.0] * len(responses)
        todo: list[tuple[int, str, str]] = []
        unparseable = oversized = errors = 0
        for k, (r, a) in enumerate(zip(responses, answers)):
            try:
                score, pred = _fast(r, a)
            except AnswerTooLong:
                oversized += 1
                continue
            except Exception:  # noqa: BLE001
                errors += 1
                continue
            if pred is None:
                unparseable += 1
            if score is None:
                todo.append((k, pred, str(a).strip()))
            else:
                scores[k] = score
        self._add(n_graded=len(responses), n_unparseable=unparseable, n_oversized=oversized,
                  n_errors=errors + oversized, n_verified=len(todo))
        if self.workers == 0:
            for k, p, g in todo:
                scores[k] = _verify(p, g)
        elif todo:
            _, threads = self._get_pool()
            for (k, _, _), s in zip(todo, threads.map(lambda t: self._pool_verify(t[1], t[2]), todo)):
                scores[k] = s
        return scores

    def close(self) -> None:
        """Stop the worker processes (a later batch starts new ones)."""
        with self._lock:
            pool, threads, self._pool, self._threads = self._pool, self._threads, None, None
        if threads is not None:
            threads.shutdown(wait=True)
        if pool is not None:
            pool.close()

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
class CountdownGrader:
    """The :class:`Grader` interface for countdown rows (``answer`` = ``countdown.answer_key``): an exact,
    in-process check of the last boxed equation; ``n_unparseable`` counts responses without one."""

    def __init__(self) -> None:
        self.n_graded = self.n_unparseable = self.n_errors = 0

    counts = Grader.counts

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
