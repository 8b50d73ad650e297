"""Reflection injection (RLRT Sec. 6.2, Fig 6): is a high-D̄_t position a causal branch point?

For a rollout ``y = (y_1..y_L)`` of a checkpoint, with position-level asymmetry ``D̄_t`` (Eq. 3) at each position,
three positions are chosen: ``max_kl = argmax_t D̄_t``, ``random`` (uniform over ``0..L-1``) and
``min_kl = argmin_t D̄_t``. The response is cut *before* the chosen token, the reflection string (paper: "Wait,
let me reconsider.") is inserted there, and the model continues sampling; the new response
``y_<t ⊕ reflection ⊕ continuation`` is graded. Problems are binned by the checkpoint's own success before
injection (n_correct of n rollouts): *hard* (paper: 0-2 of 8) rollouts that were wrong give ``flip->R``,
*easy* (5-7 of 8) rollouts that were right give ``flip->W``.

Positions are 0-based indices into the response tokens (``t`` = index of ``y_{t+1}`` in the paper's 1-based
notation); the EOS token is a valid position (injecting there replaces the end of the answer).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

POSITIONS = ("max_kl", "random", "min_kl")


def choose_positions(dbar: Sequence[float], rng: np.random.Generator) -> dict[str, int]:
    """``{max_kl, random, min_kl}`` positions of one rollout from its D̄_t (length L >= 1, valid tokens only).

    Ties go to the earliest position (numpy argmax/argmin); ``random`` is drawn from ``rng`` uniformly.
    """
    d = np.asarray(dbar, dtype=float)
    if d.ndim != 1 or not len(d):
        raise ValueError("need the D̄_t of at least one position")
    return {"max_kl": int(d.argmax()), "random": int(rng.integers(len(d))), "min_kl": int(d.argmin())}


def inject(response_ids: Sequence[int], t: int, reflection_ids: Sequence[int]) -> list[int]:
    """The response prefix ``y_<t`` (tokens 0..t-1) followed by the reflection tokens: where sampling resumes."""
    if not 0 <= t <= len(response_ids):
        raise ValueError(f"position {t} outside a response of {len(response_ids)} tokens")
    return list(response_ids[:t]) + list(reflection_ids)


def bin_problem(n_correct: int, hard: Sequence[int], easy: Sequence[int]) -> str | None:
    """``hard`` if ``hard[0] <= n_correct <= hard[1]``, ``easy`` likewise, else None (ranges are inclusive)."""
    if hard[0] <= n_correct <= hard[1]:
        return "hard"
    if easy[0] <= n_correct <= easy[1]:
        return "easy"
    return None


def flip_table(records: pd.DataFrame) -> pd.DataFrame:
    """Flip rates per (run, step, bin, position) from one row per injected continuation.

    records columns: ``run, step, bin, position, before`` (0/1 grade of the original rollout), ``after`` (0/1
    grade of the injected continuation). ``flip->R`` (hard bin) is the fraction of wrong rollouts that became
    right; ``flip->W`` (easy bin) the fraction of right rollouts that became wrong. Returns columns
    ``run, step, bin, position, metric, rate, n, se`` (se = binomial standard error).
    """
    rows = []
    keys = ["run", "step", "bin", "position"]
    for (run, step, b, pos), g in records.groupby(keys, sort=True):
        if b == "hard":
            g = g[g["before"] == 0]
            flips, metric = g["after"] == 1, "flip->R"
        else:
            g = g[g["before"] == 1]
            flips, metric = g["after"] == 0, "flip->W"
        n = len(g)
        rate = float(flips.mean()) if n else float("nan")
        se = float(np.sqrt(rate * (1 - rate) / n)) if n else float("nan")
        rows.append({"run": run, "step": int(step), "bin": b, "position": pos, "metric": metric, "rate": rate,
                     "n": n, "se": se})
    return pd.DataFrame(rows, columns=keys + ["metric", "rate", "n", "se"])
