"""The local RL engine on a tiny random model: every method runs a step, weights land where the paper says."""

from __future__ import annotations

import random

import pytest
import torch

from rlrt.backends.local import rl as engine
from rlrt.methods.registry import get_method


@pytest.fixture()
def tiny():
    from rlrt.backends.local.model import build_model
    from rlrt.tasks.tokenizer import train_tokenizer

    rng = random.Random(0)
    texts = [f"What is {rng.randint(1, 99)} + {rng.randint(1, 99)}? \\boxed{{{rng.randint(1, 200)}}}" for _ in range(200)]
    tok = train_tokenizer(texts, 300)
    torch.manual_seed(0)
    model = build_model({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                         "num_attention_heads": 2, "num_key_value_heads": 1}, tok)
    return model, tok


ROWS = [{"question": f"What is {a} + {b}?", "answer": str(a + b), "solution": f"{a} + {b} = {a + b}. \\boxed{{{a + b}}}"}
        for a, b in [(1, 2), (3, 4), (10, 20), (7, 8)]]


def alternating(texts, answers):
    """Fake verifier: every other rollout is 'correct', so each group of 4 is mixed."""
    return [float(i % 2 == 0) for i in range(len(texts))]


def make_cfg(**kw):
    base = dict(steps=2, question_batch=2, mini_batch=1, n_rollouts=4, max_response_length=8, lr=1e-3,
                warmup_steps=1, micro_batch=4, seed=3)
    base.update(kw)
    return engine.RLConfig(**base)


@pytest.mark.parametrize("method", ["grpo", "rlsd", "rlrt"])
def test_one_step_per_method_logs_everything(tiny, method):
    model, tok = tiny
    spec = get_method(method)
    mcfg = {**spec.defaults}
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    m = engine.rl_step(model, tok, opt, spec, mcfg, make_cfg(), ROWS[:2], step=0, grade_fn=alternating)
    for key in ("reward_mean", "accuracy", "response_length", "entropy", "clip_frac", "weight_mean", "weight_max",
                "lambda", "step_time", "context_frac"):
        assert key in m
    assert m["reward_mean"] == 0.5 and m["mixed_groups"] == 1.0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters())), "no parameter moved"
    if method == "grpo":
        assert m["weight_mean"] == 1.0 and m["weight_max"] == 1.0 and m["context_frac"] == 0.0
    else:
        assert m["lambda"] == 0.5
        assert 1.0 - 0.5 * spec.defaults["eps_w"] - 1e-6 <= m["weight_mean"] <= 1.0 + 0.5 * spec.defaults["eps_w"] + 1e-6
    if method == "rlsd":
        assert m["context_frac"] == 1.0  # reference solution for every sample
    if method == "rlrt":
        # mixed groups of [1,0,1,0]: every sample has a correct sibling other than itself
        assert m["context_frac"] == 1.0


def test_rlrt_reweights_only_correct_rollouts(tiny, monkeypatch):
    model, tok = tiny
    spec = get_method("rlrt")
    seen = {}
    real = engine.token_advantages

    def spy(spec_, adv, mask, rewards, delta, has_ctx, lam, eps_w):
        tok_adv, w = real(spec_, adv, mask, rewards, delta, has_ctx, lam, eps_w)
        seen.update(adv=adv, mask=mask, rewards=rewards, tok_adv=tok_adv, delta=delta)
        return tok_adv, w

    monkeypatch.setattr(engine, "token_advantages", spy)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    engine.rl_step(model, tok, opt, spec, {**spec.defaults}, make_cfg(), ROWS[:2], step=0, grade_fn=alternating)
    wrong = seen["rewards"] < 0.5
    m = seen["mask"].bool()
    expected_plain = (seen["adv"][:, None] * seen["mask"])[wrong]
    assert torch.equal(seen["tok_adv"][wrong], expected_plain)  # r = 0: plain GRPO advantage
    right = ~wrong
    assert seen["delta"] is not None and seen["delta"][right][m[right]].abs().sum() > 0
    assert not torch.equal(seen["tok_adv"][right], (seen["adv"][:, None] * seen["mask"])[right])


def test_training_is_deterministic(tiny):
    from rlrt.backends.local.model import build_model

    model, tok = tiny
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    runs = []
    for _ in range(2):
        m2 = build_model({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                          "num_attention_heads": 2, "num_key_value_heads": 1}, tok)
        m2.load_state_dict(sd)
        hist = engine.train(m2, tok, ROWS, get_method("rlrt"), {**get_method("rlrt").defaults}, make_cfg(),
                            alternating, progress=False)
        runs.append(([h["loss"] for h in hist], [h["response_length"] for h in hist]))
    assert runs[0] == runs[1]
