import math

import pytest
import torch

from rlrt.methods import agg_loss, clipped_surrogate, entropy_from_logits, token_logprobs

# ratios per row: [1.5 (above 1.28), 0.5 (below 0.8), 1.1 (inside)]; old_logp = 0.
RATIOS = torch.tensor([[1.5, 0.5, 1.1], [1.5, 0.5, 1.1]])
LOGP = torch.log(RATIOS)
OLD = torch.zeros(2, 3)
ADV = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])
# pg = max(-A r, -A clip(r, 0.8, 1.28)):
#  row 0 (A=+1): max(-1.5,-1.28)=-1.28 (clipped), max(-0.5,-0.8)=-0.5, -1.1  -> sum -2.88
#  row 1 (A=-1): max(1.5, 1.28)=1.5, max(0.5, 0.8)=0.8 (clipped), 1.1        -> sum  3.4
PG = torch.tensor([[-1.28, -0.5, -1.1], [1.5, 0.8, 1.1]])


def test_clipped_surrogate_full_mask():
    mask = torch.ones(2, 3)
    loss, st = clipped_surrogate(LOGP, OLD, ADV, mask)
    # (-2.88 + 3.4) / 6 = 0.52 / 6
    assert loss.item() == pytest.approx(0.0866667, abs=1e-6)
    assert st["clip_frac"] == pytest.approx(2 / 6)
    # approx_kl = mean(old - logp) = -(2*log(1.5*0.5*1.1))/6 = -log(0.825)/3
    assert st["approx_kl"] == pytest.approx(0.0641240, abs=1e-6)
    assert st["ratio_mean"] == pytest.approx(1.0333333, abs=1e-6)
    assert st["ratio_max"] == pytest.approx(1.5, abs=1e-6)
    assert all(isinstance(v, float) for v in st.values())


def test_clipped_surrogate_gradient_zero_on_clipped():
    logp = LOGP.clone().requires_grad_(True)
    loss, _ = clipped_surrogate(logp, OLD, ADV, torch.ones(2, 3))
    loss.backward()
    # d/dlogp(-A r) = -A r / 6 on unclipped tokens; 0 on clipped ones
    exp = torch.tensor([[0.0, -0.5, -1.1], [1.5, 0.0, 1.1]]) / 6
    assert torch.allclose(logp.grad, exp, atol=1e-6)


def test_ragged_modes():
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    # token-mean: (-2.88 + 1.5)/4 = -0.345
    assert agg_loss(PG, mask, "token-mean").item() == pytest.approx(-0.345, abs=1e-6)
    # seq-mean-token-sum: (-2.88 + 1.5)/2 = -0.69
    assert agg_loss(PG, mask, "seq-mean-token-sum").item() == pytest.approx(-0.69, abs=1e-6)
    # seq-mean-token-mean: (-2.88/3 + 1.5/1)/2 = (-0.96 + 1.5)/2 = 0.27
    assert agg_loss(PG, mask, "seq-mean-token-mean").item() == pytest.approx(0.27, abs=1e-6)
    loss, st = clipped_surrogate(LOGP, OLD, ADV, mask)
    assert loss.item() == pytest.approx(-0.345, abs=1e-6)
    assert st["clip_frac"] == pytest.approx(0.25)  # only row 0 token 0 is clipped among 4


def test_empty_rows_and_all_zero_mask():
    mask = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    assert agg_loss(PG, mask, "seq-mean-token-mean").item() == pytest.approx(-0.96, abs=1e-6)
    assert agg_loss(PG, mask, "seq-mean-token-sum").item() == pytest.approx(-2.88, abs=1e-6)
    zero = torch.zeros(2, 3)
    for mode in ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean"):
        v = agg_loss(PG, zero, mode)
        assert v.item() == 0.0
    loss, st = clipped_surrogate(LOGP, OLD, ADV, zero)
    assert loss.item() == 0.0 and not any(math.isnan(v) for v in st.values())
    with pytest.raises(ValueError):
        agg_loss(PG, mask, "bogus")


def test_entropy():
    assert torch.allclose(entropy_from_logits(torch.zeros(2, 3, 7)), torch.full((2, 3), 1.9459101), atol=1e-6)
    big = torch.tensor([[[1000.0, 1000.0]]])
    assert torch.allclose(entropy_from_logits(big), torch.tensor([[0.6931472]]), atol=1e-6)
    peaked = torch.tensor([[[1e4, 0.0, float("-inf")]]])
    assert entropy_from_logits(peaked).abs().item() < 1e-6


def test_token_logprobs_temperature():
    logits = torch.tensor([[[0.0, math.log(3.0)]]])
    ids = torch.tensor([[1]])
    # T=1: p = [0.25, 0.75] -> log 0.75
    assert token_logprobs(logits, ids).item() == pytest.approx(-0.2876821, abs=1e-6)
    # T=2: p1 = sqrt3 / (1 + sqrt3) = 0.6339746 -> log = -0.4557464
    assert token_logprobs(logits, ids, temperature=2.0).item() == pytest.approx(-0.4557464, abs=1e-6)


def test_entropy_bonus_sign_raises_entropy():
    from rlrt.methods.losses import entropy_bonus, entropy_from_logits

    logits = torch.tensor([[[2.0, 0.0, -1.0]]], requires_grad=True)
    mask = torch.ones(1, 1)
    h = entropy_from_logits(logits)
    loss = entropy_bonus(h, mask, 0.1)
    assert float(loss.detach()) == pytest.approx(-0.1 * float(h.detach()))
    loss.backward()
    with torch.no_grad():
        assert entropy_from_logits(logits - 1.0 * logits.grad) > h  # descending the loss raises the entropy


def test_dual_clip_bounds_negative_advantage_loss():
    from rlrt.methods.losses import surrogate_tokens

    logp = torch.tensor([[math.log(5.0), math.log(5.0), math.log(0.5)]])
    old = torch.zeros(1, 3)
    adv = torch.tensor([[-1.0, 1.0, -1.0]])
    pg, _, _ = surrogate_tokens(logp, old, adv, 0.2, 0.28, clip_ratio_c=3.0)
    # ratio 5, A = -1: max(5, 1.28) = 5, dual-clip min(5, 3) = 3; A = +1: max(-5, -1.28) = -1.28; ratio 0.5, A = -1:
    # max(0.5, 0.8) = 0.8 (below 3, unchanged)
    assert torch.allclose(pg, torch.tensor([[3.0, -1.28, 0.8]]))
    pg0, _, _ = surrogate_tokens(logp, old, adv, 0.2, 0.28, clip_ratio_c=None)
    assert torch.allclose(pg0, torch.tensor([[5.0, -1.28, 0.8]]))
    with pytest.raises(ValueError):
        surrogate_tokens(logp, old, adv, clip_ratio_c=1.0)
