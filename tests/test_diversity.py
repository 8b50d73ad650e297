"""DIVER's two diversity rewards on hand-made groups."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from rlrt.methods.diversity import (
    bleu_diversity_bonus, cosine_decay, diversity_bonus, equation_diversity_bonus, extract_equations,
    novel_equation_fraction, self_bleu_diversity,
)
from rlrt.methods.settings import DIVERSettings


def test_extract_equations():
    assert extract_equations("12+7=19, 19 + 30 = 49. So \\boxed{49}") == ["12+7=19", "19+30=49"]
    assert extract_equations("no math here") == []


def test_novel_equation_fraction_by_hand():
    texts = ["1+2=3, 3+4=7", "1+2=3, 3+5=8", "2+4=6", "the answer is 7"]
    # rollout 0: {1+2=3 (shared with 1), 3+4=7 (novel)} -> 1/2; rollout 1: 3+5=8 novel -> 1/2; 2: 1/1; 3: none -> 0
    assert novel_equation_fraction(texts).tolist() == [0.5, 0.5, 1.0, 0.0]


def test_equation_bonus_by_hand():
    texts = ["1+2=3, 3+4=7", "1+2=3, 3+5=8", "2+4=6", "2+4=6"]
    rewards = [1, 1, 1, 0]
    # D = [0.5, 0.5, 0 (2+4=6 appears in a sibling), 0]; group_acc 0.75; only correct rollouts; cap 0.68 no-op
    got = equation_diversity_bonus(texts, rewards, 0, scale=2.0, cap=0.68, decay_steps=None)
    assert np.allclose(got, [0.5 * 2 * 0.75, 0.5 * 2 * 0.75, 0.0, 0.0])
    # cap: a fully novel rollout (D = 1) is capped at 0.68
    got = equation_diversity_bonus(["9+9=18", "1+1=2"], [1, 1], 0, scale=1.0, cap=0.68)
    assert np.allclose(got, [0.68, 0.68])
    # cosine decay: half-way through the decay the bonus halves, at the end it is zero
    half = equation_diversity_bonus(["9+9=18", "1+1=2"], [1, 1], 5, scale=1.0, cap=0.68, decay_steps=10)
    assert np.allclose(half, [0.34, 0.34])
    assert np.allclose(equation_diversity_bonus(["9+9=18", "1+1=2"], [1, 1], 10, scale=1.0, decay_steps=10), 0)


def test_cosine_decay():
    assert cosine_decay(0, 10) == 1.0 and cosine_decay(10, 10) == pytest.approx(0.0)
    assert cosine_decay(5, 10) == pytest.approx(0.5) and cosine_decay(20, 10) == pytest.approx(0.0)
    assert cosine_decay(7, None) == 1.0


def test_self_bleu_diversity():
    same = self_bleu_diversity(["the sum is 12 + 5 = 17", "the sum is 12 + 5 = 17"])
    assert np.allclose(same, 0.0, atol=1e-6)
    diff = self_bleu_diversity(["alpha beta gamma delta", "one two three four"])
    assert np.all(diff > 0.9)
    from sacrebleu.metrics import BLEU

    texts = ["a b c d e", "a b c x y", "p q r s t"]
    bleu = BLEU(effective_order=True)
    want0 = 1 - np.mean([bleu.sentence_score(texts[0], [texts[j]]).score / 100 for j in (1, 2)])
    assert self_bleu_diversity(texts)[0] == pytest.approx(want0)


def test_bleu_bonus_only_all_correct_groups_and_early_steps():
    texts = ["alpha beta gamma delta", "one two three four"]
    assert np.all(bleu_diversity_bonus(texts, [1, 1], 0, scale=0.5, bleu_steps=3) > 0.45)
    assert np.all(bleu_diversity_bonus(texts, [1, 0], 0, scale=0.5, bleu_steps=3) == 0)
    assert np.all(bleu_diversity_bonus(texts, [1, 1], 3, scale=0.5, bleu_steps=3) == 0)
    with pytest.raises(ValueError):
        diversity_bonus(texts, [1, 1], 0, replace(DIVERSettings(), variant="nope"))
