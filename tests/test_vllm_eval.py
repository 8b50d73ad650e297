"""The vLLM evaluator (rlrt.backends.verl.evaluate) with a stand-in LLM: same JSON as the CPU evaluator.

A stand-in ``generate(prompts, sampling_params)`` returns RequestOutput-shaped objects (``.outputs[i].text``,
``.outputs[i].token_ids``) with canned responses whose correct counts per problem are 4, 1, 0 of n = 4. The test
checks the metrics against hand-computed values, the sampling parameters and the engine arguments against the
config, the prompts against the model's chat template, and -- the point of the module -- that the JSON equals,
key for key, what the CPU stage (rlrt.stages.evaluate, backend local) writes for the same responses.
vLLM itself is not installed here: the real engine path has never run in this repository's tests.
"""

from __future__ import annotations

import importlib.util
import json
from types import SimpleNamespace

import pytest
import torch

from rlrt.backends.verl import evaluate as vev
from rlrt.io import PROBLEM_COLUMNS, read_json, write_jsonl, write_problems
from rlrt.tasks.prompts import INSTRUCTION
from rlrt.tasks.tokenizer import train_tokenizer

N = 4
ROWS = [{"id": "p0", "question": "What is 3 + 4?", "answer": "7"},
        {"id": "p1", "question": "What is 10 + 5?", "answer": "15"},
        {"id": "p2", "question": "What is 1 + 1?", "answer": "2"}]
CORRECT = [[1, 1, 1, 1], [0, 0, 1, 0], [0, 0, 0, 0]]  # counts 4, 1, 0


def response(i: int, j: int) -> str:
    """Sample j of problem i: correct, wrong, or (problem 2, sample 0) without any boxed answer."""
    if i == 2 and j == 0:
        return "I do not know."
    return f"The sum is \\boxed{{{ROWS[i]['answer'] if CORRECT[i][j] else '999'}}}."


def n_tokens(i: int, j: int) -> int:
    return 5 + i * N + j  # 5 .. 16 over the 12 samples: mean 10.5


CFG = {"n": N, "ks": [1, 2, 4, 8], "temperature": 0.7, "top_p": 0.8, "top_k": 20, "max_problems": None,
       "batch_size": 512, "backbone": "Qwen3-8B", "method": "rlrt", "seed": 7, "max_new_tokens": 38912,
       "grader_workers": 1, "tracking": None, "backend": "verl", "verl": {"rollout": {"name": "vllm"}}, "gpus": 2}


class StandInLLM:
    def __init__(self):
        self.calls = []

    def generate(self, prompts, sampling_params):
        self.calls.append((list(prompts), sampling_params))
        assert len(prompts) == len(ROWS)
        return [SimpleNamespace(prompt=p, outputs=[SimpleNamespace(text=response(i, j),
                                                                   token_ids=list(range(n_tokens(i, j))))
                                                   for j in range(N)]) for i, p in enumerate(prompts)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    tok = train_tokenizer([r["question"] + " " + INSTRUCTION + " \\boxed{7}" for r in ROWS] * 20, vocab_size=300)
    tok.save_pretrained(d)
    write_model_config(d, max_position_embeddings=40960)  # Qwen3-8B's
    return d


def write_model_config(d, **kw) -> None:
    """A small config.json as the hub's Qwen3 folders have it (only the keys the context check reads)."""
    (d / "config.json").write_text(json.dumps({"model_type": "qwen3", "rope_theta": 1000000, "rope_scaling": None,
                                               **kw}))


@pytest.fixture
def splits(tmp_path):
    a, b = tmp_path / "aime24.jsonl", tmp_path / "math500.jsonl"
    write_jsonl(a, ROWS)
    write_jsonl(b, ROWS)
    return [str(a), str(b)]


def run_vllm(model_dir, paths, out, cfg=CFG):
    llm, made = StandInLLM(), {}

    def llm_factory(model, **kw):
        made.update(model=model, **kw)
        return llm

    def sp_factory(**kw):
        made["sampling"] = kw
        return SimpleNamespace(**kw)

    result = vev.evaluate(cfg, model=str(model_dir), data_paths=paths, out=str(out), llm_factory=llm_factory,
                          sampling_params_factory=sp_factory)
    return result, llm, made


def test_metrics_prompts_and_sampling_params(model_dir, splits, tmp_path):
    result, llm, made = run_vllm(model_dir, splits, tmp_path / "eval.json")
    assert read_json(tmp_path / "eval.json") == result
    # engine and sampling parameters from the config
    assert made["model"] == str(model_dir) and made["tensor_parallel_size"] == 2 and made["seed"] == 7
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    longest = max(len(tok(p)["input_ids"]) for p in llm.calls[0][0])
    assert made["max_model_len"] == longest + 38912 and "hf_overrides" not in made  # fits 40,960 natively
    assert made["sampling"] == {"n": 4, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "max_tokens": 38912,
                                "seed": 7}
    assert all(sp is llm.calls[0][1] for _, sp in llm.calls) and len(llm.calls) == 2  # one generate per split
    # prompts: the model's chat template around user_message(question)
    prompts = llm.calls[0][0]
    assert prompts[1] == ("<|im_start|>user\nWhat is 10 + 5? " + INSTRUCTION + "<|im_end|>\n"
                          "<|im_start|>assistant\n")
    # metrics by hand: counts 4, 1, 0 of n = 4
    s = result["splits"]["aime24"]
    assert s["correct_counts"] == [4, 1, 0] and s["n_problems"] == 3
    m = s["metrics"]
    assert set(m) == {"avg@4", "pass@1", "pass@2", "pass@4", "mean_response_length"}  # k = 8 > n dropped
    assert m["avg@4"] == pytest.approx(100 * (1 + 0.25 + 0) / 3, abs=1e-12)
    assert m["pass@1"] == pytest.approx(100 * (1 + 0.25 + 0) / 3, abs=1e-12)
    assert m["pass@2"] == pytest.approx(100 * (1 + (1 - 3 / 6) + 0) / 3, abs=1e-12)  # 1 - C(3,2)/C(4,2)
    assert m["pass@4"] == pytest.approx(100 * 2 / 3, abs=1e-12)
    assert m["mean_response_length"] == 10.5
    assert s["example"] == {"prompt": prompts[0], "response": "The sum is \\boxed{7}.", "answer": "7"}
    assert result["grading"]["unparseable"] == 2 and result["grading"]["errors"] == 0  # one per split
    assert result["n"] == 4 and result["task"] == "arithmetic" and result["backbone"] == "Qwen3-8B"


def test_same_json_as_the_cpu_evaluator(model_dir, splits, tmp_path, monkeypatch):
    """The CPU stage (backend local) on the same responses: its sampler and checkpoint loader are replaced by
    stand-ins returning the canned texts and lengths; everything after sampling is the stage's own code."""
    import rlrt.stages.evaluate as stage
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    stub = __import__("types").SimpleNamespace(config=__import__("types").SimpleNamespace(max_position_embeddings=40960))
    monkeypatch.setattr(stage, "load_checkpoint", lambda path: (stub, tok))  # the stage reads only its context size

    def fake_sample(model, tokenizer, prompts, n, max_new_tokens, **kw):
        assert n == N and max_new_tokens == 38912 and kw["temperature"] == 0.7 and kw["top_k"] == 20
        texts = [response(i, j) for i in range(len(prompts)) for j in range(n)]
        lengths = torch.tensor([n_tokens(i, j) for i in range(len(prompts)) for j in range(n)])
        return SimpleNamespace(texts=texts, lengths=lengths)

    monkeypatch.setattr(stage, "sample", fake_sample)
    cpu_out, gpu_out = tmp_path / "cpu.json", tmp_path / "vllm.json"
    stage.main(["--cfg", json.dumps({**CFG, "backend": "local"}), "--model", str(model_dir), "--data", *splits,
                "--out", str(cpu_out)])
    run_vllm(model_dir, splits, gpu_out)
    assert gpu_out.read_text() == cpu_out.read_text()  # byte for byte (write_json sorts keys)


def test_parquet_split_and_max_problems(model_dir, tmp_path):
    path = tmp_path / "math500.parquet"
    write_problems(path, [{c: {"source": "math500"}.get(c, r.get(c, "")) for c in PROBLEM_COLUMNS} for r in ROWS])
    result, llm, _ = run_vllm(model_dir, [str(path)], tmp_path / "e.json", cfg={**CFG, "max_problems": 3})
    assert result["splits"]["math500"]["correct_counts"] == [4, 1, 0]


def test_parse_outputs_refuses_a_short_matrix():
    outs = StandInLLM().generate(["a", "b", "c"], None)
    texts, lengths = vev.parse_outputs(outs, ROWS, N)
    assert texts[4] == response(1, 0) and lengths[:2] == [5, 6] and len(texts) == 12
    outs[1].outputs.pop()
    with pytest.raises(ValueError, match="problem 1 .* 3 samples, expected n=4"):
        vev.parse_outputs(outs, ROWS, N)
    with pytest.raises(ValueError, match="2 request outputs for 3 problems"):
        vev.parse_outputs(outs[:2], ROWS, N)


def test_build_requests_refuses_an_empty_question(model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    with pytest.raises(ValueError, match="row 1 .*'p1'.*no question"):
        vev.build_requests([ROWS[0], {**ROWS[1], "question": ""}], tok, CFG)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_missing_vllm_gives_a_clear_error(model_dir, splits, tmp_path):
    with pytest.raises(RuntimeError, match="needs vLLM"):
        vev.evaluate(CFG, model=str(model_dir), data_paths=splits, out=str(tmp_path / "x.json"))
    assert not (tmp_path / "x.json").exists()


# ---- the context: max_model_len from the run's own lengths, YaRN where needed, never a silent cut ----

def _model_copy(model_dir, tmp_path, **config):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(model_dir, d)
    write_model_config(d, **config)
    return d


def test_a_run_longer_than_the_context_is_refused_naming_keys_and_numbers(model_dir, splits, tmp_path):
    """Qwen3-4B-Base's 32,768 tokens cannot hold a prompt + 38,912 new tokens: without eval.rope_scaling the
    evaluation stops before vLLM starts (the factory is never called), naming the keys and both numbers."""
    d = _model_copy(model_dir, tmp_path, max_position_embeddings=32768)
    called = []
    with pytest.raises(ValueError, match=r"eval.max_new_tokens \(38912\) = (\d+) tokens, more than the model's "
                                         r"context of 32768 tokens.*eval.rope_scaling"):
        vev.evaluate(CFG, model=str(d), data_paths=splits, out=str(tmp_path / "x.json"),
                     llm_factory=lambda *a, **k: called.append(1), sampling_params_factory=dict)
    assert not called and not (tmp_path / "x.json").exists()
    too_small = {**CFG, "rope_scaling": {"rope_type": "yarn", "factor": 1.1}}
    with pytest.raises(ValueError, match=r"eval.rope_scaling.factor 1.1 x 32768 = 36044 tokens is still short"):
        vev.evaluate(too_small, model=str(d), data_paths=splits, out=str(tmp_path / "x.json"),
                     llm_factory=lambda *a, **k: called.append(1), sampling_params_factory=dict)
    assert not called


def test_yarn_is_applied_only_where_the_run_needs_it(model_dir, splits, tmp_path):
    cfg = {**CFG, "rope_scaling": {"rope_type": "yarn", "factor": 2.0}}
    d = _model_copy(model_dir, tmp_path, max_position_embeddings=32768)
    _, llm, made = run_vllm(d, splits, tmp_path / "e.json", cfg=cfg)
    assert made["hf_overrides"] == {"rope_parameters": {"rope_type": "yarn", "factor": 2.0, "rope_theta": 1000000,
                                                        "original_max_position_embeddings": 32768}}
    assert 38912 < made["max_model_len"] < 38912 + 100
    _, _, made = run_vllm(model_dir, splits, tmp_path / "e2.json", cfg=cfg)  # 40,960 natively: no YaRN
    assert "hf_overrides" not in made


def test_a_huge_native_context_does_not_set_max_model_len(model_dir, splits, tmp_path):
    """Qwen3-4B-Instruct-2507 declares 262,144 tokens; vLLM gets the run's own prompt + max_new_tokens."""
    d = _model_copy(model_dir, tmp_path, max_position_embeddings=262144)
    _, _, made = run_vllm(d, splits, tmp_path / "e.json")
    assert 38912 < made["max_model_len"] < 38912 + 100 and "hf_overrides" not in made


def test_model_context_reads_an_existing_yarn_config(tmp_path):
    write_model_config(tmp_path, max_position_embeddings=32768,
                       rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768})
    ctx = vev.model_context(tmp_path)
    assert ctx["native"] == 32768 and ctx["context"] == 131072 and ctx["rope_theta"] == 1000000
    assert vev.context_plan(ctx, 100, {"max_new_tokens": 38912}) == {"max_model_len": 39012}
    (tmp_path / "config.json").unlink()
    with pytest.raises(ValueError, match="no config.json"):
        vev.model_context(tmp_path)
