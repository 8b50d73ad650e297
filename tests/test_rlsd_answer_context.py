"""RLSD's teacher on a data set without reference solutions (issue 31 §3: DAPO-Math-17k's loader writes "").

RLSD's teacher "conditions on the ground-truth answer" (RLRT App. G.1, Table 4); RLSD's own code shows the gold
answer in its reference-solution template when no trajectory exists. Checked here: the ``answer`` context renders
the gold answer in that template on both engines (the verl batch reads it from ``reward_model.ground_truth``);
an empty per-problem context is an error naming the split and the row id -- at the rl stage's start (both
backends), inside a training step, in the analyses -- never a prompt saying "Here is a reference solution:" over
nothing; paper.yaml gives RLSD the answer context, and a ``reference`` run on DAPO-Math-17k is refused before any job.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rlrt.methods.registry import get_method
from rlrt.tasks.prompts import user_message
from rlrt.teacher import (ANSWER_TEMPLATE, REFERENCE_TEMPLATE, build_contexts, problem_contexts,
                          teacher_user_message)

ROOT = Path(__file__).resolve().parents[1]
ROWS = [{"id": "dapo-17", "question": "Find x if 2x = 14.", "answer": "7", "solution": ""},
        {"id": "dapo-42", "question": "Compute 6 * 7.", "answer": "42", "solution": ""}]


def test_answer_context_renders_the_gold_answer_in_rlsds_template():
    msg = user_message(ROWS[0]["question"])
    ctx = build_contexts("answer", [[1.0, 0.0]], [["a", "b"]], problem_contexts("answer", ROWS[:1], "train"))
    assert ctx == [["7", "7"]]
    text = teacher_user_message(msg, ctx[0][0], "answer")
    assert ANSWER_TEMPLATE == REFERENCE_TEMPLATE  # RLSD shows the gold answer as the reference solution
    assert text == (f"{msg}\n\nHere is a reference solution:\n7\n\nAfter understanding the reference solution, "
                    "please try to solve this problem using your own approach below:")
    # the other kinds are as they were
    assert problem_contexts("sibling", ROWS, "train") == ["", ""]
    assert teacher_user_message(msg, "s", "reference") == REFERENCE_TEMPLATE.format(prompt=msg, context="s")


def test_an_empty_context_raises_naming_split_and_row():
    with pytest.raises(ValueError, match=r"teacher context 'reference': split 'train' row 'dapo-17' has an empty "
                                         r"'solution'.*use `context: answer`"):
        problem_contexts("reference", ROWS, "train")
    rows = [dict(ROWS[0]), {**ROWS[1], "answer": "  "}]
    with pytest.raises(ValueError, match=r"split 'aime25' row 'dapo-42' has an empty 'answer'"):
        problem_contexts("answer", rows, "aime25")
    with pytest.raises(ValueError, match=r"context 'reference': group 1 has an empty 'solution'"):
        build_contexts("reference", [[1.0], [0.0]], [["a"], ["b"]], ["a solution", ""])
    with pytest.raises(ValueError, match="unknown context kind"):
        problem_contexts("oracle", ROWS, "train")


def _verl_batch(tok, solutions):
    """A small verl DataProto as the rollout leaves it: 2 groups x 2 rollouts, extra_info and reward_model as
    rlrt.backends.verl.train.verl_rows writes them."""
    from verl import DataProto

    from rlrt.backends.verl import batch as vb

    B, R = 4, 3
    resp = torch.full((B, R), 5, dtype=torch.long)
    mask = torch.ones(B, R, dtype=torch.long)
    tlr = torch.zeros(B, R)
    tlr[:, -1] = torch.tensor([1.0, 0.0, 0.0, 1.0])
    g = [0, 0, 1, 1]
    nt = {"uid": np.array([f"u{k}" for k in g], dtype=object),
          "raw_prompt": vb.as_object_array([[{"role": "user", "content": user_message(ROWS[k]["question"])}]
                                            for k in g]),
          "extra_info": vb.as_object_array([{"id": ROWS[k]["id"], "index": k, "solution": solutions[k]} for k in g]),
          "reward_model": vb.as_object_array([{"style": "rule", "ground_truth": ROWS[k]["answer"]} for k in g])}
    prompts = torch.ones(B, 2, dtype=torch.long)
    tensors = {"prompts": prompts, "responses": resp, "response_mask": mask,
               "input_ids": torch.cat([prompts, resp], 1), "attention_mask": torch.ones(B, 2 + R, dtype=torch.long),
               "token_level_rewards": tlr, "old_log_probs": -torch.rand(B, R)}
    return DataProto.from_dict(tensors=tensors, non_tensors=nt, meta_info={"temperature": 1.0})


class _Tok:
    def decode(self, ids, skip_special_tokens=True):
        return "r"


def test_verl_batch_shows_rlsds_teacher_the_gold_answer():
    pytest.importorskip("verl")
    from rlrt.backends.verl import batch as vb
    from rlrt.methods.shaping import TeacherScores

    spec = get_method("rlsd")
    seen = {}

    def make(grouped):
        def score(contexts, kind, want_logp, want_entropy):
            seen["contexts"], seen["kind"] = contexts, kind
            return TeacherScores(torch.ones(grouped.G * grouped.n, dtype=torch.bool), grouped.old_logp.clone(), None)
        return score

    dp = _verl_batch(_Tok(), ["", ""])
    vb.shape_batch(spec, spec.make_settings({"context": "answer"}), dp, _Tok(), 0, make)
    assert seen["kind"] == "answer" and seen["contexts"] == [["7", "7"], ["42", "42"]]
    with pytest.raises(ValueError, match=r"split 'train' row 'dapo-17' has an empty 'solution'"):
        vb.shape_batch(spec, spec.make_settings({"context": "reference"}), _verl_batch(_Tok(), ["", ""]), _Tok(), 0,
                       make)
    vb.shape_batch(spec, spec.make_settings({}), _verl_batch(_Tok(), ["x = 7.", "6 * 7 = 42."]), _Tok(), 0, make)
    assert seen["kind"] == "reference" and seen["contexts"][1] == ["6 * 7 = 42.", "6 * 7 = 42."]


def test_rl_stage_refuses_an_empty_context_before_training(tmp_path, monkeypatch):
    """Both backends: the rl stage checks every train row's context text before it trains (the verl branch would
    otherwise find it only at the step that samples the row, a GPU-day in)."""
    from rlrt.io import write_problems
    from rlrt.stages import rl as stage

    data = tmp_path / "train.parquet"
    write_problems(data, [{**r, "explanation": "", "source": "dapo_math"} for r in ROWS])
    called = []
    monkeypatch.setattr("rlrt.backends.verl.train.run", lambda *a, **k: called.append(1), raising=False)
    for backend in ("verl", "local"):
        cfg = {"method": "rlsd", "method_cfg": {"context": "reference"}, "backend": backend,
               "backbone": {"name": "Qwen3-8B", "kind": "thinking"}}
        argv = ["--cfg", json.dumps(cfg), "--model", "m", "--data", str(data), "--out", str(tmp_path / "o"),
                "--metrics", str(tmp_path / "m.json")]
        with pytest.raises(ValueError, match=r"split 'train' row 'dapo-17' has an empty 'solution'"):
            stage.main(argv)
    assert not called
    stage.check_contexts({"method": "rlsd", "method_cfg": {"context": "answer"}}, str(data))  # answers exist
    stage.check_contexts({"method": "rlrt", "method_cfg": {}}, str(data))  # sibling: nothing per problem


def test_local_engine_rlsd_step_with_the_answer_context():
    """The local engine's RL step takes each problem's context through the same function: the gold answer under
    ``answer``, an error naming the row under ``reference`` with no solution."""
    from rlrt.backends.local import rl as engine
    from rlrt.backends.local.model import build_model
    from rlrt.tasks.tokenizer import train_tokenizer

    tok = train_tokenizer([user_message(r["question"]) + " \\boxed{7}" for r in ROWS] * 20, vocab_size=300)
    torch.manual_seed(0)
    model = build_model({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                         "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 256}, tok)
    cfg = engine.RLConfig(steps=1, question_batch=2, mini_batch=2, n_rollouts=2, max_response_length=3, micro_batch=4)
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)
    spec = get_method("rlsd")
    grade = lambda texts, answers: [1.0, 0.0] * 2  # noqa: E731
    m = engine.rl_step(model, tok, opt, spec, spec.make_settings({"context": "answer"}), cfg, ROWS, 0, grade)
    assert m["teacher_rows"] > 0
    with pytest.raises(ValueError, match=r"split 'train' row 'dapo-17' has an empty 'solution'"):
        engine.rl_step(model, tok, opt, spec, spec.make_settings({}), cfg, ROWS, 0, grade)


def test_analysis_teacher_falls_back_to_the_answer_and_never_to_nothing():
    from rlrt.analysis.views import Groups, teacher_context

    groups = Groups(rows=[dict(ROWS[0]), {**ROWS[1], "solution": "6 * 7 = 42."}], n=2,
                    rollouts=type("R", (), {"texts": ["a", "b", "c", "d"]})(), correct=np.zeros((2, 2), dtype=int))
    assert teacher_context(groups, 0, 0, "sibling", "train") == ("7", "answer")  # no solution: the gold answer
    assert teacher_context(groups, 1, 0, "sibling", "train") == ("6 * 7 = 42.", "reference")
    assert teacher_context(groups, 1, 1, "answer", "train") == ("42", "answer")
    with pytest.raises(ValueError, match=r"split 'aime25' row 'dapo-17' has an empty 'solution'"):
        teacher_context(groups, 0, 0, "reference", "aime25")


def test_paper_config_gives_rlsd_the_answer_context_and_refuses_reference_on_dapo():
    from rlrt.config import ConfigError, load_overlay, validate
    from rlrt.plan import run_config
    from rlrt.methods.settings import make_settings

    paper = load_overlay(ROOT / "config" / "paper.yaml")
    assert paper["data"]["datasets"]["train"]["loader"] == "dapo_math"
    for b in paper["rl_backbones"]:
        assert make_settings("rlsd", run_config(paper, b, "rlsd")).context == "answer"
    cfg = copy.deepcopy(paper)
    cfg["methods"]["rlsd"] = {"context": "reference"}
    with pytest.raises(ConfigError, match=r"^config key 'methods\.rlsd\.context': run 'rlsd[^']*' on 'Qwen3-[^']*' "
                                          r"shows its teacher the train split's reference solution"):
        validate(cfg)
    cfg["methods"]["rlsd"] = {"context": "bogus"}
    with pytest.raises(ConfigError, match=r"methods\.rlsd\.context"):
        validate(cfg)
