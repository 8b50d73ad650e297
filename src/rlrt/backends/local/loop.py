"""The one training loop every local trainer runs (LM pre-training/SFT, policy RL, the RLT teacher's RL): steps,
the learning-rate schedule, resume state, progress and callbacks. A trainer supplies ``step_fn(step) -> metrics``
and whatever extra state its next step depends on (question order, a frozen teacher, ...).

Resume: the whole state (model, optimizer, scheduler, batch RNG, torch RNG, metrics so far, the trainer's extra
state) is saved every ``resume.every`` steps and loaded at start, so a killed job continues with the numbers of an
uninterrupted run (sampling seeds in the RL loops depend only on the step index).

Numerics: the loop refuses to start from weights holding a NaN or an inf (one-line ValueError naming the loop),
and a step whose metrics report ``nonfinite_skips`` > 0 (updates its trainer skipped on a non-finite value, see
``rlrt.backends.local.ppo``) is logged with the loop's name, which carries the method, and the step.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from rlrt.backends.local.resume import Resumable
from rlrt.methods.losses import all_finite

log = logging.getLogger("rlrt.loop")


def warmup_lr(step: int, warmup_steps: int) -> float:
    """Linear warm-up factor for optimizer step ``step`` (0-based), then constant (verl's default schedule)."""
    return 1.0 if warmup_steps <= 0 else min(1.0, (step + 1) / warmup_steps)


def warmup_cosine_lr(step: int, warmup_steps: int, total_steps: int, floor: float = 0.1) -> float:
    """Linear warm-up, then cosine decay from 1 to ``floor`` at ``total_steps`` (the LM trainer's schedule)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    frac = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return floor + (1.0 - floor) * 0.5 * (1 + math.cos(math.pi * frac))


class QuestionOrder:
    """Question batches drawn without replacement, epoch by epoch, from shuffles of a seeded RNG.

    State: the pending order (saved with the resume state; the RNG is saved by the loop)."""

    def __init__(self, n_rows: int, rng: random.Random):
        self.n, self.rng, self.pending = n_rows, rng, []

    def next(self, k: int) -> list[int]:
        if len(self.pending) < k:
            perm = list(range(self.n))
            self.rng.shuffle(perm)
            self.pending.extend(perm)
        idx, self.pending = self.pending[:k], self.pending[k:]
        return idx


@dataclass
class Loop:
    """A trainer's loop state: what is saved and restored, and the loop's callbacks.

    extra_state: () -> dict saved with the state (e.g. question order, frozen teacher weights);
    restore:     (saved extra dict) -> None, called after a resumed load.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    rng: random.Random
    resume: Resumable = field(default_factory=Resumable)
    extra_state: Callable[[], dict[str, Any]] = dict
    restore: Callable[[dict[str, Any]], None] = lambda extra: None


def run(loop: Loop, step_fn: Callable[[int], dict], steps: int, *, desc: str, progress: bool = True,
        on_step: Optional[Callable[[dict], None]] = None, after_step: Optional[Callable[[int], None]] = None,
        postfix: Optional[Callable[[dict], dict]] = None) -> list[dict]:
    """Run steps [start, steps) of ``step_fn``, start = 0 or the resumed step count; returns every step's metrics.

    Per step: ``m = step_fn(step)``, the scheduler steps, ``m`` joins the history, ``on_step(m)``,
    ``after_step(finished)``, then the state is saved if due. Raises ValueError before the first step when the
    (initial or resumed) weights hold a NaN or an inf.
    """
    start, history = loop.resume.load(loop.model, loop.optimizer, loop.scheduler, loop.rng)
    if start:
        loop.restore(loop.resume.extra)
    if not all_finite(*(p.detach() for p in loop.model.parameters())):
        raise ValueError(f"{desc}: the model's weights hold NaN or inf before step {start}; refusing to train on "
                         f"them (check the input checkpoint)")
    steps_iter = range(start, steps)
    if progress:
        from rlrt.progress import progress as bar

        steps_iter = bar(steps_iter, desc=desc, unit="step", initial=start, total=steps)
    for step in steps_iter:
        m = step_fn(step)
        if m.get("nonfinite_skips"):
            log.warning("%s step %d: %d update(s) skipped on non-finite values (metric nonfinite_skips); the weights "
                        "are unchanged by them", desc, step, m["nonfinite_skips"])
        loop.scheduler.step()
        history.append(m)
        if on_step:
            on_step(m)
        if after_step:
            after_step(step + 1)
        if loop.resume.due(step + 1, steps):
            loop.resume.save(step + 1, loop.model, loop.optimizer, loop.scheduler, loop.rng, history,
                             **loop.extra_state())
        if postfix and hasattr(steps_iter, "set_postfix"):
            steps_iter.set_postfix(**postfix(m), refresh=False)
    return history
