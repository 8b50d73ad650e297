"""config/paper.yaml plans the papers' whole matrix with GPU resources on every GPU job (a dry run, no GPU).

The counts below are worked out by hand from the papers (RLRT Table 1 / Table 5 / Fig 8-9, RLT Tables 1-2) and
checked against the config's own derivation, so a config edit that silently drops a run fails here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter

import pytest

from conftest import ROOT
from rlrt.resources import merged

# Stage kind of every rule that runs a model (GPU at paper scale) -- the resources block it must carry.
GPU_RULES = {
    "rl": "rl", "evaluate": "evaluate", "evaluate_passk": "evaluate", "rlt_evaluate": "evaluate",
    "analysis_heatmaps": "analysis", "analysis_markers": "analysis", "analysis_reflection": "analysis",
    "analysis_shift": "analysis", "rlt_teacher_sft": "rlt_train", "rlt_teacher_rl": "rlt_train",
    "rlt_student_sft": "rlt_train", "rlt_rl": "rlt_train", "rlt_distill": "rlt_generate",
    "rlt_reward_rank_data": "rlt_generate",
}
LOCAL_RULES = {"all", "mlflow_init", "table1", "table3", "table4", "sweeps_table", "fig5", "fig8", "fig9",
               "rlt_table1", "rlt_table2", "rlt_countdown_figure", "rlt_reward_rank_figure", "summaries", "claims"}


def dry_run(tmp_path, *extra: str, overlay: str | None = None) -> list[dict]:
    """Every planned job of `snakemake -n --configfile config/paper.yaml [overlay]`: rule, wildcards, resources."""
    configs = [str(ROOT / "config" / "paper.yaml")]
    if overlay is not None:
        (tmp_path / "overlay.yaml").write_text(overlay)
        configs.append(str(tmp_path / "overlay.yaml"))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "-n", "--cores", "32", *extra, "--configfile", *configs]
    env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout[-4000:]
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", proc.stdout + proc.stderr):
        m = re.match(r"(local)?rule (\w+):\n", block)
        if not m:
            continue
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        wc = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        jobs.append({
            "rule": m.group(2),
            "wildcards": dict(kv.split("=", 1) for kv in wc.group(1).split(", ")) if wc else {},
            "resources": dict(kv.split("=", 1) for kv in res.group(1).split(", ")) if res else {},
        })
    return jobs


def declared_localrules() -> set[str]:
    """Rules named in a `localrules:` directive of the Snakefile or a rule file (a dry run does not mark them)."""
    names = set()
    for f in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]:
        for block in re.findall(r"^\s*localrules:\n((?:\s+\w+,?\n)+)", f.read_text(), re.M):
            names |= set(re.findall(r"\w+", block))
    return names


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    return dry_run(tmp_path_factory.mktemp("paper"))


@pytest.fixture(scope="module")
def rlt_jobs(tmp_path_factory):
    """The RLT branch at the paper's sizes, planned on the local backend (the same plan as on verl)."""
    return dry_run(tmp_path_factory.mktemp("paper_rlt"), overlay="backend: local\nrlt: {enabled: true}\n")


@pytest.fixture(scope="module")
def paper():
    from rlrt.config import load_overlay

    return load_overlay(ROOT / "config" / "paper.yaml")


def test_paper_matrix_job_counts(jobs, paper):
    from rlrt.claims import planned_runs

    counts = Counter(j["rule"] for j in jobs)
    # RL: Table 1 = 4 backbones x {GRPO, RLSD, RLRT} + {SDPO, SRPO} on the instruct and thinking models (the paper
    # skips them on base models, App. F.2) = 16; eps_w sweeps of RLRT and RLSD on all 4 (2 new points each; the best
    # value is the Table 1 run) = 16; SRPO's beta sweep on Qwen3-8B (2 new points) = 2; GRPO+EB, DIVER (8B-Base),
    # RLRT-all = 3.
    assert counts["rl"] == 16 + 16 + 2 + 3 == 37 == sum(len(r) for r in planned_runs(paper).values())
    # every Table 1 cell (the untrained backbones + the 16 trained runs) + what the claims table compares beyond
    # them: RLRT at the smallest eps_w on the two base models (claim 4), RLRT-all (claim 3); one seed (paper.yaml)
    assert counts["evaluate"] == 4 + 16 + 2 + 1
    assert counts["claims"] == 1
    assert counts["evaluate_passk"] == 4  # Fig 8 on Qwen3-8B-Base: GRPO, GRPO+EB, DIVER, RLRT
    # DAPO-Math-17k, the six benchmarks, GPQA-Diamond (RLT Tables 1-2: rlt.test_splits), Bespoke-Stratos-17k (RLT)
    assert counts["prepare_dataset"] == 1 + 6 + 1 + 1
    assert counts["backbone"] == 4 + 2  # the four Qwen3 models, Qwen2.5-7B / 32B-Instruct (RLT)
    assert counts["prepare_data"] == counts["tokenizer"] == 0  # no synthetic data, no stand-in tokenizer
    assert counts["rlt_teacher_sft"] == counts["rlt_teacher_rl"] == 1  # the RLT branch, on verl too
    for rule in ("table1", "table3", "table4", "sweeps_table", "fig5", "fig8", "fig9",
                 "analysis_heatmaps", "analysis_markers", "analysis_reflection", "analysis_shift"):
        assert counts[rule] == 1, rule
    evaluated = {(j["wildcards"]["backbone"], j["wildcards"]["run"]) for j in jobs if j["rule"] == "evaluate"}
    assert {b for b, r in evaluated if r in ("sdpo", "srpo")} == {"Qwen3-4B-Instruct-2507", "Qwen3-8B"}
    trained = {j["wildcards"]["run"] for j in jobs if j["rule"] == "rl" and j["wildcards"]["backbone"] == "Qwen3-8B"}
    assert {"grpo", "rlsd", "rlrt", "rlrt@eps_w=0.5", "rlrt@eps_w=1.0", "rlsd@eps_w=0.5"} <= trained


def test_verl_refuses_an_ema_teacher_before_any_job(paper):
    """SDPO / SRPO train on verl toward the frozen initial policy (EMA rate 0, the paper's); an EMA teacher stops at
    validation, naming the key -- not a day later when the RL job starts."""
    import copy

    from rlrt.config import ConfigError, validate

    cfg = copy.deepcopy(paper)
    validate(cfg)
    cfg["methods"]["sdpo"] = {"ema_rate": 0.05}
    with pytest.raises(ConfigError, match=r"^config key 'methods.sdpo.ema_rate': backend verl distils toward"):
        validate(cfg)
    cfg["backend"] = "local"  # the same plan on the local engine is fine
    validate(cfg)


def test_every_gpu_rule_carries_its_gpu_resources(jobs, paper):
    assert jobs
    for j in jobs:
        rule, res = j["rule"], j["resources"]
        if rule in GPU_RULES:  # a backbone's own resources.<kind> over the kind's (the 32B student's evaluation)
            want = merged(paper, GPU_RULES[rule], j["wildcards"].get("backbone") or j["wildcards"].get("student"))
            assert rule not in declared_localrules(), rule
            assert int(res["gpu"]) == want["gpus"] > 0, (rule, res)
            assert int(res["mem_mb"]) == want["mem_mb"] and int(res["runtime"]) == want["runtime"], (rule, res)
            assert int(res["cpus_per_task"]) == want["cpus"], (rule, res)
        elif rule in LOCAL_RULES:
            assert rule in declared_localrules(), rule  # tables and figures run on the driver, never cluster jobs
        else:
            assert rule in {"prepare_dataset", "backbone", "rlt_data"}, f"unclassified rule {rule}"
            assert "gpu" not in res, (rule, res)
    rl = next(j for j in jobs if j["rule"] == "rl")
    assert rl["resources"]["gpu"] == "2" and rl["resources"]["runtime"] == str(3 * 24 * 60)  # 2 GPUs x 3 days


def test_embedded_default_asks_for_no_gpu(tmp_path):
    """The embedded default's jobs ask for CPUs only: `make run` on a laptop never waits for a GPU."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "-n", "--cores", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rule rl:" in proc.stdout and "gpu=" not in proc.stdout


def test_verl_save_freq_must_divide_the_saved_steps(paper):
    """verl writes checkpoints only at multiples of trainer.save_freq: an rl.save_steps entry between them (an
    analysis checkpoint that would never exist) stops at validation."""
    import copy

    from rlrt.config import ConfigError, validate

    cfg = copy.deepcopy(paper)
    cfg["rl"]["save_steps"] = [50, 105]
    with pytest.raises(ConfigError, match=r"^config key 'verl.save_freq': rl.save_steps \[105\] are not multiples"):
        validate(cfg)


def test_rlt_branch_at_paper_sizes(rlt_jobs, paper):
    """With the branch switched on (local backend), the RLT paper's matrix: 2 students x {RLT, reference} x
    {17K, 1K} student SFTs + countdown + 16 reward ranks, Bespoke-Stratos-17k staged, the Qwen2.5 models."""
    counts = Counter(j["rule"] for j in rlt_jobs)
    assert counts["rlt_student_sft"] == 2 * 4 + 1 + 16
    assert counts["rlt_teacher_sft"] == counts["rlt_teacher_rl"] == 1
    assert counts["prepare_dataset"] == 1 + 6 + 1 + 1 and counts["backbone"] == 4 + 2   # + GPQA-Diamond
    for rule in ("rlt_table1", "rlt_table2", "rlt_countdown_figure", "rlt_reward_rank_figure"):
        assert counts[rule] == 1, rule
    for j in rlt_jobs:
        if j["rule"] in GPU_RULES and j["rule"].startswith("rlt_"):
            want = merged(paper, GPU_RULES[j["rule"]], j["wildcards"].get("student"))
            assert int(j["resources"]["gpu"]) == want["gpus"] > 0, j
    # vLLM's tensor parallelism over 2 GPUs for the 32B student (one 80 GB card leaves it too little KV cache)
    assert {j["wildcards"]["student"]: int(j["resources"]["gpu"]) for j in rlt_jobs if j["rule"] == "rlt_evaluate"} \
        == {"Qwen2.5-7B-Instruct": 1, "Qwen2.5-32B-Instruct": 2}


def test_verl_rlt_branch_needs_a_gpu_for_the_trainer_beside_the_reward_worker(paper):
    """The teacher's RL on verl gives its reward worker GPUs of the rlt_train job: a job that leaves none to the
    trainer stops at validation, naming the resource."""
    import copy

    from rlrt.config import ConfigError, validate

    validate(copy.deepcopy(paper))
    cfg = copy.deepcopy(paper)
    cfg["resources"]["rlt_train"]["gpus"] = 1
    with pytest.raises(ConfigError, match=r"^config key 'resources.rlt_train.gpus': 1 GPU\(s\) leave none"):
        validate(cfg)
    cfg["verl"]["rlt_reward_gpus"] = 2
    cfg["resources"]["rlt_train"]["gpus"] = 2
    with pytest.raises(ConfigError, match="reward worker's 2"):
        validate(cfg)


def test_analyses_run_on_the_gpu_at_paper_scale_and_on_the_cpu_locally(tmp_path):
    """The four analysis jobs load their models onto the job's GPU under backend verl (``device: cuda`` in their
    config slice) and keep the embedded default's slice unchanged (no key: its analyses do not rerun)."""
    def analysis_cfgs(*configs):
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
               str(tmp_path), "-n", "-p", "--cores", "4", "--configfile", *configs]
        env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "rlrt.stages.analysis_" in ln]
        assert len(lines) == 4, lines
        return [json.loads(re.search(r"--cfg '(\{.*?\})' ", ln).group(1)) for ln in lines]

    assert all(c["device"] == "cuda" for c in analysis_cfgs(str(ROOT / "config" / "paper.yaml")))
    assert all("device" not in c for c in analysis_cfgs(str(ROOT / "config" / "config.yaml")))


def test_device_resolution_and_the_gpu_sampling_path(tmp_path):
    import torch

    from rlrt.analysis.views import _OnDevice, load_model, resolve_device
    from rlrt.backends.local import sampler
    from rlrt.backends.local.model import build_model, save_checkpoint
    from rlrt.tasks.tokenizer import train_tokenizer

    assert resolve_device(None) == resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU is visible"):
            resolve_device("cuda")
    tok = train_tokenizer(["What is 1 + 2? \\boxed{3}"] * 50, 300)
    model = build_model({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                         "num_attention_heads": 2, "num_key_value_heads": 1}, tok)
    save_checkpoint(model, tok, tmp_path / "m")
    loaded, _ = load_model(tmp_path / "m")  # the default: CPU, float32, the very weights
    assert next(loaded.parameters()).dtype == torch.float32
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    # a model off the CPU samples through transformers' generate (the lean loop is CPU-only): the wrapper hides
    # the decoder internals from sampler.supports and moves the batch to the model and the tokens back
    assert sampler.supports(model) and not sampler.supports(_OnDevice(model))
    ids, mask = torch.tensor([[5, 6, 7]]), torch.ones(1, 3, dtype=torch.long)
    from transformers import GenerationConfig

    out = _OnDevice(model).generate(input_ids=ids, attention_mask=mask, generation_config=GenerationConfig(
        do_sample=False, max_new_tokens=2, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))
    assert out.device.type == "cpu" and out.shape[0] == 1 and torch.equal(out[:, :3], ids)
