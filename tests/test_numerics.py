"""Numerics: uniform groups give exactly zero advantage (no NaN) for every registered method; a NaN / inf in the
advantages, logits, log-probs, loss or gradients skips that update (counted in ``nonfinite_skips``, logged with the
step and the method) instead of entering the weights -- in the policy RL, the LM trainer and the RLT teacher's RL."""

from __future__ import annotations

import copy
import logging
import math

import pytest
import torch

from rlrt.backends.local import ppo, rlt
from rlrt.backends.local import rl as engine
from rlrt.backends.local.lm import chat_example, train_lm
from rlrt.methods.losses import all_finite
from rlrt.methods.objectives import get_objective
from rlrt.methods.registry import METHODS, get_method
from rlrt.methods.shaping import TeacherScores, shape_advantages

from test_resume import ROWS as RLT_ROWS
from test_resume import fake_sample, model, teacher_rl_setup, tok  # noqa: F401 (fixtures)
from test_rl_engine import ROWS, alternating, make_cfg, tiny  # noqa: F401 (fixture)

NAN = float("nan")


def params(m) -> list[torch.Tensor]:
    return [p.detach().clone() for p in m.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_all_finite():
    assert all_finite(torch.zeros(3), torch.ones(2, 2), None, torch.tensor([1, 2]))
    assert all_finite()
    for bad in (NAN, float("inf"), -float("inf")):
        assert not all_finite(torch.zeros(3), torch.tensor([0.0, bad]))


# ---------------------------------------------------------------- uniform groups through shape_advantages

G, N, R = 2, 4, 6
MASK = torch.tensor([[1] * R] * 4 + [[1] * 3 + [0] * 3] * 4)  # (B, R): the second group's responses are shorter


def fake_teacher(contexts, kind, want_logp, want_entropy) -> TeacherScores:
    """A finite teacher view: seeded log-probs and entropies, a context where build_contexts gave one."""
    gen = torch.Generator().manual_seed(1)
    has = torch.tensor([c is not None for row in contexts for c in row])
    return TeacherScores(has, -torch.rand(G * N, R, generator=gen) if want_logp else None,
                         torch.rand(G * N, R, generator=gen) if want_entropy else None)


def shape(method: str, rewards: list[list[float]], texts: list[list[str]], **values):
    spec = get_method(method)
    gen = torch.Generator().manual_seed(0)
    old_logp, old_ent = -torch.rand(G * N, R, generator=gen), torch.rand(G * N, R, generator=gen)
    return shape_advantages(spec, spec.make_settings(values), torch.tensor(rewards), texts,
                            ["1 + 2 = 3. \\boxed{3}"] * G, old_logp, old_ent, MASK, 0, fake_teacher)


def finite_everywhere(sh) -> bool:
    return all_finite(sh.shaped_rewards, sh.adv, sh.token_adv, sh.weight, sh.plan.distill_weight,
                      sh.plan.loss_mask.float())


@pytest.mark.parametrize("norm", [False, True])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_all_correct_and_all_wrong_groups_give_zero_advantage(method, norm):
    """One all-correct and one all-wrong group of identical rollouts: A = 0 exactly, every token advantage 0 and
    nothing NaN (the std-normalised path divides 0 by 0 + eps)."""
    sh = shape(method, [[1.0] * N, [0.0] * N], [["2 + 3 = 5. \\boxed{5}"] * N, ["\\boxed{7}"] * N],
               norm_adv_by_std=norm)
    assert finite_everywhere(sh)
    assert torch.equal(sh.adv, torch.zeros(G * N))
    assert torch.equal(sh.token_adv, torch.zeros(G * N, R))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_uniform_groups_of_distinct_rollouts(method):
    """Distinct rollouts: the all-wrong group is still exactly 0 for every method; the all-correct one too, except
    for a method with a reward bonus (DIVER), whose bonus ranks the correct rollouts: finite, mean 0."""
    texts = [["1 + 1 = 2", "1 + 1 = 2, 2 + 3 = 5", "1 + 1 = 2, 3 + 3 = 6, 4 + 4 = 8", "9 + 9 = 18"],
             ["1 + 1 = 3", "2 + 2 = 5", "no equation", "7 + 7 = 15"]]
    sh = shape(method, [[1.0] * N, [0.0] * N], texts)
    assert finite_everywhere(sh)
    assert torch.equal(sh.adv[N:], torch.zeros(N)) and torch.equal(sh.token_adv[N:], torch.zeros(N, R))
    if get_method(method).reward_bonus is None:
        assert torch.equal(sh.adv[:N], torch.zeros(N))
    else:
        assert sh.adv[:N].abs().max() > 0 and abs(float(sh.adv[:N].sum())) < 1e-5


# ---------------------------------------------------------------- the guard in the policy RL update


def poison_logits(monkeypatch, which: set[int]) -> list[int]:
    """Make the update's forward pass number k (1-based) put a NaN in its logits for every k in ``which``."""
    real, calls = ppo.shared_prefix_logits, []

    def poisoned(*args):
        out = real(*args)
        calls.append(1)
        if len(calls) in which:
            out = out.clone()
            out[0, 0, 0] = NAN
        return out

    monkeypatch.setattr(ppo, "shared_prefix_logits", poisoned)
    return calls


def step(model, tok, method: str, grade=alternating):
    spec = get_method(method)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    teacher = copy.deepcopy(model) if spec.needs_teacher_logits else None
    # 2 questions x 4 rollouts, one question per mini-batch, 4 rows per micro-batch: two mini-batches of one pass
    m = engine.rl_step(model, tok, opt, spec, spec.default_settings(), make_cfg(), ROWS[:2], step=0, grade_fn=grade,
                       teacher_model=teacher)
    return m, opt


@pytest.mark.parametrize("method", sorted(METHODS))
def test_nan_logits_in_every_minibatch_leave_the_weights_untouched(tiny, method, monkeypatch, caplog):
    model, tok = tiny
    poison_logits(monkeypatch, {1, 2})
    before = params(model)
    with caplog.at_level(logging.WARNING, logger="rlrt.ppo"):
        m, opt = step(model, tok, method)
    assert m["nonfinite_skips"] == 2
    assert same(before, params(model)) and not opt.state  # no optimizer step at all
    assert m["loss"] == 0.0 and m["grad_norm"] == 0.0  # means over the applied mini-batches: none
    assert "non-finite logits/log-probs in the mini-batch of rows 0:4" in caplog.text
    assert "non-finite logits/log-probs in the mini-batch of rows 4:8" in caplog.text


@pytest.mark.parametrize("method", sorted(METHODS))
def test_nan_logits_skip_only_their_minibatch(tiny, method, monkeypatch):
    model, tok = tiny
    calls = poison_logits(monkeypatch, {1})
    before = params(model)
    m, opt = step(model, tok, method)
    assert m["nonfinite_skips"] == 1 and len(calls) == 2  # the second mini-batch still ran ...
    assert {float(s["step"]) for s in opt.state.values()} == {1.0}  # ... and took the step's only optimizer step
    after = params(model)
    assert all_finite(*after) and not same(before, after)
    assert math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"])


def test_nan_reward_is_caught_at_the_advantages_and_logged_with_step_and_method(tiny, caplog):
    model, tok = tiny
    calls = []

    def grade(texts, answers):
        calls.append(1)
        r = alternating(texts, answers)
        if len(calls) == 2:  # step 1: the first question's group gets a NaN score
            r[0] = NAN
        return r

    spec = get_method("grpo")
    with caplog.at_level(logging.WARNING):
        hist = engine.train(model, tok, ROWS, spec, spec.default_settings(), make_cfg(steps=3), grade,
                            progress=False)
    assert [h["nonfinite_skips"] for h in hist] == [0, 1, 0]
    assert "non-finite advantages in the mini-batch of rows 0:4" in caplog.text
    assert "rl:grpo step 1: 1 update(s) skipped on non-finite values" in caplog.text
    assert all_finite(*params(model))


def update_batch(model, B: int = 4, P: int = 3, R: int = 5) -> ppo.UpdateBatch:
    gen = torch.Generator().manual_seed(0)
    V = model.config.vocab_size
    resp, mask = torch.randint(3, V, (B, R), generator=gen), torch.ones(B, R, dtype=torch.long)
    plan = get_objective("pg").plan(torch.tensor([1.0, 0.0, 1.0, 0.0]), None, mask, None, None)
    return ppo.UpdateBatch(torch.randint(3, V, (B, P), generator=gen), torch.ones(B, P, dtype=torch.long), resp,
                           mask, -torch.rand(B, R, generator=gen) - 1, torch.tensor([1.0, -1.0] * 2)[:, None] * mask,
                           plan)


CFG = ppo.PPOConfig(rows_per_minibatch=2, micro_batch=2, temperature=1.0)


def test_ppo_update_skips_a_nan_loss(tiny):
    model, _ = tiny
    batch = update_batch(model)
    batch.old_logp[1, 2] = NAN  # the ratio exp(logp - old_logp) of the first mini-batch
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    stats = ppo.ppo_update(model, opt, batch, get_objective("pg"), None, CFG)
    assert stats["nonfinite"] == ["loss"] and len(stats["loss"]) == 1 and len(stats["clip_frac"]) == 1
    assert {float(s["step"]) for s in opt.state.values()} == {1.0} and all_finite(*params(model))


def test_ppo_update_skips_inf_gradients(tiny):
    model, _ = tiny
    before = params(model)
    hook = model.get_input_embeddings().weight.register_hook(lambda g: g * float("inf"))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    try:
        stats = ppo.ppo_update(model, opt, update_batch(model), get_objective("pg"), None, CFG)
    finally:
        hook.remove()
    assert stats["nonfinite"] == ["gradients", "gradients"] and stats["loss"] == []
    assert same(before, params(model)) and not opt.state
    assert all(p.grad is None for p in model.parameters())  # nothing left to leak into a later step


def test_ppo_update_with_finite_values_steps_every_minibatch(tiny):
    model, _ = tiny
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    stats = ppo.ppo_update(model, opt, update_batch(model), get_objective("pg"), None, CFG)
    assert stats["nonfinite"] == [] and len(stats["loss"]) == 2 and all_finite(*params(model))


# ---------------------------------------------------------------- the LM trainer and the RLT teacher's RL


def test_lm_step_with_a_nan_loss_is_skipped_and_logged(tiny, caplog):
    model, tok = tiny
    examples = [chat_example(tok, r["question"], r["solution"], loss_on_prompt=False) for r in ROWS]
    drawn, snapshots = [], []

    def batch(rng, b):
        drawn.append(1)
        return rng.sample(examples, b)

    # step 1's forward pass returns NaN logits
    hook = model.lm_head.register_forward_hook(lambda mod, inp, out: out * NAN if len(drawn) == 2 else out)
    with caplog.at_level(logging.WARNING, logger="rlrt.loop"):
        hist = train_lm(model, tok, batch, steps=3, batch_size=2, lr=1e-3, warmup_steps=1, seed=0, log_every=1,
                        desc="lm", on_step=lambda rec: snapshots.append(params(model)))
    hook.remove()
    assert [h["nonfinite_skips"] for h in hist] == [0, 1, 0]
    assert math.isnan(hist[1]["loss"]) and math.isfinite(hist[2]["loss"])
    assert same(snapshots[0], snapshots[1]) and not same(snapshots[1], snapshots[2])
    assert "lm step 1: 1 update(s) skipped on non-finite values" in caplog.text
    assert all_finite(*params(model))


def test_training_refuses_weights_that_are_already_nan(tiny):
    model, tok = tiny
    with torch.no_grad():
        model.get_input_embeddings().weight[5, 0] = NAN
    examples = [chat_example(tok, r["question"], r["solution"], loss_on_prompt=False) for r in ROWS]
    with pytest.raises(ValueError, match=r"^lm: the model's weights hold NaN or inf before step 0; refusing"):
        train_lm(model, tok, lambda rng, b: rng.sample(examples, b), steps=2, batch_size=2, lr=1e-3, desc="lm")


def test_teacher_rl_skips_a_minibatch_with_nan_rewards(tok, model, monkeypatch, caplog):  # noqa: F811
    monkeypatch.setattr(rlt, "sample", fake_sample)
    real, calls = rlt.score_explanations, []

    def score(*args, **kw):
        out = real(*args, **kw)
        calls.append(1)
        if len(calls) == 1:  # step 0: the first question's 3 explanations
            out["reward"][:3] = NAN
        return out

    monkeypatch.setattr(rlt, "score_explanations", score)
    student, cfg = teacher_rl_setup(tok, 2)
    with caplog.at_level(logging.WARNING):
        hist = rlt.train_teacher(model, student, tok, RLT_ROWS, cfg)
    assert [h["nonfinite_skips"] for h in hist] == [1, 0]
    assert "rlt:teacher step 0: 1 update(s) skipped" in caplog.text
    assert "non-finite advantages in the mini-batch of rows 0:6" in caplog.text
    assert all_finite(*params(model))
