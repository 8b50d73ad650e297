"""The RLT paper's own settings in config/paper.yaml (issue 31 §3): the 1K-question students' SFT recipe (s1's,
"based on data size"), the cold-start RL batch of 1024 (RLT Sec. 4.3) and the reward-rank study's size; what the
rules hand the jobs is read off a dry run's shell commands."""

from __future__ import annotations

import copy
import json
import os
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT
from rlrt.config import ConfigError, load, load_overlay, validate
from rlrt.rlt_models import student_sft_settings


@pytest.fixture(scope="module")
def paper():
    return load_overlay(ROOT / "config" / "paper.yaml")


def test_sft_recipe_by_data_size(paper):
    rlt = paper["rlt"]
    full, small = rlt["student_sft"], {**rlt["student_sft"], **rlt["student_sft_small"]}
    assert (full["steps"], full["batch_size"]) == (523, 96)            # Bespoke-Stratos: 3 epochs of 16,710
    assert (small["steps"], small["batch_size"], small["lr"]) == (315, 16, 1.0e-5)   # s1: 5 epochs of 1,000
    assert small["steps"] * small["batch_size"] == pytest.approx(5 * rlt["n_small"], rel=0.01)
    for data, want in [("rlt", full), ("reference", full), ("countdown", full), ("rlt_small", small),
                       ("reference_small", small), ("rlt_small+seed=1", small), ("rank1", small), ("rank16", small)]:
        assert student_sft_settings(rlt, data) == want, data
    bigger = {**rlt, "reward_rank": {**rlt["reward_rank"], "n_questions": rlt["n_questions"]}}
    assert student_sft_settings(bigger, "rank3") == full   # the paper's 17K per rank: the 17K recipe


def test_the_default_keeps_one_budget_for_every_size():
    rlt = load(ROOT / "config" / "config.yaml")["rlt"]
    assert "student_sft_small" not in rlt
    for data in ("rlt", "rlt_small", "reference_small", "rank2", "countdown"):
        assert student_sft_settings(rlt, data) == rlt["student_sft"]


def test_cold_start_batch_is_1024_and_a_bad_mini_batch_names_its_key(paper):
    cold = {**paper["rl"], **paper["rlt"]["cold_start"]}
    assert cold["question_batch"] * cold["n_rollouts"] == 1024 and cold["lr"] == 1.0e-6
    assert paper["rl"]["question_batch"] == 256   # the RLRT runs keep Table 5's batch
    cfg = copy.deepcopy(paper)
    cfg["rlt"]["cold_start"]["mini_batch"] = 32
    with pytest.raises(ConfigError, match=r"^config key 'rlt.cold_start.mini_batch': .*\(32\) is larger than its "
                                          r"question batch \(16"):
        validate(cfg)


def shell_cfgs(tmp_path, *targets):
    """{stage module: its --cfg JSON} of the jobs a paper-config dry run prints for ``targets``."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "-n", "-p", "--cores", "64", "--configfile", str(ROOT / "config" / "paper.yaml"), "--", *targets]
    env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    out = {}
    for line in (proc.stdout + proc.stderr).splitlines():
        if "--cfg" not in line or "-m rlrt.stages." not in line:
            continue
        words = shlex.split(line.split(" > ", 1)[0])
        stage = words[words.index("-m") + 1]
        target = words[words.index("--out") + 1] if "--out" in words else ""   # .../students/<student>/<model>/model
        model = target.split("/")[4] if target.startswith("results-paper/rlt/students/") else ""
        out[(stage, model)] = json.loads(words[words.index("--cfg") + 1])
    return out


def test_rules_hand_the_jobs_the_papers_settings(tmp_path):
    st = "results-paper/rlt/students/Qwen2.5-7B-Instruct"
    cfgs = shell_cfgs(tmp_path, f"{st}/grpo-sft-rlt/metrics.json", f"{st}/sft-rlt_small/metrics.json")
    rl = cfgs[("rlrt.stages.rl", "grpo-sft-rlt")]["rl"]
    assert (rl["question_batch"], rl["n_rollouts"], rl["mini_batch"], rl["lr"], rl["steps"]) == (16, 64, 16, 1e-6, 125)
    assert cfgs[("rlrt.stages.rlt_student_sft", "sft-rlt_small")]["student_sft"]["batch_size"] == 16
    assert cfgs[("rlrt.stages.rlt_student_sft", "sft-rlt")]["student_sft"]["batch_size"] == 96
