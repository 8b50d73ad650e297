"""SDPO's top-K generalized JSD and SRPO's routing / entropy weights against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from rlrt.methods.distill import (
    clamped_is_ratio, generalized_jsd, kl_div, sdpo_token_loss, srpo_entropy_weights, srpo_route, topk_distributions,
)


def logp(*p):
    return torch.tensor(p, dtype=torch.float64).log()


def test_kl_by_hand():
    s, t = logp(0.5, 0.5), logp(0.9, 0.1)
    want = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert float(kl_div(s, t)) == pytest.approx(want, abs=1e-12)
    assert float(kl_div(s, s)) == pytest.approx(0.0, abs=1e-12)


def test_jsd_endpoints_are_the_two_kls():
    s, t = logp(0.7, 0.2, 0.1), logp(0.1, 0.3, 0.6)
    assert float(generalized_jsd(s, t, 0.0)) == pytest.approx(float(kl_div(t, s)), abs=1e-12)  # forward KL(T||S)
    assert float(generalized_jsd(s, t, 1.0)) == pytest.approx(float(kl_div(s, t)), abs=1e-12)  # reverse KL(S||T)


def test_jsd_half_by_hand_and_bounds():
    ps, pt = [0.7, 0.2, 0.1], [0.1, 0.3, 0.6]
    m = [(a + b) / 2 for a, b in zip(ps, pt)]
    want = 0.5 * sum(a * math.log(a / c) for a, c in zip(ps, m)) + 0.5 * sum(b * math.log(b / c) for b, c in zip(pt, m))
    got = float(generalized_jsd(logp(*ps), logp(*pt), 0.5))
    assert got == pytest.approx(want, abs=1e-12)
    assert 0 < got <= math.log(2)
    # alpha = 0.25: M = 0.75 S + 0.25 T, JSD = 0.75 KL(S||M) + 0.25 KL(T||M)
    m = [0.75 * a + 0.25 * b for a, b in zip(ps, pt)]
    want = 0.75 * sum(a * math.log(a / c) for a, c in zip(ps, m)) + 0.25 * sum(b * math.log(b / c) for b, c in zip(pt, m))
    assert float(generalized_jsd(logp(*ps), logp(*pt), 0.25)) == pytest.approx(want, abs=1e-12)
    assert float(generalized_jsd(logp(*ps), logp(*ps), 0.5)) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        generalized_jsd(logp(*ps), logp(*pt), 1.5)


def test_topk_support_is_the_students_and_tail_holds_the_rest():
    # V = 4; student prefers tokens 2 and 0; teacher prefers 3.
    ps = torch.tensor([0.3, 0.1, 0.5, 0.1], dtype=torch.float64)
    pt = torch.tensor([0.2, 0.1, 0.1, 0.6], dtype=torch.float64)
    s_log, t_log, idx = topk_distributions(ps.log()[None, None], pt.log()[None, None], k=2, tail=True)
    assert idx[0, 0].tolist() == [2, 0]
    assert torch.allclose(s_log[0, 0].exp(), torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), atol=1e-6)
    assert torch.allclose(t_log[0, 0].exp(), torch.tensor([0.1, 0.2, 0.7], dtype=torch.float64), atol=1e-6)
    # without the tail both are renormalised over the K tokens
    s_log, t_log, _ = topk_distributions(ps.log()[None, None], pt.log()[None, None], k=2, tail=False)
    assert torch.allclose(s_log[0, 0].exp(), torch.tensor([0.5 / 0.8, 0.3 / 0.8], dtype=torch.float64), atol=1e-6)
    assert torch.allclose(t_log[0, 0].exp(), torch.tensor([1 / 3, 2 / 3], dtype=torch.float64), atol=1e-6)


def test_topk_temperature_scales_both_logits():
    zs, zt = torch.randn(1, 3, 7), torch.randn(1, 3, 7)
    a = topk_distributions(zs, zt, 7, tail=True, temperature=2.0)
    b = topk_distributions(zs / 2.0, zt / 2.0, 7, tail=True)
    assert torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1])


def test_is_ratio_is_detached_and_clamped_at_two():
    lp = torch.tensor([[0.0, math.log(3.0), math.log(0.5)]], requires_grad=True)
    r = clamped_is_ratio(lp, torch.zeros(1, 3), 2.0)
    assert torch.allclose(r, torch.tensor([[1.0, 2.0, 0.5]]))
    assert not r.requires_grad


def test_sdpo_token_loss_is_jsd_times_is_ratio_and_pulls_student_to_teacher():
    torch.manual_seed(0)
    zs = torch.randn(2, 3, 5, requires_grad=True)
    zt = torch.randn(2, 3, 5)
    lp = torch.log_softmax(zs, -1)[..., 0]
    old = lp.detach() - math.log(3.0)  # ratio 3 -> clamped to 2
    loss = sdpo_token_loss(zs, zt, lp, old, topk=5, tail=True, alpha=0.5, is_clip=2.0)
    s, t, _ = topk_distributions(zs, zt, 5, True)
    assert torch.allclose(loss, 2.0 * generalized_jsd(s, t, 0.5))
    loss.sum().backward()
    with torch.no_grad():  # one gradient step lowers the divergence
        zs2 = zs - 0.5 * zs.grad
        s2, _, _ = topk_distributions(zs2, zt, 5, True)
        assert generalized_jsd(s2, t, 0.5).sum() < generalized_jsd(s, t, 0.5).sum()


def test_srpo_routing_mixed_all_wrong_all_right():
    # groups of 3: mixed [1,0,0], all wrong [0,0,0], all right [1,1,1]; has_context from the sibling rule
    rewards = torch.tensor([1.0, 0, 0, 0, 0, 0, 1, 1, 1])
    has_ctx = torch.tensor([False, True, True, False, False, False, True, True, True])
    pg, dist = srpo_route(rewards, has_ctx)
    assert pg.tolist() == [True, False, False, False, False, False, True, True, True]
    assert dist.tolist() == [False, True, True, False, False, False, False, False, False]
    assert not (pg & dist).any()


def test_srpo_entropy_weights_by_hand():
    ent = torch.tensor([[0.0, 1.0, 5.0], [2.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    w = srpo_entropy_weights(ent, mask, beta=1.0)
    raw = torch.tensor([1.0, math.exp(-1), math.exp(-2)])
    want = raw / raw.mean()
    assert torch.allclose(w[mask.bool()], want)
    assert float(w[mask.bool()].mean()) == pytest.approx(1.0)
    assert (w[~mask.bool()] == 0).all()
    assert torch.allclose(srpo_entropy_weights(ent, mask, 0.0)[mask.bool()], torch.ones(3))  # beta 0 = plain SDPO
    assert (srpo_entropy_weights(ent, torch.zeros_like(mask), 1.0) == 0).all()
