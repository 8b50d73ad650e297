"""The PPO update leaves out the rows that add nothing (``rlrt.methods.objectives.rows_with_loss``): a surrogate row
whose advantages are all 0 (a group whose rollouts all got the same reward) has a zero loss and a zero gradient,
so skipping its forward and backward must give the update the whole mini-batch gives, up to rounding; they still
count in the token-mean's denominator; a mini-batch of only such rows still steps the optimizer (weight decay and
Adam's moments move the weights, as a zero loss's backward would). A term on every token (KL, entropy bonus) or a
per-sequence aggregate keeps every row."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from rlrt.backends.local import ppo
from rlrt.methods.objectives import get_objective, rows_with_loss

from test_rl_engine import tiny  # noqa: F401 (fixture: a tiny trained model and tokenizer)

B, P, R = 8, 4, 6


def batch_with_idle_rows(model) -> ppo.UpdateBatch:
    """Rows 0-3 one group with mixed rewards (non-zero advantages), rows 4-7 a uniform group (advantage 0)."""
    gen = torch.Generator().manual_seed(0)
    V = model.config.vocab_size
    resp = torch.randint(3, V, (B, R), generator=gen)
    mask = torch.ones(B, R, dtype=torch.long)
    mask[1, 4:] = 0  # rows of different lengths
    mask[6, 3:] = 0
    adv = torch.tensor([0.5, -0.5, 0.5, -0.5, 0.0, 0.0, 0.0, 0.0])[:, None] * mask
    plan = get_objective("pg").plan(torch.ones(B), None, mask, None, None)
    return ppo.UpdateBatch(torch.randint(3, V, (B, P), generator=gen), torch.ones(B, P, dtype=torch.long), resp,
                           mask, -torch.rand(B, R, generator=gen) - 1, adv.float(), plan)


def run(model, batch, objective, cfg, seen=None, monkeypatch=None):
    model = copy.deepcopy(model)
    if seen is not None:
        real = ppo.shared_prefix_logits
        monkeypatch.setattr(ppo, "shared_prefix_logits",
                            lambda m, p_ids, *a: (seen.append(p_ids.shape[0]), real(m, p_ids, *a))[1])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    stats = ppo.ppo_update(model, opt, batch, objective, None, cfg)
    if monkeypatch is not None:
        monkeypatch.undo()
    return model, stats


def test_rows_with_loss_marks_non_zero_advantages_and_distillation():
    pg = get_objective("pg")
    plan = pg.plan(torch.ones(4), None, torch.ones(4, 3), None, None)
    adv = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.2, 0.0], [-1.0, -1.0, -1.0], [0.0, 0.0, 0.0]])
    assert rows_with_loss(pg, plan, adv).tolist() == [False, True, True, False]
    distil = dataclasses.replace(plan, pg_rows=torch.tensor([True, True, False, False]),
                                 distill_rows=torch.tensor([False, False, False, True]))
    assert rows_with_loss(pg, distil, adv).tolist() == [False, True, False, True]
    assert rows_with_loss(get_objective("pg_entropy"), plan, adv).all()  # a term on every token


@pytest.mark.parametrize("mini", [4, 8])
def test_skipping_idle_rows_gives_the_full_update(tiny, mini, monkeypatch):  # noqa: F811
    model, _ = tiny
    batch = batch_with_idle_rows(model)
    cfg = ppo.PPOConfig(rows_per_minibatch=mini, micro_batch=2, temperature=1.0)
    pg = get_objective("pg")
    dense = dataclasses.replace(pg, sparse=False)  # the same objective, every row run
    seen_sparse, seen_dense = [], []
    a, sa = run(model, batch, pg, cfg, seen_sparse, monkeypatch)
    b, sb = run(model, batch, dense, cfg, seen_dense, monkeypatch)
    assert sum(seen_sparse) == 4 and sum(seen_dense) == 8  # the uniform group's rows were not run
    assert len(sa["loss"]) == len(sb["loss"]) == 8 // mini  # every mini-batch stepped, the idle one too
    for x, y in zip(a.parameters(), b.parameters()):
        assert torch.allclose(x, y, atol=1e-6, rtol=1e-5), (x - y).abs().max()
    moved = max(float((x - y).detach().abs().max()) for x, y in zip(a.parameters(), model.parameters()))
    assert moved > 1e-4  # the update did something
    assert sa["loss"] == pytest.approx(sb["loss"], abs=1e-6)


def test_a_minibatch_of_idle_rows_steps_on_zero_gradients(tiny, monkeypatch):  # noqa: F811
    model, _ = tiny
    batch = batch_with_idle_rows(model)
    cfg = ppo.PPOConfig(rows_per_minibatch=4, micro_batch=2, temperature=1.0)
    idle = dataclasses.replace(batch, token_adv=torch.zeros(B, R))
    seen = []
    a, sa = run(model, idle, get_objective("pg"), cfg, seen, monkeypatch)
    b, sb = run(model, idle, dataclasses.replace(get_objective("pg"), sparse=False), cfg)
    assert seen == [] and sa["loss"] == [0.0, 0.0] and sa["grad_norm"] == [0.0, 0.0]
    assert sa["clip_frac"] == [] and len(sb["clip_frac"]) == 4  # statistics only over the rows that were run
    for x, y, z in zip(a.parameters(), b.parameters(), model.parameters()):
        assert torch.equal(x, y)  # weight decay on zero gradients: exactly the full pass's step
    assert any(not torch.equal(x, z) for x, z in zip(a.parameters(), model.parameters()))


@pytest.mark.parametrize("cfg", [ppo.PPOConfig(4, 2, 1.0, kl_coef=0.1),
                                 ppo.PPOConfig(4, 2, 1.0, loss_agg="seq-mean-token-mean")],
                         ids=["kl", "seq-mean"])
def test_terms_over_every_row_keep_every_row(tiny, cfg, monkeypatch):  # noqa: F811
    model, _ = tiny
    batch = batch_with_idle_rows(model)
    if cfg.kl_coef:
        batch = dataclasses.replace(batch, ref_logp=batch.old_logp + 0.1)
    seen = []
    run(model, batch, get_objective("pg"), cfg, seen, monkeypatch)
    assert sum(seen) == 8
