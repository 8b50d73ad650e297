"""DIVER's sequence-level diversity rewards, added to the verifiable score before group normalisation (Sec. 6.4).

DIVER (Hu et al., 2025, "Diversity-incentivized exploration for versatile reasoning") shapes the scalar reward of
each rollout with a bonus for being different from its siblings. Two variants are implemented:

* ``bleu``:     d_i = 1 - mean_{j != i} sentenceBLEU(y_i, y_j)  (sacrebleu), given only in groups where every
                rollout is correct and only during the first ``bleu_steps`` steps;
* ``equation``: D_i = share of rollout i's equations that appear in no sibling;
                bonus_i = min(D_i, cap) * scale * group_acc * r_i * cos_decay(step).

Then r'_i = r_i + bonus_i and the usual group advantage is computed from r'.

The schedule, against the official code (NJU-RL/DIVER, ``ray_trainer.py``, read 2026-12-01): there the bonus is
paid while the trainer's global step t < 100 and multiplied by cos(min(1, (t - 100) / 50) * pi / 2), which for
t < 100 runs from about -1 (a *penalty* on novel equations for t < 50) through 0 at t = 50 to about +1 at t = 99,
then the bonus switches off. That reads as a bug (a decay over steps 100-150 that the gate never reaches), so we
implement the evident intent instead: a cosine decay from 1 to 0 over ``diversity_decay_steps`` steps (the
equation variant) and the BLEU bonus only for the first ``bleu_steps`` steps, as the official gate does. The
official BLEU variant averages the two directions of sentence-BLEU with its own 5-gram weights; we use sacrebleu's
sentence BLEU of y_i against each sibling (one direction, exponential smoothing).
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np

# An equation is an arithmetic expression followed by "= <number>", e.g. "12+7=19" or "19 + 30 = 49".
_EQUATION = re.compile(r"(\d+(?:\s*[-+*/x×÷]\s*\d+)+\s*=\s*-?\d+)")


def extract_equations(text: str) -> list[str]:
    """Equations in ``text`` with whitespace removed, in order (duplicates kept)."""
    return [re.sub(r"\s+", "", m) for m in _EQUATION.findall(text)]


def novel_equation_fraction(texts: Sequence[str]) -> np.ndarray:
    """D_i = |{equations of y_i not present in any sibling y_j, j != i}| / |equations of y_i| (0 if none).

    Args:
        texts: the n rollouts of one group.
    Returns:
        (n,) float array in [0, 1].
    """
    eqs = [set(extract_equations(t)) for t in texts]
    out = np.zeros(len(texts))
    for i, own in enumerate(eqs):
        if not own:
            continue
        others = set().union(*(e for j, e in enumerate(eqs) if j != i))
        out[i] = len(own - others) / len(own)
    return out


def cosine_decay(step: int, decay_steps: int | None) -> float:
    """0.5 * (1 + cos(pi * min(step, T) / T)); 1 when ``decay_steps`` is None or 0 (no decay)."""
    if not decay_steps:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(step, decay_steps) / decay_steps))


def equation_diversity_bonus(
    texts: Sequence[str], rewards: Sequence[float], step: int, *, scale: float, cap: float = 0.68,
    decay_steps: int | None = None,
) -> np.ndarray:
    """DIVER equation variant: bonus_i = min(D_i, cap) * scale * group_acc * r_i * cos_decay(step).

    Only correct rollouts (r_i = 1) earn it, and more so in groups that are mostly solved (group_acc).
    Args: texts, rewards: one group's n rollouts and their {0,1} scores. Returns: (n,) bonuses.
    """
    r = np.asarray(rewards, dtype=float)
    d = np.minimum(novel_equation_fraction(texts), cap)
    return d * scale * r.mean() * r * cosine_decay(step, decay_steps)


def self_bleu_diversity(texts: Sequence[str]) -> np.ndarray:
    """d_i = 1 - mean_{j != i} sentenceBLEU(hypothesis y_i, reference y_j) / 100 (sacrebleu's sentence BLEU,
    exponential smoothing). A group of one has d = 0. Returns (n,) in [0, 1]."""
    from sacrebleu.metrics import BLEU

    n = len(texts)
    out = np.zeros(n)
    if n < 2:
        return out
    bleu = BLEU(effective_order=True)
    for i in range(n):
        scores = [bleu.sentence_score(texts[i], [texts[j]]).score / 100.0 for j in range(n) if j != i]
        out[i] = 1.0 - float(np.mean(scores))
    return out


def bleu_diversity_bonus(
    texts: Sequence[str], rewards: Sequence[float], step: int, *, scale: float, bleu_steps: int | None = None,
) -> np.ndarray:
    """DIVER BLEU variant: scale * (1 - mean pairwise BLEU) on all-correct groups while step < ``bleu_steps``
    (None = every step); zero elsewhere. Returns (n,) bonuses."""
    r = np.asarray(rewards, dtype=float)
    if (bleu_steps is not None and step >= bleu_steps) or len(r) == 0 or r.min() < 0.5:
        return np.zeros(len(r))
    return scale * self_bleu_diversity(texts)


def diversity_bonus(texts: Sequence[str], rewards: Sequence[float], step: int, settings) -> np.ndarray:
    """DIVER's bonus for one group, by ``settings.variant`` ("equation" | "bleu") of a ``DIVERSettings``.

    Args: texts, rewards: one group's n rollouts and their {0,1} scores. Returns (n,) bonuses.
    """
    if settings.variant == "equation":
        return equation_diversity_bonus(texts, rewards, step, scale=float(settings.diversity_scale),
                                        cap=float(settings.diversity_cap), decay_steps=settings.diversity_decay_steps)
    if settings.variant == "bleu":
        return bleu_diversity_bonus(texts, rewards, step, scale=float(settings.diversity_scale),
                                    bleu_steps=settings.bleu_steps)
    raise ValueError(f"unknown DIVER variant {settings.variant!r} (equation | bleu)")


diversity_bonus.formula = "1 (reward + sequence diversity bonus)"
diversity_bonus.direction = "uniform sequence-level diversity"
