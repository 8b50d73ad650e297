"""Adversarial model outputs and crashing grader workers: every answer is graded in bounded time, scores 0, is
counted, and the pool recovers. Time bounds are generous (a loaded 2-core CI machine); the bound that matters is
the pool's 1 s per answer, checked through the counters (a timeout is only counted when the pool killed a worker).
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from rlrt.tasks.answers import MAX_ANSWER_CHARS, AnswerTooLong, extract_boxed
from rlrt.tasks.grading import (GRADE_TIMEOUT_S, CountdownGrader, Grader, TimeoutPool, WorkerCrashed, grade,
                                make_grader)

NESTED = "\\boxed{" + "{" * 100_000 + "}" * 100_000 + "}"   # 10^5 nested braces
ONE_MB = "\\boxed{" + "1+" * 500_000 + "1}"                   # a 1 MB boxed answer
UNCLOSED_MB = "x" * 500_000 + "\\boxed{" + "9" * 1_000_000    # an unclosed box running on for 1 MB
MANY_EMPTY = "\\boxed{}" * 5000                                # thousands of boxes, the last one empty
BOMB = "\\boxed{9^{9^{9}}}"                                    # math-verify spends its whole 5 s alarm on it
LEGIT = (["\\boxed{\\frac{1}{2}}", "\\boxed{(-\\infty, 3]}", "\\boxed{7}"], ["0.5", "(-\\infty,3]", "8"],
         [1.0, 1.0, 0.0])                                      # (responses, golds, expected): math-verify cases


def timed(fn, *args):
    t = time.monotonic()
    out = fn(*args)
    return out, time.monotonic() - t


def test_pool_timeout_is_configured_at_one_second():
    assert GRADE_TIMEOUT_S == 1.0
    g = make_grader("arithmetic")
    assert isinstance(g, Grader) and g.timeout_s == 1.0


def test_extract_boxed_scan_is_bounded_by_max_chars():
    assert extract_boxed("a \\boxed{" + "7" * 10 + "}", max_chars=10) == "7" * 10
    with pytest.raises(AnswerTooLong):
        extract_boxed("\\boxed{" + "7" * 11 + "}", max_chars=10)
    with pytest.raises(AnswerTooLong):       # unclosed and running on past the cap
        extract_boxed(UNCLOSED_MB, max_chars=MAX_ANSWER_CHARS)
    assert extract_boxed("\\boxed{12", max_chars=10) is None   # unclosed at the end of a short text
    assert extract_boxed(NESTED) is not None                    # no cap: the old, unbounded behaviour
    t = time.monotonic()
    for s in (NESTED, ONE_MB, UNCLOSED_MB):
        with pytest.raises(AnswerTooLong):
            extract_boxed(s, MAX_ANSWER_CHARS)
    assert time.monotonic() - t < 1.0   # bounded by the cap (~1 ms each), not the length of the text


@pytest.mark.parametrize("response", [NESTED, ONE_MB, UNCLOSED_MB], ids=["nested", "1MB", "unclosed-1MB"])
def test_oversized_answers_score_zero_counted_never_reach_a_worker(response):
    g = Grader(workers=1)
    scores, dt = timed(g.grade_batch, [response, "\\boxed{3}"], ["3", "3"])
    assert scores == [0.0, 1.0] and dt < 5
    assert g.n_oversized == 1 and g.n_errors == 1 and g.n_verified == 0
    assert g._pool is None          # decided in the parent, no worker was started
    assert grade(response, "3") == 0.0


def test_thousands_of_boxes_only_the_last_counts():
    with Grader(workers=0) as g:
        scores, dt = timed(g.grade_batch, [MANY_EMPTY, "\\boxed{1}" * 5000 + "\\boxed{42}"], ["3", "42"])
    assert scores == [0.0, 1.0] and dt < 5
    assert g.n_unparseable == 0 and g.n_errors == 0


def test_math_verify_bomb_is_killed_by_the_pool_and_later_batches_grade():
    with Grader(workers=1) as g:
        assert g.grade_batch(*LEGIT[:2]) == LEGIT[2]                 # warm worker
        scores, dt = timed(g.grade_batch, [BOMB], ["3"])
        assert scores == [0.0] and dt < 5        # math-verify alone: 5 s (its alarm)
        assert g.n_timeouts == 1 and g.n_errors == 1 and g.n_crashes == 0
        assert g._pool.n_restarts == 1
        assert g.grade_batch(*LEGIT[:2]) == LEGIT[2]                 # the replacement grades correctly
        assert g.counts()["timeouts"] == 1
        # the ungrouped tower is parsed as a (wrong) number in ~50 ms: a plain 0, whichever way it ends
        scores, dt = timed(g.grade_batch, ["\\boxed{9^9^9^9}"], ["3"])
        assert scores == [0.0] and dt < 5 and g.n_verified == 2 + 1 + 2 + 1


def test_a_batch_of_bombs_is_bounded_by_the_pool_not_by_the_answers():
    responses = [BOMB, LEGIT[0][0], BOMB, LEGIT[0][1], BOMB]
    with Grader(workers=2) as g:
        scores, dt = timed(g.grade_batch, responses, ["3", "0.5", "3", "(-\\infty,3]", "3"])
        assert scores == [0.0, 1.0, 0.0, 1.0, 0.0]
        assert g.n_timeouts == 3
        assert dt < 20   # ~2 s on an idle machine (3 x 1 s over 2 workers, + start-up); 15 s by math-verify alone


def test_sigkilled_idle_worker_is_replaced_without_blaming_an_answer():
    with Grader(workers=1) as g:
        assert g.grade_batch(*LEGIT[:2]) == LEGIT[2]
        (pid,) = g._pool.pids()
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        assert g.grade_batch(*LEGIT[:2]) == LEGIT[2]
        assert g._pool.n_restarts == 1 and g._pool.pids() != [pid]
        assert g.n_errors == 0


def test_worker_killed_mid_answer_scores_zero_counted_and_is_replaced():
    with Grader(workers=1) as g:
        assert g.grade_batch(*LEGIT[:2]) == LEGIT[2]
        (pid,) = g._pool.pids()
        out: list = []
        t = threading.Thread(target=lambda: out.append(g.grade_batch([BOMB], ["3"])))
        t.start()
        deadline = time.monotonic() + 5
        while g._pool.pids() and time.monotonic() < deadline:   # wait until the worker has taken the answer
            time.sleep(0.01)
        time.sleep(0.3)                   # it is now inside math-verify (the pool's deadline is 1 s away)
        os.kill(pid, signal.SIGKILL)
        t.join(10)
        assert out == [[0.0]]
        assert g.n_crashes == 1 and g.n_timeouts == 0 and g.n_errors == 1
        assert g.grade_batch(*LEGIT[:2]) == LEGIT[2]


def _boom() -> None:
    raise ValueError("boom")


def test_timeout_pool_kills_calls_that_never_return_and_replaces_dead_workers():
    pool = TimeoutPool(1, timeout_s=0.5)
    try:
        assert pool.call(pow, 2, 10) == 1024            # warm
        t = time.monotonic()
        with pytest.raises(TimeoutError):
            pool.call(time.sleep, 60)                   # does nothing to help: no signal, no timeout of its own
        assert time.monotonic() - t < 5
        with pytest.raises(WorkerCrashed, match="exit code 3"):
            pool.call(os._exit, 3)                      # os._exit inside the worker
        with pytest.raises(RuntimeError, match="boom"):
            pool.call(_boom)                            # an exception comes back; the worker survives
        assert pool.call(pow, 3, 3) == 27
        assert pool.n_restarts == 2
    finally:
        pool.close()


def test_countdown_grader_adversarial_answers():
    key = '{"numbers": [1, 2, 3], "target": 6}'
    responses = [NESTED, ONE_MB, MANY_EMPTY, "\\boxed{" + "(" * 150 + "1+2+3" + ")" * 150 + "}", "\\boxed{1+2+3}"]
    with CountdownGrader() as g:
        scores, dt = timed(g.grade_batch, responses, [key] * len(responses))
    assert scores == [0.0, 0.0, 0.0, 0.0, 1.0] and dt < 5
    assert g.counts() == {"graded": 5, "unparseable": 0, "errors": 0}
