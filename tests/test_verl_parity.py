"""Parity with verl 0.9 (the paper-scale engine): the same tensors through our functions and ``core_algos``.

verl is a test extra (``pip install -e .[test]``); agreement to 1e-6 on random inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

core_algos = pytest.importorskip("verl.trainer.ppo.core_algos")

from rlrt.methods.advantages import group_advantages  # noqa: E402
from rlrt.methods.losses import agg_loss, clipped_surrogate, entropy_bonus, entropy_from_logits  # noqa: E402

ATOL = 1e-6


def actor_config(clip_low=0.2, clip_high=0.28, clip_ratio_c=3.0):
    from verl.workers.config import ActorConfig

    return ActorConfig(strategy="fsdp", clip_ratio_low=clip_low, clip_ratio_high=clip_high, clip_ratio_c=clip_ratio_c,
                       ppo_micro_batch_size_per_gpu=1, ppo_mini_batch_size=1, rollout_n=1)


def random_batch(seed=0, n=12, t=9):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(n, t, generator=g, dtype=torch.float64) * 3
    logp = old + torch.randn(n, t, generator=g, dtype=torch.float64) * 0.4  # ratios around [0.3, 3]
    adv = torch.randn(n, t, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, t + 1, (n,), generator=g)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).to(torch.float64)
    mask[3] = 0  # one fully masked sequence
    return logp, old, adv, mask


@pytest.mark.parametrize("norm", [True, False])
def test_grpo_advantage_matches_verl(norm):
    g = torch.Generator().manual_seed(1)
    G, n, T = 5, 4, 6
    rewards = torch.randint(0, 2, (G, n), generator=g).to(torch.float32)
    rewards[0] = torch.tensor([0.3, 1.7, -0.2, 1.0])  # non-binary scores too
    rewards[1] = 1.0  # a constant group: std 0
    ours = group_advantages(rewards, norm_by_std=norm).reshape(-1)
    token_rewards = torch.zeros(G * n, T)
    token_rewards[:, -1] = rewards.reshape(-1)
    mask = torch.ones(G * n, T)
    index = np.repeat(np.arange(G), n)
    theirs, _ = core_algos.compute_grpo_outcome_advantage(token_rewards, mask, index, epsilon=1e-6,
                                                          norm_adv_by_std_in_grpo=norm)
    assert torch.allclose(ours[:, None].expand(-1, T), theirs, atol=ATOL)


def test_grpo_advantage_singleton_group_matches_verl():
    rewards = torch.tensor([[0.7]])
    ours = group_advantages(rewards, norm_by_std=True).reshape(-1)
    theirs, _ = core_algos.compute_grpo_outcome_advantage(torch.tensor([[0.0, 0.7]]), torch.ones(1, 2),
                                                          np.array([0]), norm_adv_by_std_in_grpo=True)
    assert torch.allclose(ours, theirs[:, 0], atol=ATOL)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"])
@pytest.mark.parametrize("clip_c", [3.0, None])
def test_clipped_policy_loss_matches_verl_vanilla(mode, clip_c):
    logp, old, adv, mask = random_batch()
    ours, stats = clipped_surrogate(logp, old, adv, mask, 0.2, 0.28, mode, clip_ratio_c=clip_c)
    # verl always applies dual-clip; a huge bound switches it off
    theirs, metrics = core_algos.compute_policy_loss_vanilla(
        old, logp, adv, mask, loss_agg_mode=mode, config=actor_config(clip_ratio_c=clip_c or 1e12))
    assert float(ours) == pytest.approx(float(theirs), abs=ATOL)
    assert stats["clip_frac"] == pytest.approx(metrics["actor/pg_clipfrac"], abs=ATOL)
    assert stats["approx_kl"] == pytest.approx(metrics["actor/ppo_kl"], abs=ATOL)


def test_registered_policy_loss_is_the_vanilla_one():
    assert core_algos.get_policy_loss_fn("vanilla") is core_algos.compute_policy_loss_vanilla


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"])
def test_agg_loss_matches_verl(mode):
    _, _, loss_mat, mask = random_batch(seed=3)
    assert float(agg_loss(loss_mat, mask, mode)) == pytest.approx(float(core_algos.agg_loss(loss_mat, mask, mode)),
                                                                  abs=ATOL)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_entropy_term_matches_verl(mode):
    from verl.utils.torch_functional import entropy_from_logits as verl_entropy

    g = torch.Generator().manual_seed(2)
    logits = torch.randn(6, 5, 11, generator=g, dtype=torch.float64) * 3
    mask = (torch.rand(6, 5, generator=g) > 0.3).to(torch.float64)
    assert torch.allclose(entropy_from_logits(logits), verl_entropy(logits), atol=ATOL)
    ours = entropy_bonus(entropy_from_logits(logits), mask, coeff=0.01, agg=mode)
    theirs = -0.01 * core_algos.compute_entropy_loss(logits, mask, loss_agg_mode=mode)  # pg - coeff * entropy
    assert float(ours) == pytest.approx(float(theirs), abs=ATOL)


def test_kl_penalty_low_var_matches_verl():
    """RLT teacher's beta term: our k3 estimator equals verl's ``kl_penalty(..., "low_var_kl")``, including its clamps
    (log ratios beyond +-20, values beyond 10)."""
    from rlrt.methods.losses import kl_penalty_low_var

    old, logp, _, _ = random_batch(seed=5)
    ref = old.clone()
    ref[0, :3] = torch.tensor([-40.0, 30.0, 0.0], dtype=ref.dtype)  # extreme ratios hit both clamps
    ours = kl_penalty_low_var(logp, ref)
    theirs = core_algos.kl_penalty(logp, ref, "low_var_kl")
    assert torch.allclose(ours, theirs, atol=ATOL)
    assert (ours >= 0).all()
