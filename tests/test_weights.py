import math

import torch

from rlrt.methods import log_ratio, reweight_advantages, rlrt_weight, rlsd_weight


def _delta():
    t = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]))
    s = torch.log(torch.tensor([[0.25, 0.5], [0.25, 0.5], [0.25, 0.5]]))
    return log_ratio(t, s)  # [[log2, 0]] * 3


def test_log_ratio_value():
    d = _delta()
    assert torch.allclose(d, torch.tensor([[math.log(2), 0.0]] * 3), atol=1e-7)


def test_rlsd_rlrt_hand_values():
    d = _delta()
    adv = torch.tensor([1.5, -0.7, 0.0])
    w_sd = rlsd_weight(d, adv)
    w_rt = rlrt_weight(d, adv)
    assert torch.allclose(w_sd, torch.tensor([[2.0, 1.0], [0.5, 1.0], [1.0, 1.0]]), atol=1e-6)
    assert torch.allclose(w_rt, torch.tensor([[0.5, 1.0], [2.0, 1.0], [1.0, 1.0]]), atol=1e-6)


def test_rlrt_is_inverse_of_rlsd():
    g = torch.Generator().manual_seed(0)
    d = torch.randn(4, 5, generator=g)
    adv = torch.tensor([1.0, -2.0, 0.0, 0.3])
    assert torch.allclose(rlrt_weight(d, adv), 1.0 / rlsd_weight(d, adv), rtol=1e-6)


def test_reweight_hand_values_and_gate():
    adv = torch.tensor([1.0, -0.5])
    w = torch.tensor([[2.0, 0.5, 1.0], [2.0, 0.5, 1.0]])
    # clip(w, 0.8, 1.2) = [1.2, 0.8, 1.0]; factor 0.5 + 0.5*w = [1.1, 0.9, 1.0]
    out = reweight_advantages(adv, w, lam=0.5, eps_w=0.2, apply_mask=torch.tensor([True, True]))
    assert torch.allclose(out, torch.tensor([[1.1, 0.9, 1.0], [-0.55, -0.45, -0.5]]), atol=1e-6)
    gated = reweight_advantages(adv, w, lam=0.5, eps_w=0.2, apply_mask=torch.tensor([True, False]))
    assert torch.allclose(gated[0], torch.tensor([1.1, 0.9, 1.0]), atol=1e-6)
    assert torch.equal(gated[1], torch.tensor([-0.5, -0.5, -0.5]))


def test_lambda_zero_is_grpo():
    adv = torch.tensor([0.8660239, -0.8660239, 0.3])
    w = torch.tensor([[3.0, 0.1], [1.7, 0.2], [0.9, 1.1]])
    out = reweight_advantages(adv, w, lam=0.0, eps_w=0.5, apply_mask=torch.tensor([True, True, False]))
    assert torch.equal(out, adv.unsqueeze(-1).expand(3, 2))


def test_clip_bounds():
    adv = torch.tensor([1.0])
    w = torch.tensor([[100.0, 1e-4, 1.1]])
    out = reweight_advantages(adv, w, lam=1.0, eps_w=0.5, apply_mask=torch.tensor([True]))
    assert torch.allclose(out, torch.tensor([[1.5, 0.5, 1.1]]), atol=1e-6)
    # eps_w > 1: lower bound clamped at 0, so small weights pass through
    out = reweight_advantages(adv, w, lam=1.0, eps_w=1.5, apply_mask=torch.tensor([True]))
    assert torch.allclose(out, torch.tensor([[2.5, 1e-4, 1.1]]), atol=1e-7)


def test_no_gradient_through_delta():
    t = torch.log(torch.tensor([[0.5, 0.3]])).requires_grad_(True)
    s = torch.log(torch.tensor([[0.25, 0.6]])).requires_grad_(True)
    d = log_ratio(t, s)
    assert not d.requires_grad
    w = rlrt_weight(d, torch.tensor([1.0]))
    assert not w.requires_grad
    adv = torch.tensor([1.0], requires_grad=True)
    out = reweight_advantages(adv, rlsd_weight(log_ratio(t, s), adv), 0.5, 0.2, torch.tensor([True]))
    out.sum().backward()
    assert t.grad is None and s.grad is None


def test_mixed_weight_is_the_bracket_of_eq7():
    from rlrt.methods.weights import mixed_weight

    w = torch.tensor([[0.1, 1.0, 1.3, 5.0]])
    # lam = 0.5, eps_w = 0.2: clip -> [0.8, 1.0, 1.2, 1.2]; 0.5 + 0.5 * clip
    assert torch.allclose(mixed_weight(w, 0.5, 0.2), torch.tensor([[0.9, 1.0, 1.1, 1.1]]))
    # eps_w > 1: the lower bound is 0, not negative
    assert torch.allclose(mixed_weight(torch.tensor([[0.0]]), 1.0, 2.0), torch.tensor([[0.0]]))
