"""verl's rule-based reward (``reward.custom_reward_function.path`` = this file, ``name`` = ``compute_score``).

The score is the local engine's: ``rlrt.tasks.grading`` (last ``\\boxed{}``; exact match, option letters for GPQA,
decimals, then math-verify) -> 1.0 or 0.0. DIVER's diversity bonus is NOT added here: it depends on the sibling
rollouts and the step, so it joins the scores inside ``shape_advantages`` (the trainer step), exactly where the
local engine adds it; a per-sample reward function cannot see the group.

Threads. verl 0.9.1's reward loop (``NaiveRewardManager.run_single``) calls this function through
``loop.run_in_executor(None, ...)``, i.e. in a worker *thread*, where math-verify's ``signal.alarm`` timeouts do not
work (see ``rlrt.tasks.grading``). So cases that need math-verify go to one process-wide
``rlrt.tasks.grading.Grader`` whose worker processes run it in their main thread, with timeouts; the trivial cases
(no box, exact match, letters, plain decimals) are decided in-thread. ``RLRT_GRADER_WORKERS`` (default 2) sets the
pool size. Any failure scores 0.0 (the Grader counts it).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from rlrt.tasks import countdown
from rlrt.tasks.grading import Grader

_LOCK = threading.Lock()
_GRADER: Grader | None = None


def grader() -> Grader:
    """The process-wide grader (created on first use; its pool is forkserver/spawn, safe from threads)."""
    global _GRADER
    with _LOCK:
        if _GRADER is None:
            _GRADER = Grader(workers=int(os.environ.get("RLRT_GRADER_WORKERS", "2")))
        return _GRADER


COUNTDOWN = "countdown"
"""The ``data_source`` of countdown rows (``rlrt.backends.verl.train`` sets it for ``task: countdown``)."""


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None,
                  **kwargs: Any) -> float:
    """1.0 if the response's last boxed answer matches ``ground_truth``, else 0.0. Countdown rows
    (``data_source`` :data:`COUNTDOWN`, ``ground_truth`` = ``countdown.answer_key``) are graded as the local engine
    grades them (a valid equation over the given numbers); for every other source the gold answer's form decides
    the comparison, as in the local engine."""
    if data_source == COUNTDOWN:
        return float(countdown.grade_batch([str(solution_str)], [str(ground_truth)])[0])
    if isinstance(ground_truth, (list, tuple)):  # some datasets store several accepted forms
        return max((compute_score(data_source, solution_str, g, extra_info) for g in ground_truth), default=0.0)
    return float(grader().grade_batch([str(solution_str)], [str(ground_truth)])[0])
