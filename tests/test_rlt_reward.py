"""RLT's reward (Eq. 3-5) on hand-made log-prob tensors."""

from __future__ import annotations

import math

import pytest
import torch

from rlrt.methods.rlt_reward import (
    kl_reward, mean_plus_extreme, rlt_advantages, rlt_reward, solution_reward, token_kl,
)


def test_r_ss_mean_plus_alpha_min_over_solution_tokens():
    logp = torch.tensor([[-0.1, -0.5, -2.0, -9.0], [-1.0, -1.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])  # the -9.0 is padding and must be ignored
    r = solution_reward(logp, mask, alpha=0.01)
    assert r[0] == pytest.approx((-0.1 - 0.5 - 2.0) / 3 + 0.01 * -2.0)
    assert r[1] == pytest.approx(-1.0 + 0.01 * -1.0)
    assert solution_reward(logp, mask, alpha=0.0)[0] == pytest.approx(-2.6 / 3)


def test_r_kl_mean_plus_alpha_max_over_explanation_tokens():
    kl = torch.tensor([[0.2, 0.0, 1.0, 50.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    assert kl_reward(kl, mask, alpha=0.5)[0] == pytest.approx(1.2 / 3 + 0.5 * 1.0)


def test_empty_rows_give_zero_and_bad_reduction_raises():
    assert mean_plus_extreme(torch.ones(1, 3), torch.zeros(1, 3), 0.1, "min")[0] == 0
    with pytest.raises(ValueError):
        mean_plus_extreme(torch.ones(1, 3), torch.ones(1, 3), 0.1, "median")


def test_token_kl_is_teacher_to_student_by_hand():
    pt, ps = [0.9, 0.1], [0.5, 0.5]
    t = torch.tensor([[pt]]).log()
    s = torch.tensor([[ps]]).log()
    want = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)  # KL(teacher || student)
    assert token_kl(t, s)[0, 0] == pytest.approx(want, abs=1e-6)
    assert token_kl(t, t)[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert token_kl(s, t)[0, 0] != pytest.approx(want, abs=1e-3)  # direction matters


def test_total_reward_lambda_and_missing_tag_penalty():
    r_ss = torch.tensor([-0.5, -0.5, -3.0])
    r_kl = torch.tensor([0.1, 0.1, 0.0])
    ok = torch.tensor([True, False, True])
    r = rlt_reward(r_ss, r_kl, ok, lam=3.0)
    assert r.tolist() == pytest.approx([-0.5 - 0.3, -1.0, -3.0])
    assert rlt_reward(r_ss, r_kl, ok, lam=0.0)[0] == pytest.approx(-0.5)


def test_advantage_uses_1e4_and_unbiased_std():
    r = torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    a = rlt_advantages(r)
    assert a[0].tolist() == pytest.approx([-1 / 1.0001, 0.0, 1 / 1.0001])  # std([1,2,3], unbiased) = 1
    assert a[1].tolist() == [0.0, 0.0, 0.0]
