"""Resumable training state for the local training loops (LM pre-training/SFT, RL, RLT teacher RL).

A loop saves everything its next step depends on -- model, optimizer and scheduler state, the Python RNG that
draws its batches, the torch RNG, the metrics so far and the number of finished steps -- atomically (temp file,
then rename) every ``every`` steps. Rerun after a crash or a kill, the loop loads it and continues with the
same numbers it would have produced uninterrupted; sampling seeds in the RL loops depend only on the step index.

``fingerprint`` (any string, e.g. a hash of the stage's config) guards against resuming from a state written
under another configuration: a mismatch is logged and the loop starts from scratch instead.

Integrity: the file is ``torch.save``'s bytes followed by a fixed-length trailer holding their SHA-256 (``torch.load``
still reads it). A state that is truncated, overwritten with other bytes, unreadable or inconsistent (history
length != finished steps) is never trained on: ``load`` logs one warning naming the file and the reason, moves it
aside to ``<path>.corrupt`` and the loop starts from scratch (the same numbers as an uninterrupted run).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger("rlrt.resume")

TRAILER_TAG = b"\nrlrt-resume-sha256 "
TRAILER_LEN = len(TRAILER_TAG) + 64 + 1  # tag, hex digest, newline
REQUIRED = ("step", "model", "optimizer", "scheduler", "rng", "torch_rng", "history")


class CorruptState(Exception):
    """A resume state that cannot be trusted; the message says why."""


def write_state(path: str, state: dict) -> None:
    """``state`` to ``path`` atomically: ``torch.save`` bytes + SHA-256 trailer to ``<path>.tmp``, fsync, rename."""
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(payload + TRAILER_TAG + hashlib.sha256(payload).hexdigest().encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_state(path: str) -> dict:
    """The state ``write_state`` wrote at ``path``; raises ``CorruptState`` when the checksum does not match, the
    bytes do not unpickle, a key is missing or the history does not have one row per finished step."""
    with open(path, "rb") as f:
        blob = f.read()
    payload, trailer = blob[:-TRAILER_LEN], blob[-TRAILER_LEN:]
    if not payload or not trailer.startswith(TRAILER_TAG):
        raise CorruptState(f"no checksum trailer ({len(blob)} bytes: truncated, or not written by this version)")
    if hashlib.sha256(payload).hexdigest().encode() != trailer[len(TRAILER_TAG):-1]:
        raise CorruptState("checksum mismatch (bytes changed after writing)")
    try:
        st = torch.load(io.BytesIO(payload), weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing here
        first_line = (str(e).splitlines() or [""])[0]
        raise CorruptState(f"unreadable ({type(e).__name__}: {first_line})") from e
    missing = [k for k in REQUIRED if not isinstance(st, dict) or k not in st]
    if missing:
        raise CorruptState(f"missing {', '.join(missing)}")
    if len(st["history"]) != st["step"]:
        raise CorruptState(f"{len(st['history'])} metrics rows for {st['step']} finished steps")
    return st


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
        write_state(self.path, state)

    def load(self, model, optimizer, scheduler, rng: random.Random) -> tuple[int, list]:
        """Restore a saved state into the given objects; returns (finished steps, history), (0, []) if none, if it
        was written under another configuration, or if it is corrupt (then moved aside to ``<path>.corrupt``)."""
        if not self.path or not os.path.exists(self.path):
            return 0, []
        try:
            st = read_state(self.path)
        except CorruptState as e:
            os.replace(self.path, f"{self.path}.corrupt")
            log.warning("ignoring corrupt resume state %s: %s; moved to %s.corrupt, starting from scratch",
                        self.path, e, self.path)
            return 0, []
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
        """Remove the state (and a leftover ``.tmp`` / ``.corrupt`` beside it) once the run's outputs are written."""
        for p in (self.path, f"{self.path}.tmp", f"{self.path}.corrupt") if self.path else ():
            if os.path.exists(p):
                os.remove(p)
