"""Resumable training: a loop killed mid-run and rerun continues with the numbers of an uninterrupted run; a state
written under another configuration is ignored; the state never outlives a completed run."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from rlrt.backends.local import rlt
from rlrt.backends.local.lm import chat_example, train_lm
from rlrt.backends.local.resume import Resumable, config_fingerprint

ROWS = [{"question": f"What is {a} + {b}?", "solution": f"{a} + {b} = {a + b}. So the answer is \\boxed{{{a + b}}}.",
         "explanation": f"{b} + {a} = {a + b}."} for a, b in [(1, 2), (3, 4), (10, 20), (7, 8), (12, 30), (5, 5)]]


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def tok():
    from rlrt.tasks.rlt_format import teacher_text
    from rlrt.tasks.tokenizer import train_tokenizer

    rng = random.Random(0)
    texts = [teacher_text(f"{a} + {b} = {a + b}. So the answer is \\boxed{{{a + b}}}.", f"{b} + {a} = {a + b}.")
             for a, b in ((rng.randint(1, 99), rng.randint(1, 99)) for _ in range(200))]
    return train_tokenizer(texts, 320)


@pytest.fixture()
def model(tok):
    from rlrt.backends.local.model import build_model

    torch.manual_seed(0)
    return build_model({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                        "num_attention_heads": 2, "num_key_value_heads": 1}, tok).eval()


def kill_at(step: int):
    def on_step(m: dict) -> None:
        if m["step"] == step:
            raise Killed
    return on_step


def same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_lm_training_resumes_with_the_same_numbers(tok, model, tmp_path):
    examples = [chat_example(tok, r["question"], r["solution"], loss_on_prompt=False) for r in ROWS]

    def batch(rng, b):
        return rng.sample(examples, b)

    kw = dict(steps=6, batch_size=3, lr=3e-3, warmup_steps=2, seed=1, log_every=1)
    full_model = copy.deepcopy(model)
    full = train_lm(full_model, tok, batch, **kw)
    assert not same_weights(full_model, model) and all(h["grad_norm"] > 0 for h in full)  # the run trains

    state = Resumable(str(tmp_path / "s.pt"), every=2)
    killed = copy.deepcopy(model)
    with pytest.raises(Killed):  # dies during step 5 (index 4): the state of 4 finished steps is on disk
        train_lm(killed, tok, batch, on_step=kill_at(4), resume=state, **kw)
    assert torch.load(state.path, weights_only=False)["step"] == 4

    resumed_model = copy.deepcopy(model)  # a fresh process: the initial weights, then the saved state
    resumed = train_lm(resumed_model, tok, batch, resume=Resumable(state.path, every=2), **kw)
    assert [h["step"] for h in resumed] == list(range(6))
    assert [h["loss"] for h in resumed] == [h["loss"] for h in full]
    assert [h["lr"] for h in resumed] == [h["lr"] for h in full]
    assert same_weights(resumed_model, full_model)


def fake_sample(model, tok, prompts, n, max_new_tokens, temperature=1.0, seed=0, **kw):
    """A seeded stand-in for the teacher's sampler that gives well-formatted explanations of varying quality (a
    random tiny teacher never closes its tag, so every reward would be the penalty and nothing would train):
    the completions depend on the step's seed and on which question is in the batch."""
    from rlrt.backends.local.rollout import Rollouts, left_pad, response_mask_from_ids
    from rlrt.tasks.rlt_format import END_EXPLANATION

    texts = []
    for p in prompts:
        rng = random.Random(f"{seed}|{p}")
        texts += [f"{rng.randint(1, 50)} + {rng.randint(1, 50)} = {rng.randint(1, 99)}." + END_EXPLANATION
                  if rng.random() < 0.8 else "no tag" for _ in range(n)]
    p_ids, p_mask = left_pad([rlt.encode(tok, p) for p in prompts for _ in range(n)], tok.pad_token_id)
    resp = [rlt.encode(tok, t) + [tok.eos_token_id] for t in texts]
    r_ids = torch.full((len(resp), max(map(len, resp))), tok.pad_token_id, dtype=torch.long)
    for i, r in enumerate(resp):
        r_ids[i, :len(r)] = torch.tensor(r)
    return Rollouts(p_ids, p_mask, r_ids, response_mask_from_ids(r_ids, tok.eos_token_id), texts)


def teacher_rl_setup(tok, steps: int):
    """A tiny frozen student (seeded) and a ``steps``-step teacher-RL config of 4 questions x 3 explanations."""
    from rlrt.backends.local.model import build_model

    torch.manual_seed(1)
    student = build_model({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                           "num_attention_heads": 2, "num_key_value_heads": 1}, tok).eval()
    cfg = rlt.TeacherRLConfig(steps=steps, question_batch=4, n_samples=3, mini_batch=2, lr=3e-3, max_new_tokens=16,
                              temperature=1.0, missing_tag_penalty=-20.0, seed=2)
    return student, cfg


def test_teacher_rl_resumes_with_the_same_numbers(tok, model, tmp_path, monkeypatch):
    monkeypatch.setattr(rlt, "sample", fake_sample)
    student, cfg = teacher_rl_setup(tok, 3)
    full_model = copy.deepcopy(model)
    full = rlt.train_teacher(full_model, student, tok, ROWS, cfg)
    assert not same_weights(full_model, model)  # the run trains

    path = str(tmp_path / "teacher.pt")
    with pytest.raises(Killed):  # step 2 draws the second epoch's order from the restored RNG (6 rows, 4 per step)
        rlt.train_teacher(copy.deepcopy(model), student, tok, ROWS, cfg, on_step=kill_at(1),
                          resume=Resumable(path, every=1))
    resumed_model = copy.deepcopy(model)
    resumed = rlt.train_teacher(resumed_model, student, tok, ROWS, cfg, resume=Resumable(path, every=1))
    keys = ("step", "reward_mean", "r_ss", "r_kl", "format_ok", "response_length")
    assert [[h[k] for k in keys] for h in resumed] == [[h[k] for k in keys] for h in full]
    assert same_weights(resumed_model, full_model)


def test_a_state_from_another_config_is_ignored(tok, model, tmp_path):
    examples = [chat_example(tok, r["question"], r["solution"], loss_on_prompt=False) for r in ROWS]
    kw = dict(steps=4, batch_size=2, lr=3e-3, warmup_steps=1, seed=0, log_every=1)
    path = str(tmp_path / "s.pt")
    with pytest.raises(Killed):
        train_lm(copy.deepcopy(model), tok, lambda rng, b: rng.sample(examples, b), on_step=kill_at(3),
                 resume=Resumable(path, 1, fingerprint=config_fingerprint({"lr": 1e-2})), **kw)
    other = Resumable(path, 1, fingerprint=config_fingerprint({"lr": 3e-3}))
    m = copy.deepcopy(model)
    assert other.load(m, torch.optim.AdamW(m.parameters()),
                      torch.optim.lr_scheduler.LambdaLR(torch.optim.AdamW(m.parameters()), lambda s: 1.0),
                      random.Random(0)) == (0, [])
    assert same_weights(m, model)  # nothing was loaded
    hist = train_lm(copy.deepcopy(model), tok, lambda rng, b: rng.sample(examples, b), resume=other, **kw)
    assert [h["step"] for h in hist] == [0, 1, 2, 3]  # started from scratch


def test_beside_due_and_clear(tmp_path):
    cfg = {"steps": 10, "tracking": {"enabled": True}}
    r = Resumable.beside(tmp_path / "model/", cfg, 4)
    assert r.path == str(tmp_path / "model.resume_state.pt") and r.every == 4
    assert r.fingerprint == config_fingerprint({"steps": 10})  # the tracking block does not count
    assert [k for k in range(1, 11) if r.due(k, 10)] == [4, 8]  # never after the last step
    assert not Resumable.beside(tmp_path / "m", cfg, 0).due(4, 10) and not Resumable().due(4, 10)
    open(r.path, "w").close()
    r.clear()
    assert not (tmp_path / "model.resume_state.pt").exists()
    r.clear()  # nothing to remove: no error


def killed_student_sft(tok, model, tmp_path, monkeypatch):
    """Run the student-SFT stage to its end as ``full``, then as ``killed`` dying in step 4 (after 3 finished
    steps, resume state every step). Returns ``run(out)`` (the stage on ``out``) and the killed run's state path."""
    import json

    from rlrt.backends.local import lm
    from rlrt.backends.local.model import save_checkpoint
    from rlrt.stages import rlt_student_sft

    save_checkpoint(model, tok, tmp_path / "base")
    traces = tmp_path / "traces.jsonl"
    traces.write_text("".join(json.dumps({"id": f"q{k}", **r}) + "\n" for k, r in enumerate(ROWS)))
    cfg = json.dumps({"seed": 0, "tracking": None, "student": "S", "data": "reference",
                      "student_sft": {"steps": 5, "batch_size": 2, "lr": 3e-3, "resume_every": 1}})

    def run(out: str) -> None:
        rlt_student_sft.main(["--cfg", cfg, "--model", str(tmp_path / "base"), "--traces", str(traces),
                              "--out", str(tmp_path / out), "--metrics", str(tmp_path / f"{out}.json")])

    run("full")
    real_collate, calls = lm.collate, []

    def dying_collate(*a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise Killed
        return real_collate(*a, **k)

    monkeypatch.setattr(lm, "collate", dying_collate)
    with pytest.raises(Killed):
        run("killed")
    monkeypatch.setattr(lm, "collate", real_collate)
    return run, tmp_path / "killed.resume_state.pt"


def test_a_killed_stage_resumes_when_rerun(tok, model, tmp_path, monkeypatch, capfd):
    """The whole stage path: the student-SFT stage dies mid-run, its rerun picks up the saved state beside the
    output (same config, so the same fingerprint) and ends with the uninterrupted run's weights and history."""
    import json

    from rlrt.backends.local.model import load_checkpoint

    run, state = killed_student_sft(tok, model, tmp_path, monkeypatch)
    assert state.exists() and not (tmp_path / "killed").exists()
    capfd.readouterr()
    run("killed")
    assert "after 3 finished steps" in capfd.readouterr().err  # the stage logs to stderr
    assert not state.exists()  # cleared once the outputs are written
    full, resumed = (json.loads((tmp_path / f"{o}.json").read_text())["history"] for o in ("full", "killed"))
    assert [h["loss"] for h in resumed] == [h["loss"] for h in full]
    assert same_weights(load_checkpoint(tmp_path / "killed")[0], load_checkpoint(tmp_path / "full")[0])
