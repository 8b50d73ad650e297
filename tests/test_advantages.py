import pytest
import torch

from rlrt.methods import group_advantages, linear_decay


def test_group_advantages_no_std():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    a = group_advantages(r, norm_by_std=False)
    # group means 0.5 and 0.25
    exp = torch.tensor([[0.5, -0.5, -0.5, 0.5], [0.75, -0.25, -0.25, -0.25]])
    assert torch.allclose(a, exp, atol=1e-7)


def test_group_advantages_std_unbiased():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    a = group_advantages(r, norm_by_std=True)
    # group 0: unbiased var = 4*0.25/3 = 1/3, std = 0.5773503 -> 0.5/(0.5773503+1e-6) = 0.8660239
    # group 1: unbiased var = (0.5625 + 3*0.0625)/3 = 0.25, std = 0.5 -> 0.75/0.500001 = 1.499997,
    #          0.25/0.500001 = 0.499999
    exp = torch.tensor([[0.8660239, -0.8660239, -0.8660239, 0.8660239],
                        [1.499997, -0.499999, -0.499999, -0.499999]])
    assert torch.allclose(a, exp, atol=1e-6)


def test_all_equal_group_is_zero():
    r = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    for norm in (False, True):
        assert torch.equal(group_advantages(r, norm_by_std=norm), torch.zeros(2, 3))


def test_single_sample_group_follows_verl():
    # verl: mean = 0, std = 1 for a group of size 1
    r = torch.tensor([[1.0], [0.0]])
    assert torch.equal(group_advantages(r, norm_by_std=False), torch.tensor([[1.0], [0.0]]))
    assert torch.allclose(group_advantages(r, norm_by_std=True), torch.tensor([[0.999999], [0.0]]), atol=1e-7)


def test_no_grad():
    r = torch.tensor([[1.0, 0.0]], requires_grad=True)
    assert not group_advantages(r, True).requires_grad


def test_linear_decay():
    assert linear_decay(0, 0.5, 30) == pytest.approx(0.5)
    assert linear_decay(15, 0.5, 30) == pytest.approx(0.25)
    assert linear_decay(30, 0.5, 30) == pytest.approx(0.0)
    assert linear_decay(45, 0.5, 30) == pytest.approx(0.0)
    assert linear_decay(100, 0.5, None) == 0.5
    assert linear_decay(100, 0.5, 0) == 0.5
