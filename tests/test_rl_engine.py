"""The local RL engine on a tiny random model: every method runs a step, weights land where the paper says."""

from __future__ import annotations

import random

import pytest
import torch

from rlrt.backends.local import rl as engine
from rlrt.backends.local.resume import Resumable
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


@pytest.mark.parametrize("method", ["grpo", "rlsd", "rlrt", "sdpo", "srpo", "grpo_eb", "diver", "rlrt_all"])
def test_one_step_per_method_logs_everything(tiny, method):
    model, tok = tiny
    spec = get_method(method)
    mcfg = spec.default_settings()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    teacher = __import__("copy").deepcopy(model) if spec.needs_teacher_logits else None
    m = engine.rl_step(model, tok, opt, spec, mcfg, make_cfg(), ROWS[:2], step=0, grade_fn=alternating,
                       teacher_model=teacher)
    for key in ("reward_mean", "accuracy", "response_length", "entropy", "clip_frac", "weight_mean", "weight_max",
                "lambda", "step_time", "context_frac"):
        assert key in m
    assert m["reward_mean"] == 0.5 and m["mixed_groups"] == 1.0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters())), "no parameter moved"
    if method in ("grpo", "grpo_eb", "diver"):
        assert m["weight_mean"] == 1.0 and m["weight_max"] == 1.0 and m["context_frac"] == 0.0
    elif method == "sdpo":  # every rollout with a correct sibling is distilled (all of them here)
        assert m["distill_frac"] == 1.0 and m["distill_loss"] > 0
    elif method == "srpo":  # the incorrect half is distilled, the correct half takes the surrogate
        assert m["distill_frac"] == 0.5 and m["distill_loss"] > 0
    else:
        assert m["lambda"] == 0.5
        eps_w = spec.default_settings().eps_w
        assert 1.0 - 0.5 * eps_w - 1e-6 <= m["weight_mean"] <= 1.0 + 0.5 * eps_w + 1e-6
        assert m["teacher_logratio"] != 0.0  # the teacher view scored the weighted tokens
    if method in ("grpo", "grpo_eb", "diver", "sdpo", "srpo"):
        assert m["teacher_logratio"] == 0.0  # no token weights
    if method == "rlsd":
        assert m["context_frac"] == 1.0  # reference solution for every sample
    if method == "rlrt":
        # mixed groups of [1,0,1,0]: every sample has a correct sibling other than itself
        assert m["context_frac"] == 1.0


def test_rlrt_reweights_only_correct_rollouts(tiny, monkeypatch):
    model, tok = tiny
    spec = get_method("rlrt")
    seen = {}
    from rlrt.methods import shaping

    real = shaping.token_advantages

    def spy(spec_, adv, mask, rewards, delta, has_ctx, lam, eps_w):
        tok_adv, w = real(spec_, adv, mask, rewards, delta, has_ctx, lam, eps_w)
        seen.update(adv=adv, mask=mask, rewards=rewards, tok_adv=tok_adv, delta=delta)
        return tok_adv, w

    monkeypatch.setattr(shaping, "token_advantages", spy)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    engine.rl_step(model, tok, opt, spec, spec.default_settings(), make_cfg(), ROWS[:2], step=0, grade_fn=alternating)
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
        hist = engine.train(m2, tok, ROWS, get_method("rlrt"), get_method("rlrt").default_settings(), make_cfg(),
                            alternating, progress=False)
        runs.append(([h["loss"] for h in hist], [h["response_length"] for h in hist]))
    assert runs[0] == runs[1]


def test_sdpo_without_any_correct_sibling_does_not_update(tiny):
    model, tok = tiny
    spec = get_method("sdpo")
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    teacher = __import__("copy").deepcopy(model)
    m = engine.rl_step(model, tok, opt, spec, spec.default_settings(), make_cfg(), ROWS[:2], step=0,
                       grade_fn=lambda t, a: [0.0] * len(t), teacher_model=teacher)
    assert m["distill_frac"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_sdpo_teacher_is_frozen_unless_ema(tiny):
    model, tok = tiny
    spec = get_method("sdpo")
    for rate, should_move in ((0.0, False), (0.5, True)):
        teacher = __import__("copy").deepcopy(model)
        t0 = [p.detach().clone() for p in teacher.parameters()]
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        engine.rl_step(model, tok, opt, spec, spec.make_settings({"ema_rate": rate}), make_cfg(), ROWS[:2], step=0,
                       grade_fn=alternating, teacher_model=teacher)
        moved = any(not torch.equal(a, b) for a, b in zip(t0, teacher.parameters()))
        assert moved == should_move


def test_diver_bonus_shapes_the_advantage(tiny, monkeypatch):
    model, tok = tiny
    seen = {}
    from dataclasses import replace

    from rlrt.methods import shaping

    real = shaping.group_advantages

    def spy(rewards, norm):
        seen["r"] = rewards.clone()
        return real(rewards, norm)

    monkeypatch.setattr(shaping, "group_advantages", spy)
    spec = replace(get_method("diver"), reward_bonus=lambda texts, r, step, s: [0.25] * len(texts))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    m = engine.rl_step(model, tok, opt, spec, spec.default_settings(), make_cfg(), ROWS[:2], step=0, grade_fn=alternating)
    assert torch.allclose(seen["r"], torch.tensor([[1.25, 0.25, 1.25, 0.25]] * 2))
    assert m["diversity_bonus"] == pytest.approx(0.25) and m["reward_mean"] == 0.5


def test_resume_gives_the_same_numbers(tiny, tmp_path):
    import copy

    model, tok = tiny
    spec = get_method("rlrt")
    cfg = make_cfg(steps=3)
    m_full = copy.deepcopy(model)
    full = engine.train(m_full, tok, ROWS, spec, spec.default_settings(), cfg, alternating, progress=False)
    # interrupted after 2 steps (state saved every step), then resumed from a fresh copy of the initial model
    state = tmp_path / "state.pt"
    m_a = copy.deepcopy(model)
    engine.train(m_a, tok, ROWS, spec, spec.default_settings(), make_cfg(steps=2), alternating, progress=False,
                 resume=Resumable(str(state), 1))
    assert state.exists()
    saved = []
    m_b = copy.deepcopy(model)
    resumed = engine.train(m_b, tok, ROWS, spec, spec.default_settings(), cfg, alternating, progress=False,
                           resume=Resumable(str(state), 1), on_save=saved.append, save_steps=[3])
    assert [h["step"] for h in resumed] == [0, 1, 2]
    assert [h["reward_mean"] for h in resumed] == [h["reward_mean"] for h in full]
    assert resumed[-1]["loss"] == pytest.approx(full[-1]["loss"], rel=1e-5)
    for a, b in zip(m_full.parameters(), m_b.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert saved == [3]


@pytest.mark.parametrize("method", ["rlrt", "rlsd", "rlrt_all", "srpo"])
def test_teacher_pass_on_needed_rows_only_changes_nothing(tiny, method):
    """``LocalTeacher`` scores only ``rows_needing_teacher``'s rows (fewer, and without their padding); the token
    advantages and the plan equal those of scoring every row."""
    from rlrt.backends.local.rollout import sample, score_responses
    from rlrt.methods.shaping import rows_needing_teacher, shape_advantages
    from rlrt.tasks.prompts import chat_prompt, user_message

    model, tok = tiny
    spec = get_method(method)
    settings = spec.default_settings()
    G, n = 3, 4
    user_msgs = [user_message(r["question"]) for r in ROWS[:G]]
    ro = sample(model, tok, [chat_prompt(tok, m) for m in user_msgs], n, 10, seed=1)
    rewards = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.float32)  # mixed, all, one
    old_logp, old_ent = score_responses(model, ro.prompt_ids, ro.prompt_mask, ro.response_ids, ro.response_mask,
                                        1.0, 64, with_entropy=True)
    texts = [ro.texts[g * n:(g + 1) * n] for g in range(G)]
    refs = [r["solution"] for r in ROWS[:G]]
    out = {}
    for narrow in (False, True):
        teacher = engine.LocalTeacher(model, tok, user_msgs, ro, n, 1.0, 64, old_logp=old_logp,
                                      needed=(lambda has, we: rows_needing_teacher(spec, settings, rewards, has, we))
                                      if narrow else None)
        out[narrow] = (shape_advantages(spec, settings, rewards, texts, refs, old_logp, old_ent, ro.response_mask, 0,
                                        teacher.score), teacher.n_scored)
    (full, n_full), (narrow, n_narrow) = out[False], out[True]
    assert n_full == G * n and 0 < n_narrow < n_full
    if method == "rlrt":  # correct rows with a correct sibling in a mixed group: rows 0 and 1 only
        assert n_narrow == 2
    assert torch.allclose(full.token_adv, narrow.token_adv, atol=1e-6)
    assert torch.equal(full.plan.loss_mask, narrow.plan.loss_mask)
    assert torch.equal(full.plan.distill_rows, narrow.plan.distill_rows)
