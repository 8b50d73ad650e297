"""Config validation: every shipped config is valid; a bad value stops with one message naming the key."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlrt.config import ConfigError, load, load_overlay, validate
from rlrt.plan import method_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def cfg():
    return load(ROOT / "config" / "config.yaml")


def test_base_config_is_valid():
    load(ROOT / "config" / "config.yaml")


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda c: c["methods"]["run"].append("ppo_magic"), "methods.run[5]"),
        (lambda c: c["rl"].update(stepz=3), "rl.stepz"),
        (lambda c: c["rl"].update(steps="ten"), "rl.steps"),
        (lambda c: c["rl"].update(clip_low=-0.1), "rl.clip_low"),
        (lambda c: c["methods"].update(rlrt={"lambda_init": 1.5}), "methods.rlrt.lambda_init"),
        (lambda c: c["eval"].update(ks=[1, 64]), "eval.ks"),
        (lambda c: c["backbones"]["S-instruct"].update(parent="nope"), "backbones.S-instruct.parent"),
        (lambda c: c["data"].update(test_splits=["test", "missing"]), "data.test_splits"),
        (lambda c: c["backbones"]["M-base"].update(kind="huge"), "backbones.M-base.kind"),
        (lambda c: c["backbones"]["S-base"].update(privileged_context={"fraction": 1.5, "follow": 0.5}),
         "backbones.S-base.privileged_context.fraction"),
        (lambda c: c["backbones"]["S-base"].update(privileged_context={"fraction": 0.2}),
         "backbones.S-base.privileged_context"),
    ],
)
def test_bad_value_names_the_key(cfg, mutate, key):
    bad = copy.deepcopy(cfg)
    mutate(bad)
    with pytest.raises(ConfigError) as e:
        validate(bad)
    msg = str(e.value)
    assert f"'{key}'" in msg and "\n" not in msg


def test_verl_backend_needs_verl_where_the_jobs_run(cfg, monkeypatch):
    """``backend: verl`` without verl importable (and no --sdm bringing the GPU environment) stops before any job
    with one line naming the key; under --sdm, or with verl installed, it passes; local never needs verl."""
    import importlib.util

    from rlrt.checks.backend import check_backend_installed

    verl_cfg = {**copy.deepcopy(cfg), "backend": "verl"}
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "verl" else real(name, *a))
    with pytest.raises(ConfigError) as e:
        check_backend_installed(verl_cfg, deployment=())
    msg = str(e.value)
    assert msg.startswith("config key 'backend': verl is not installed in this environment") and "\n" not in msg
    # the jobs' conda env / container has it (tests/test_slurm_resources.py: what each must provide)
    check_backend_installed(verl_cfg, deployment=["CONDA"], conda_env=ROOT / "envs" / "gpu.yaml")
    check_backend_installed({**verl_cfg, "container": "docker://rlrt-gpu"}, deployment=["APPTAINER"])
    check_backend_installed(cfg, deployment=())  # local
    monkeypatch.setattr(importlib.util, "find_spec", real)
    check_backend_installed(verl_cfg, deployment=())  # verl 0.9.1 is installed with the test extras


def test_missing_required_key_names_its_block(cfg):
    bad = copy.deepcopy(cfg)
    del bad["rl"]["steps"]
    with pytest.raises(ConfigError, match=r"^config key 'rl': 'steps' is a required property$"):
        validate(bad)


def test_method_overrides_follow_backbone_kind(cfg):
    assert method_config(cfg, "S-base", "rlrt")["eps_w"] == 1.0
    assert method_config(cfg, "S-instruct", "rlrt")["eps_w"] == 0.5
    assert method_config(cfg, "M-thinking", "rlrt") ["lambda_decay_steps"] == 30
    assert method_config(cfg, "S-base", "grpo")["norm_adv_by_std"] is False
    assert method_config(cfg, "S-base", "rlsd")["norm_adv_by_std"] is True


def test_snakemake_refuses_a_bad_config_before_any_job(tmp_path):
    bad = load_overlay(ROOT / "config" / "ci.yaml")
    bad["rl"]["mini_batch"] = "eight"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
         "--configfile", str(tmp_path / "bad.yaml"), "--cores", "1", "--dry-run"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert "invalid config: config key 'rl.mini_batch'" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_run_ids_round_trip_and_sweeps_dedupe(cfg):
    from rlrt.claims import planned_runs
    from rlrt.plan import parse_run_id, run_config, run_id, sweep_runs

    assert run_id("rlrt", "eps_w", 0.5) == "rlrt@eps_w=0.5" and run_id("grpo") == "grpo"
    assert parse_run_id("rlrt@eps_w=0.5") == ("rlrt", {"eps_w": 0.5})
    assert parse_run_id("rlsd@context=sibling") == ("rlsd", {"context": "sibling"})
    assert parse_run_id("srpo@beta=0.0") == ("srpo", {"beta": 0.0})
    # S-base: RLRT's configured eps_w is 1.0, so that sweep point is the plain run
    sw = {"method": "rlrt", "key": "eps_w", "values": [0.2, 0.5, 1.0], "backbones": ["S-base"]}
    assert sweep_runs(cfg, sw, "S-base") == ["rlrt@eps_w=0.2", "rlrt@eps_w=0.5", "rlrt"]
    # on the instruct backbone the override (0.5) is configured instead
    assert sweep_runs(cfg, {**sw, "backbones": ["S-instruct"]}, "S-instruct") == [
        "rlrt@eps_w=0.2", "rlrt", "rlrt@eps_w=1.0"]
    assert run_config(cfg, "S-base", "rlrt@eps_w=0.2")["eps_w"] == 0.2
    assert run_config(cfg, "S-instruct", "rlrt_all")["eps_w"] == 0.5
    runs = planned_runs(cfg)
    assert "rlrt_all" in runs["S-instruct"] and "rlrt_all" not in runs["S-base"]
    assert len(runs["S-base"]) == len(set(runs["S-base"]))


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda c: c["methods"]["run"].append("ppo"), "methods.run[5]"),
        (lambda c: c["methods"].update(sdpo={"alpha": 1.5}), "methods.sdpo.alpha"),
        (lambda c: c["methods"]["diver"].update(variant="rouge"), "methods.diver.variant"),
        (lambda c: c["experiments"]["sweeps"][0].update(key="not_a_setting"), "experiments.sweeps[0].key"),
        (lambda c: c["experiments"]["fig8"].update(runs=["grpo", "rlrt_all"]), "experiments.fig8.runs"),
        (lambda c: c["experiments"]["extra_runs"].update(grpo_eb=["XL-base"]), "experiments.extra_runs.grpo_eb"),
        (lambda c: c["rl"].update(clip_ratio_c=0.5), "rl.clip_ratio_c"),
        (lambda c: c["rlt"].update(teacher="XL-base"), "rlt.teacher"),
        (lambda c: c["rlt"].update(students=["S-base", "nope"]), "rlt.students"),
        (lambda c: c["rlt"].update(n_small=4096), "rlt.n_small"),
        (lambda c: c["rlt"].update(n_questions=10**6), "rlt.n_questions"),
        (lambda c: c["rlt"]["teacher_rl"].update(n_samples=1), "rlt.teacher_rl.n_samples"),
        (lambda c: c["rlt"]["teacher_rl"].update(lam=3.0), "rlt.teacher_rl.lam"),
        (lambda c: c["rlt"]["reward_rank"].update(n_questions=5000), "rlt.reward_rank.n_questions"),
        (lambda c: c["rlt"]["eval"].update(ks=[1, 64]), "rlt.eval.ks"),
    ],
)
def test_experiment_config_errors_name_the_key(cfg, mutate, key):
    bad = copy.deepcopy(cfg)
    mutate(bad)
    with pytest.raises(ConfigError) as e:
        validate(bad)
    assert key in str(e.value), str(e.value)


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda c: c["analysis"]["shift"].update(runs=["grpo", "rlrt_all"]), "analysis.shift"),
        (lambda c: c["analysis"]["heatmaps"].update(backbone="XL"), "analysis.heatmaps.backbone"),
        (lambda c: c["analysis"]["reflection"].update(hard=[3, 9]), "analysis.reflection.hard"),
        (lambda c: c["analysis"]["markers"].update(split="dev"), "analysis.markers.split"),
    ],
)
def test_analysis_config_errors_name_the_key(cfg, mutate, key):
    bad = copy.deepcopy(cfg)
    mutate(bad)
    with pytest.raises(ConfigError) as e:
        validate(bad)
    assert key in str(e.value), str(e.value)


def test_analysis_defaults_come_from_the_schema(cfg):
    from rlrt.schema import analysis_config

    c = copy.deepcopy(cfg)
    c["analysis"] = {"shift": {"backbone": "S-base"}}
    a = analysis_config(c)
    assert a["shift"]["js_threshold"] == 0.1 and a["shift"]["runs"]
    assert "heatmaps" not in a  # a missing sub-block means that analysis does not run
    assert not {"heatmaps", "markers", "reflection", "shift"} & set(analysis_config({"analysis": None}))
