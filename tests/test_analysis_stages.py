"""The analysis stages and model views on a tiny randomly initialised Qwen3 (seconds, no trained checkpoint)."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest
import torch

from rlrt.analysis.divergence import position_asymmetry
from rlrt.analysis.views import (Groups, pair_position_stats, sample_groups, student_prompt, teacher_context,
                                 teacher_prompt)
from rlrt.backends.local.rollout import response_logits

ROWS = [{"id": f"p{k}", "question": f"What is {a} + {b}?", "answer": str(a + b),
         "solution": f"{a} + {b} = {a + b}. So the answer is \\boxed{{{a + b}}}."}
        for k, (a, b) in enumerate([(1, 2), (3, 4), (10, 20), (7, 8), (12, 5), (30, 9)])]
SAMPLING = {"temperature": 1.0, "top_p": 1.0, "top_k": 0}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, tokenizer, checkpoint folder, a second 'fine-tuned' checkpoint folder, data file)."""
    from rlrt.backends.local.model import build_model, save_checkpoint
    from rlrt.tasks.tokenizer import train_tokenizer

    rng = random.Random(0)
    texts = [f"What is {rng.randint(1, 99)} + {rng.randint(1, 99)}? So the answer is \\boxed{{{rng.randint(1, 200)}}}. "
             "Wait, let me reconsider." for _ in range(300)]
    tok = train_tokenizer(texts, 320)
    torch.manual_seed(0)
    model = build_model({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                         "num_key_value_heads": 1}, tok)
    root = tmp_path_factory.mktemp("tiny")
    save_checkpoint(model, tok, root / "base")
    with torch.no_grad():  # a "fine-tuned" policy: the same model with perturbed weights
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    save_checkpoint(model, tok, root / "ft")
    save_checkpoint(model, tok, root / "ckpts" / "step_1")
    (root / "ckpts_empty").mkdir()
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    from rlrt.backends.local.model import load_checkpoint

    m, t = load_checkpoint(root / "base")
    return m, t, root, data


def alternating(texts, answers):
    return [float(k % 2 == 0) for k in range(len(texts))]


class FakeGrader:
    """Stands in for rlrt.tasks.grading.Grader in a stage: every other response is correct."""

    def __init__(self, workers=1):
        self.calls = []

    def grade_batch(self, texts, answers):
        self.calls.append(list(texts))
        return alternating(texts, answers)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def test_pair_position_stats_chunked_equals_one_pass(tiny):
    model, tok, _, _ = tiny
    groups = sample_groups(model, tok, ROWS[:3], 2, 12, SAMPLING, 0, alternating)
    picks = [(g, i) for g in range(3) for i in range(2)]
    s_prompts = [student_prompt(tok, ROWS[g]["question"]) for g, _ in picks]
    t_prompts = [teacher_prompt(tok, ROWS[g]["question"], ROWS[g]["solution"], "reference") for g, _ in picks]
    responses = [groups.response(g, i) for g, i in picks]

    def fn(a, b, ids):
        return {"dbar": position_asymmetry(a, b)}

    chunked = pair_position_stats(model, s_prompts, model, t_prompts, responses, fn, tok.pad_token_id, chunk=3,
                                  micro_batch=4)
    whole = pair_position_stats(model, s_prompts, model, t_prompts, responses, fn, tok.pad_token_id, chunk=10_000,
                                micro_batch=64)
    assert [len(c["dbar"]) for c in chunked] == [len(r) for r in responses]
    for c, w in zip(chunked, whole):
        assert np.allclose(c["dbar"], w["dbar"], atol=1e-5)
        assert (c["dbar"] >= 0).all()
    # the same numbers as the engine's full-logit pass, one sequence at a time (no padding at all)
    for k in range(len(picks)):
        r = torch.tensor([responses[k]])
        m = torch.ones_like(r)
        ls = response_logits(model, torch.tensor([s_prompts[k]]), torch.ones(1, len(s_prompts[k]), dtype=torch.long),
                             r, m)
        lt = response_logits(model, torch.tensor([t_prompts[k]]), torch.ones(1, len(t_prompts[k]), dtype=torch.long),
                             r, m)
        assert np.allclose(position_asymmetry(ls, lt)[0].detach().numpy(), chunked[k]["dbar"], atol=1e-4)
    # the teacher's context changes the distribution somewhere
    assert max(float(c["dbar"].max()) for c in chunked) > 1e-4


def test_teacher_context_prefers_another_correct_rollout(tiny):
    _, tok, _, _ = tiny
    ro = type("R", (), {"texts": ["a0", "<think>x</think> b1", "c2", "d3"]})()
    groups = Groups(ROWS[:2], 2, ro, np.array([[0, 1], [1, 0]]))
    assert teacher_context(groups, 0, 0, "sibling") == ("b1", "sibling")  # sibling, thinking stripped
    assert teacher_context(groups, 0, 1, "sibling") == (ROWS[0]["solution"], "reference")  # never itself
    assert teacher_context(groups, 1, 1, "sibling") == ("c2", "sibling")
    assert teacher_context(groups, 1, 1, "reference") == (ROWS[1]["solution"], "reference")
    with pytest.raises(ValueError):
        teacher_context(groups, 0, 0, "nope")


def test_injection_continues_from_the_chosen_position_and_grades_it(tiny):
    from rlrt.stages.analysis_reflection import inject_checkpoint

    model, tok, _, _ = tiny
    cfg = {"reflection": {"n_rollouts": 2, "hard": [0, 1], "easy": [2, 2], "rollouts_per_problem": 1,
                          "text": " Wait, let me reconsider."},
           "max_new_tokens": 10, "sampling": SAMPLING, "batch_size": 64, "context": "sibling", "temperature": 1.0,
           "position_chunk": 4, "micro_batch": 4}
    graded = []

    def grade(texts, answers):
        graded.append(list(texts))
        if len(graded) == 1:  # the rollouts: every other one right, so each problem is 1 of 2 (hard)
            return alternating(texts, answers)
        return [float(k % 3 == 0) for k in range(len(texts))]  # the continuations

    records, summary = inject_checkpoint(model, tok, ROWS[:4], cfg, grade, 0, np.random.default_rng(0))
    assert summary["n_hard"] == 4 and summary["n_targets"] == 4  # 1 of 2 correct -> hard; the wrong one injected
    assert len(records) == 12 and len(graded) == 2  # 3 positions per target; one grading call for continuations
    groups = sample_groups(model, tok, ROWS[:4], 2, 10, SAMPLING, 0, alternating)  # same seed -> same rollouts
    refl = tok(" Wait, let me reconsider.", add_special_tokens=False)["input_ids"]
    for k, rec in enumerate(records):
        g = int(rec["problem"][1:])
        resp = groups.response(g, rec["rollout"])
        assert rec["rollout"] == 1 and rec["before"] == 0
        assert 0 <= rec["t"] < len(resp)
        prefix = tok.decode(resp[: rec["t"]] + refl, skip_special_tokens=True)
        assert rec["text"].startswith(prefix)  # cut exactly before the chosen token, reflection inserted there
        assert graded[1][k] == rec["text"]  # the continuation is what was graded
        assert rec["after"] == int(k % 3 == 0)
    by_pos = pd.DataFrame(records).groupby(["problem", "position"])["dbar_t"].first().unstack()
    assert (by_pos["max_kl"] >= by_pos["random"]).all() and (by_pos["random"] >= by_pos["min_kl"]).all()


def test_heatmaps_stage_writes_png_html_json(tiny, tmp_path):
    from rlrt.stages import analysis_heatmaps

    _, tok, root, data = tiny
    cfg = {"heatmaps": {"n_problems": 3, "n_rollouts": 2, "n_examples": 2, "n_critical": 2, "candidates_top": 100,
                        "candidates_show": 4},
           "backbone": "tiny", "run": "base", "seed": 0, "sampling": SAMPLING, "temperature": 1.0,
           "context": "sibling", "position_chunk": 5, "micro_batch": 2, "batch_size": 64, "max_new_tokens": 12,
           "grader_workers": 0, "tracking": None}
    out = [tmp_path / f"h{i}.{e}" for e in ("png", "html") for i in (1, 2)]
    analysis_heatmaps.main(["--cfg", json.dumps(cfg), "--model", str(root / "base"), "--data", str(data),
                            "--out-png", str(out[0]), str(out[1]), "--out-html", str(out[2]), str(out[3]),
                            "--out-json", str(tmp_path / "h.json")])
    for p in out[:2]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = json.loads((tmp_path / "h.json").read_text())
    assert len(res["examples"]) == 2
    for ex, html_path in zip(res["examples"], out[2:]):
        n = len(ex["tokens"])
        assert n == len(ex["dbar"]) == len(ex["dhat"]) == len(ex["ids"]) > 0
        assert min(ex["dbar"]) >= 0
        assert [c["rank"] for c in ex["critical"]] == [1, 2]
        assert ex["critical"][0]["dbar"] == pytest.approx(max(ex["dbar"]))
        for c in ex["critical"]:
            assert all(x["p_s"] > x["p_t"] for x in c["explore"]) and all(x["p_t"] > x["p_s"] for x in c["exploit"])
            assert len(c["explore"]) <= 4 and len(c["exploit"]) <= 4
        html = html_path.read_text()
        assert html.count('<span') == n and "D̂_t(y_t)" in html and "<script" not in html
        # every token's D̄_t is in its hover text
        assert f"{ex['dbar'][0]:.4g}" in html
        # D̂_t(y_t) = log P_S(y_t) - log P_T(y_t)
        assert np.allclose(ex["dhat"], np.log(ex["p_s"]) - np.log(ex["p_t"]), atol=1e-4)


def test_markers_stage_builds_corpora_and_table(tiny, tmp_path, monkeypatch):
    from rlrt.stages import analysis_markers

    monkeypatch.setattr(analysis_markers, "Grader", FakeGrader)
    _, _, root, data = tiny
    cfg = {"markers": {"n_problems": 6, "n_rollouts": 2, "min_count": 1, "z_threshold": 0.5, "alpha": 0.5,
                       "min_chars": 1, "max_chars": 15, "domain_stopwords": ["wait"], "words_only": False},
           "backbone": "tiny", "run": "base", "seed": 0, "sampling": SAMPLING, "temperature": 1.0,
           "context": "sibling", "position_chunk": 4, "micro_batch": 4, "batch_size": 64, "max_new_tokens": 10,
           "grader_workers": 0, "tracking": None}
    paths = {k: tmp_path / n for k, n in [("csv", "t2.csv"), ("md", "t2.md"), ("png", "f3.png"),
                                          ("scores", "s.csv"), ("json", "m.json")]}
    analysis_markers.main(["--cfg", json.dumps(cfg), "--model", str(root / "base"), "--data", str(data)]
                          + [a for k, p in paths.items() for a in (f"--out-{k}", str(p))])
    res = json.loads(paths["json"].read_text())
    assert res["n_pairs"] == 6  # alternating grades: every problem has one correct and one incorrect rollout
    assert res["n_positions"] > 0
    scores = pd.read_csv(paths["scores"], keep_default_na=False)
    assert (scores["total"] >= 1).all() and scores["n_explore"].sum() + scores["n_exploit"].sum() <= 2 * res["n_positions"]
    markers = pd.read_csv(paths["csv"], keep_default_na=False)
    assert (markers["z"].abs() >= 0.5).all() and "wait" not in set(markers["token"])
    assert len(markers) == res["n_markers"]
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    assert "| Direction | Category | Tokens (z) |" in paths["md"].read_text()


def test_reflection_and_shift_stages(tiny, tmp_path, monkeypatch):
    from rlrt.stages import analysis_reflection, analysis_shift

    monkeypatch.setattr(analysis_reflection, "Grader", FakeGrader)
    _, _, root, data = tiny
    common = {"backbone": "tiny", "run": "base", "seed": 0, "sampling": SAMPLING, "temperature": 1.0,
              "context": "sibling", "position_chunk": 4, "micro_batch": 4, "batch_size": 64, "max_new_tokens": 8,
              "grader_workers": 0, "tracking": None}
    cfg = {**common, "rl_steps": 2, "reflection": {"runs": ["grpo", "rlrt"], "n_problems": 3, "n_rollouts": 2,
                                                    "hard": [0, 1], "easy": [2, 2], "rollouts_per_problem": 1,
                                                    "text": " Wait, let me reconsider."}}
    out = {k: tmp_path / n for k, n in [("png", "f6.png"), ("flips", "fl.csv"), ("records", "rec.csv"),
                                        ("json", "r.json")]}
    analysis_reflection.main(["--cfg", json.dumps(cfg), "--base", str(root / "base"), "--models", str(root / "ft"),
                              str(root / "ft"), "--checkpoints", str(root / "ckpts"), str(root / "ckpts_empty"),
                              "--data", str(data)] + [a for k, p in out.items() for a in (f"--out-{k}", str(p))])
    res = json.loads(out["json"].read_text())
    assert [(c["run"], c["step"]) for c in res["checkpoints"]] == [("base", 0), ("grpo", 1), ("grpo", 2), ("rlrt", 2)]
    flips = pd.read_csv(out["flips"])
    assert set(flips["position"]) == {"max_kl", "random", "min_kl"}
    assert set(zip(flips["run"], flips["step"])) == {("grpo", 0), ("grpo", 1), ("grpo", 2), ("rlrt", 0), ("rlrt", 2)}
    assert ((flips["rate"] >= 0) & (flips["rate"] <= 1)).all()
    assert out["png"].read_bytes()[:4] == b"\x89PNG"

    scfg = {**common, "shift": {"runs": ["grpo", "rlrt"], "n_candidates": 4, "n_base_rollouts": 2,
                                "max_correct": 2, "n_prompts": 3, "n_rollouts": 2, "js_threshold": 0.01,
                                "max_k": 5, "tail_thresholds": [0.1, 0.01, 0.001]}}
    analysis_shift.main(["--cfg", json.dumps(scfg), "--base", str(root / "base"), "--models", str(root / "ft"),
                         str(root / "base"), "--data", str(data), "--out-png", str(tmp_path / "f7.png"),
                         "--out-json", str(tmp_path / "s.json")])
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["n_hard_prompts"] == 3
    ft, same = s["results"]["grpo"], s["results"]["rlrt"]
    assert ft["n_high"] > 0 and ft["js_mean"] > 1e-3  # perturbed weights moved the distribution
    assert same["n_high"] == 0 and same["js_mean"] < 1e-6  # the base against itself: no shift at all
    assert len(ft["overlap"]) == 5 and len(ft["tail"]) == 3 and len(ft["ccdf"]) == len(s["grid"])
    assert all(a >= b for a, b in zip(ft["ccdf"], ft["ccdf"][1:]))  # a CCDF never increases
    assert all(a >= b for a, b in zip(ft["tail"], ft["tail"][1:]))  # lower thresholds keep fewer positions
    assert (tmp_path / "f7.png").read_bytes()[:4] == b"\x89PNG"
