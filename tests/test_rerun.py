"""Rerun only what changed, on the finished config/ci.yaml run (``dag_run``): the job list Snakemake plans after a
config or code change, read from its dry run.

- RLRT's ε_w (base models): RLRT's runs on the base backbones, the new sweep point, their evaluations and what
  reads them; never GRPO or another method, the data, the backbones or the RLT branch.
- The evaluation temperature: the evaluations and what reads them; no training job.
- A module only the RLT branch imports (``rlrt.backends.local.rlt``): the RLT branch only (the rules' ``code``
  param, ``rlrt.codekey``).
- No stage reads the config behind Snakemake's back: every value reaches a job through its ``params``.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import ROOT


def plan(workdir: Path, overlay: str | None = None, tmp_path: Path | None = None) -> list[dict]:
    """The jobs `snakemake -n` plans on ``workdir`` (ci config, plus ``overlay`` YAML): rule and wildcards."""
    configs = [str(ROOT / "config" / "ci.yaml")]
    if overlay is not None:
        (tmp_path / "overlay.yaml").write_text(overlay)
        configs.append(str(tmp_path / "overlay.yaml"))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "-n", "--nolock", "--cores", "2", "--configfile", *configs]
    env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", proc.stdout):
        m = re.match(r"(local)?rule (\w+):\n", block)
        if m:
            wc = re.search(r"^\s+wildcards: (.*)$", block, re.M)
            jobs.append({"rule": m.group(2),
                         "wildcards": dict(kv.split("=", 1) for kv in re.split(r", (?=\w+=)", wc.group(1)))
                         if wc else {}})
    return jobs


def keys(jobs: list[dict], rule: str) -> set[tuple[str, ...]]:
    return {tuple(j["wildcards"].values()) for j in jobs if j["rule"] == rule}


def test_nothing_changed_plans_nothing(dag_run):
    assert plan(dag_run) == []


def test_rlrt_eps_w_reruns_rlrt_only(dag_run, tmp_path):
    jobs = plan(dag_run, "methods:\n  rlrt: {eps_w: 0.7}\n", tmp_path)
    # base models take methods.rlrt.eps_w (instruct / thinking keep their method_overrides); the ci sweep of
    # eps_w over [0.5, 1.0] on S-base gains the point 1.0, which was the plain run before
    from rlrt.plan import split_seed

    changed = {("S-base", "rlrt"), ("M-base", "rlrt"), ("S-base", "rlrt@eps_w=1.0")}
    unseeded = lambda ks: {(b, split_seed(r)[0]) for b, r in ks}  # noqa: E731 - a claims replicate -> its run
    assert unseeded(keys(jobs, "rl")) == changed
    # the claims study's replicates of those runs (ci: seed index 1) rerun with them
    assert {("S-base", "rlrt+seed=1"), ("M-base", "rlrt+seed=1")} <= keys(jobs, "rl")
    # Table 1's cells, and what the claims compare: the new eps_w = 1.0 point is claim 4's larger eps_w
    assert unseeded(keys(jobs, "evaluate")) == changed
    assert {("S-base", "rlrt+seed=1"), ("S-base", "rlrt@eps_w=1.0+seed=1")} <= keys(jobs, "evaluate")
    assert keys(jobs, "evaluate_passk") == {("M-base", "rlrt"), ("M-base", "rlrt+seed=1")}  # Fig 8 / claim 6
    rules = Counter(j["rule"] for j in jobs)
    untouched = {"prepare_data", "tokenizer", "backbone", "mlflow_init", "table4"}
    assert not untouched & set(rules) and not [r for r in rules if r.startswith("rlt_")]
    # what reads RLRT's runs: tables and figures, the analyses that study them, the DVC summaries
    assert set(rules) <= {"rl", "evaluate", "evaluate_passk", "table1", "table3", "sweeps_table", "fig5", "fig8",
                          "fig9", "analysis_heatmaps", "analysis_reflection", "analysis_shift", "summaries", "claims",
                          "all"}


def test_a_backbones_rl_override_reruns_that_backbones_runs_only(dag_run, tmp_path):
    """``backbones.M-base.rl.steps``: every RL run on M-base (Table 1, sweeps, Fig 8, the claims' replicates) and
    what reads them; no run of another backbone, no backbone, no RLT job."""
    jobs = plan(dag_run, "backbones:\n  M-base:\n    rl: {steps: 4}\n", tmp_path)
    rl = keys(jobs, "rl")
    m_runs = {p.name for p in (dag_run / "results" / "runs" / "M-base").iterdir() if (p / "metrics.json").exists()}
    assert rl == {("M-base", r) for r in m_runs} and m_runs
    assert {b for b, _ in keys(jobs, "evaluate")} == {"M-base"}
    rules = set(j["rule"] for j in jobs)
    assert not rules & {"backbone", "prepare_data", "tokenizer"} and not [r for r in rules if r.startswith("rlt_")]


def test_eval_temperature_reruns_evaluation_and_readers_only(dag_run, tmp_path):
    jobs = plan(dag_run, "eval: {temperature: 0.6}\n", tmp_path)
    rules = Counter(j["rule"] for j in jobs)
    assert rules["evaluate"] == len(list((dag_run / "results" / "eval").rglob("*.json")))  # every Table 1 cell
    assert rules["evaluate_passk"] and rules["rlt_evaluate"]
    trainers = {"rl", "backbone", "prepare_data", "tokenizer", "rlt_teacher_sft", "rlt_teacher_rl", "rlt_distill",
                "rlt_student_sft", "rlt_rl", "rlt_reward_rank_data", "rlt_data"}
    assert not trainers & set(rules), rules
    assert not [r for r in rules if r.startswith("analysis_")]  # the analyses sample with analysis.sampling


def test_editing_an_rlt_only_module_reruns_the_rlt_branch_only(dag_run, tmp_path):
    from rlrt.codekey import closure

    module = ROOT / "src" / "rlrt" / "backends" / "local" / "rlt.py"
    assert "rlrt.backends.local.rlt" not in closure("rlrt.stages.rl", ("rlrt.backends.verl",))
    original = module.read_bytes()
    try:
        module.write_bytes(original + b"\n# an edit\n")
        jobs = plan(dag_run)
    finally:
        module.write_bytes(original)
    rules = set(j["rule"] for j in jobs)
    assert {"rlt_teacher_rl", "rlt_student_sft", "rlt_evaluate", "rlt_table1"} <= rules
    # the RLT branch and what reads it: the DVC summaries and the claims table (claims 7 and 8 are RLT's)
    assert rules <= {r for r in rules if r.startswith("rlt_")} | {"summaries", "claims", "all"}, rules
    assert plan(dag_run) == []  # restored: the code key is a content hash, not a time


def test_stages_read_the_config_only_through_params():
    """No stage module loads a config file or the Snakemake config: what a job computes is in its --cfg."""
    for path in sorted((ROOT / "src" / "rlrt" / "stages").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "rlrt.config":
                names = {a.name for a in node.names}
                assert not names & {"load", "load_overlay", "BASE_CONFIG", "_read_config"}, (path.name, names)
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not re.search(r"config/\w+\.yaml", node.value), (path.name, node.value)


@pytest.mark.parametrize("module, expected_in, expected_out, imports_verl", [
    ("rlrt.stages.rl", "rlrt.methods.shaping", "rlrt.backends.local.rlt", True),
    ("rlrt.stages.rlt_teacher_rl", "rlrt.methods.rlt_reward", "rlrt.backends.verl.train", True),
    ("rlrt.stages.backbone", "rlrt.backends.local.lm", "rlrt.backends.verl.train", False),
    ("rlrt.stages.evaluate", "rlrt.tasks.grading", "rlrt.tracking", True),
])
def test_code_closure_follows_imports_narrowly(module, expected_in, expected_out, imports_verl):
    from rlrt.codekey import closure, code_key

    mods = closure(module, ("rlrt.backends.verl",))
    assert expected_in in mods and expected_out not in mods
    # the verl backend's modules key a stage only under backend: verl (a lazy import in the stage)
    assert (code_key(module, ("rlrt.backends.verl",)) != code_key(module)) == imports_verl
