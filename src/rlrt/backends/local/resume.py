"""Resumable training state for the local training loops (LM pre-training/SFT, RL, RLT teacher RL).

A loop saves everything its next step depends on -- model, optimizer and scheduler state, the Python RNG that
draws its batches, the torch RNG, the metrics so far and the number of finished steps -- atomically (temp file,
then rename) every ``every`` steps. Rerun after a crash or a kill, the loop loads it and continues with the
same numbers it would have produced uninterrupted; sampling seeds in the RL loops depend only on the step index.

``fingerprint`` (any string, e.g. a hash of the stage's config) guards against resuming from a state written
under another configuration: a mismatch is logged and the loop starts from scratch instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger("rlrt.resume")


def config_fingerprint(cfg: Any) -> str:
    """A short stable hash of a JSON-serialisable config (key order does not matter)."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Resumable:
    """Where and how often a loop saves its state. ``path=None`` or ``every=0`` disables saving (loading still
    happens when ``path`` exists)."""

    path: str | None = None
    every: int = 0
    fingerprint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # filled by ``load`` with the loop's own extra state

    @classmethod
    def for_stage(cls, path: str, cfg: dict, every: int | None = 0) -> "Resumable":
        """A stage's state at ``path``, fingerprinted by the stage's config (its ``tracking`` block excepted)."""
        return cls(str(path), int(every or 0),
                   fingerprint=config_fingerprint({k: v for k, v in cfg.items() if k != "tracking"}))

    @classmethod
    def beside(cls, out: str, cfg: dict, every: int | None = 0) -> "Resumable":
        """``for_stage`` at ``<out>.resume_state.pt``: outside the declared outputs, so it survives a failed job."""
        return cls.for_stage(f"{str(out).rstrip('/')}.resume_state.pt", cfg, every)

    def due(self, finished: int, total: int) -> bool:
        """Save after ``finished`` steps? Never after the last one: the caller writes the final outputs then."""
        return bool(self.path and self.every and finished % self.every == 0 and finished < total)

    def save(self, finished: int, model, optimizer, scheduler, rng: random.Random, history: list,
             **extra: Any) -> None:
        state = {"step": finished, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
                 "history": history, "fingerprint": self.fingerprint, "extra": extra}
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        tmp = f"{self.path}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.path)

    def load(self, model, optimizer, scheduler, rng: random.Random) -> tuple[int, list]:
        """Restore a saved state into the given objects; returns (finished steps, history), (0, []) if none."""
        if not self.path or not os.path.exists(self.path):
            return 0, []
        st = torch.load(self.path, weights_only=False)
        if self.fingerprint is not None and st.get("fingerprint") != self.fingerprint:
            log.warning("ignoring %s: written under another configuration (%s != %s); starting from scratch",
                        self.path, st.get("fingerprint"), self.fingerprint)
            return 0, []
        model.load_state_dict(st["model"])
        optimizer.load_state_dict(st["optimizer"])
        scheduler.load_state_dict(st["scheduler"])
        rng.setstate(st["rng"])
        torch.set_rng_state(st["torch_rng"])
        self.extra = st.get("extra") or {}
        log.info("resuming from %s after %d finished steps", self.path, st["step"])
        return int(st["step"]), list(st["history"])

    def clear(self) -> None:
        """Remove the state once the run's final outputs are written."""
        if self.path and os.path.exists(self.path):
            os.remove(self.path)
