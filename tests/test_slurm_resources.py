"""The config -> Snakemake resources -> sbatch mapping (rlrt.resources) without a cluster, its validation, and the
plan-time check that the jobs' software deployment provides verl (rlrt.checks.backend.check_backend_installed).

The sbatch lines here are built by the installed SLURM plugin's own functions (``get_submit_command`` and
``set_gres_string``, snakemake-executor-plugin-slurm 2.8) from the resources our mapping gives; tests/test_slurm.py
submits them to a real single-node cluster.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from types import SimpleNamespace

import pytest

from conftest import ROOT
from rlrt.checks.backend import check_backend_installed
from rlrt.config import ConfigError, load_overlay, validate
from rlrt.resources import job_gpus, job_resources, managed_option, merged


@pytest.fixture(scope="module")
def paper():
    return load_overlay(ROOT / "config" / "paper.yaml")


@pytest.fixture(scope="module")
def ci():
    return load_overlay(ROOT / "config" / "ci.yaml")


def _with(cfg: dict, resources: dict | None = None, backbones: dict | None = None) -> dict:
    """``cfg`` with resources.<kind> / backbones.<name> blocks updated key by key (as an overlay merges)."""
    out = copy.deepcopy(cfg)
    for kind, block in (resources or {}).items():
        out["resources"].setdefault(kind, {}).update(block)
    for name, block in (backbones or {}).items():
        out["backbones"][name].update(block)
    return out


class _Resources(dict):
    """What the plugin reads from ``job.resources``: ``.get`` and attribute access."""

    __getattr__ = dict.__getitem__


def sbatch_line(resources: dict) -> str:
    """The sbatch line snakemake-executor-plugin-slurm 2.8 builds for a job with these Snakemake resources (its
    own get_submit_command + set_gres_string; account, partition string and workdir as the plugin passes them)."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    part = f" -p {resources['slurm_partition']}" if resources.get("slurm_partition") else ""
    job = SimpleNamespace(resources=_Resources(resources), threads=resources["cpus_per_task"])
    params = {"run_uuid": "uuid", "slurm_logfile": "log", "comment_str": "rule_x", "account": "",
              "partition": part, "workdir": "/w"}
    settings = SimpleNamespace(requeue=True, no_requeue=False, qos=None, reservation=None)
    return get_submit_command(job, params, settings=settings) + set_gres_string(job)


# ---------------------------------------------------------------- the mapping ----

def test_cpu_and_gpu_jobs_of_the_paper_config(paper):
    """A CPU kind asks for no GPU and no node count; a GPU kind gets --gpus=N and --nodes=1 (a per-job GPU total
    SLURM could otherwise spread over nodes, while every GPU stage runs on one node)."""
    prep = job_resources(paper, "prepare")
    assert prep == {"mem_mb": 32000, "runtime": 240, "cpus_per_task": 4}
    line = sbatch_line(prep)
    assert "--gpus" not in line and "--gres" not in line and "--nodes" not in line and "--ntasks=1" in line
    rl = job_resources(paper, "rl")
    assert rl == {"mem_mb": 480000, "runtime": 4320, "cpus_per_task": 32, "gpu": 2, "nodes": 1}
    line = sbatch_line(rl)
    assert " --gpus=2" in line and " --nodes=1" in line and "--gres" not in line and "--ntasks" not in line
    assert " --mem 480000" in line and " -t 4320" in line and "--cpus-per-task=32" in line


def test_a_backbones_own_resources_win_for_its_jobs_only(paper):
    """The 32B student is evaluated on 2 GPUs (vLLM tensor parallelism = the job's GPUs); every other backbone,
    and a job that names no backbone, keeps resources.evaluate's one GPU."""
    assert job_gpus(paper, "evaluate", "Qwen2.5-32B-Instruct") == 2
    assert job_gpus(paper, "evaluate", "Qwen2.5-7B-Instruct") == 1
    assert job_gpus(paper, "evaluate") == 1
    assert job_gpus(paper, "rlt_train", "Qwen2.5-32B-Instruct") == 8  # no own rlt_train block: the kind's
    assert " --gpus=2" in sbatch_line(job_resources(paper, "evaluate", "Qwen2.5-32B-Instruct"))


def test_gres_site_asks_with_gres_and_tells_the_job_step(paper):
    """gpu_flag: gres -> --gres=gpu:[<model>:]N instead of --gpus (never both); the `gpus` resource the job step's
    srun reads carries the count; --nodes=1 stays."""
    cfg = _with(paper, {"default": {"gpu_flag": "gres"}})
    validate(cfg)
    rl = job_resources(cfg, "rl")
    assert rl["gres"] == "gpu:2" and rl["gpus"] == 2 and "gpu" not in rl and rl["nodes"] == 1
    line = sbatch_line(rl)
    assert " --gres=gpu:2" in line and "--gpus" not in line and " --nodes=1" in line
    assert "--gres" not in sbatch_line(job_resources(cfg, "prepare"))  # the flag alone asks for nothing
    cfg = _with(cfg, {"rl": {"gpu_model": "h200"}})
    line = sbatch_line(job_resources(cfg, "rl"))
    assert " --gres=gpu:h200:2" in line and "--gpus" not in line
    # the default flag with a model: --gpus=<model>:<n>
    line = sbatch_line(job_resources(_with(paper, {"rl": {"gpu_model": "h200"}}), "rl"))
    assert " --gpus=h200:2" in line and "--gres" not in line


def test_constraint_qos_gres_and_extra_reach_sbatch(paper):
    cfg = _with(paper, {"default": {"qos": "long"},
                        "rl": {"constraint": "h200|b200", "gres": "nvme:1", "slurm_extra": "--exclusive --nice=5",
                               "partition": "gpu"}})
    validate(cfg)
    line = sbatch_line(job_resources(cfg, "rl"))
    for flag in (" --qos=long", " -C 'h200|b200'", " --gres=nvme:1", " --gpus=2", " --exclusive --nice=5", " -p gpu"):
        assert flag in line, (flag, line)
    prep = sbatch_line(job_resources(cfg, "prepare"))  # default's qos reaches every kind; rl's settings only rl
    assert " --qos=long" in prep and "-C" not in prep.split() and "--exclusive" not in prep


def test_ci_config_asks_for_what_it_always_did(ci):
    """The embedded / ci configs set none of the new keys: their jobs' resources (and so their sbatch lines and
    the rules' params) are what they were."""
    for kind in ("default", "prepare", "backbone", "rl", "evaluate", "analysis", "rlt_train", "rlt_generate"):
        r = job_resources(ci, kind)
        assert set(r) == {"mem_mb", "runtime", "cpus_per_task"}, (kind, r)
        assert r["mem_mb"] == merged(ci, kind)["mem_mb"]


# ---------------------------------------------------------------- validation ----

@pytest.mark.parametrize("block,key,words", [
    ({"resources": {"rl": {"gres": "gpu:2"}}}, "resources.rl.gres", "asked for with `gpus`"),
    ({"resources": {"rl": {"gres": "'nvme:1'"}}}, "resources.rl.gres", "is not a GRES"),
    ({"resources": {"rl": {"gpu_model": "h 200"}}}, "resources.rl.gpu_model", "not a GPU type"),
    ({"resources": {"rl": {"gpu_flag": "gpu"}}}, "resources.rl.gpu_flag", "is not one of"),
    ({"resources": {"rl": {"slurm_extra": "--gpus=4"}}}, "resources.rl.slurm_extra", "--gpus is set by"),
    ({"resources": {"default": {"slurm_extra": "-t 600"}}}, "resources.default.slurm_extra", "use runtime"),
    ({"resources": {"rl": {"slurm_extra": "--mem=64G"}}}, "resources.rl.slurm_extra", "use mem_mb"),
    ({"resources": {"rl": {"slurm_extra": "--exclusive 'x"}}}, "resources.rl.slurm_extra", "shell line"),
    ({"resources": {"default": {"gpu_flag": "gres"}, "rl": {"gres": "nvme:1"}}}, "resources.rl.gres", "one --gres"),
    ({"backbones": {"Qwen3-8B": {"resources": {"evaluate": {"cpus": 8}}}}},
     "backbones.Qwen3-8B.resources.evaluate.cpus", "unknown key"),
    ({"backbones": {"Qwen3-8B": {"resources": {"evaluate": {"slurm_extra": "-N 2"}}}}},
     "backbones.Qwen3-8B.resources.evaluate.slurm_extra", "--nodes is set by"),
    ({"backbones": {"Qwen3-8B": {"resources": {"tables": {"gpus": 1}}}}},
     "backbones.Qwen3-8B.resources.tables", "unknown key"),
])
def test_bad_resources_are_refused_naming_the_key(paper, block, key, words):
    cfg = _with(paper, block.get("resources"), block.get("backbones"))
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    msg = str(e.value)
    assert msg.startswith(f"config key '{key}'") and words in msg and "\n" not in msg, msg


def test_every_option_the_plugin_refuses_in_slurm_extra_is_refused_at_plan_time():
    """The plugin refuses these in slurm_extra only at submission (validate_slurm_extra), after the plan; each
    one is refused by the config check first (the plugin's list, read from the installed plugin)."""
    import re

    from snakemake_executor_plugin_slurm.validation import get_forbidden_slurm_options

    for pattern in get_forbidden_slurm_options():
        for alt in pattern.split("|"):
            opt = re.sub(r"\[=\\s\]|\\s\??", "", alt)  # '--mem[=\s]' -> '--mem', '-J\s?' -> '-J'
            assert managed_option(f"{opt} 1") is not None, (pattern, opt)
            assert managed_option(f"--exclusive {opt}=1" if opt.startswith("--") else f"{opt}1"), (pattern, opt)
    assert managed_option("--exclusive --nice=5 -w node1 --mail-type=END") is None


# ---------------------------------------------------------------- the jobs' software ----

def test_apptainer_needs_a_container_image(paper, ci, tmp_path, monkeypatch):
    """--sdm apptainer without `container` would run every job on the host's Python ("No module named verl"):
    refused, on either backend; a missing local image file too; a registry image or an existing file passes."""
    for cfg in (paper, ci):
        with pytest.raises(ConfigError) as e:
            check_backend_installed(cfg, deployment=["APPTAINER"])
        assert str(e.value).startswith("config key 'container': --sdm apptainer") and "envs/gpu.def" in str(e.value)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="config key 'container': image file 'rlrt-gpu.sif' does not exist"):
        check_backend_installed({**paper, "container": "rlrt-gpu.sif"}, deployment=["APPTAINER"])
    (tmp_path / "rlrt-gpu.sif").write_bytes(b"")
    check_backend_installed({**paper, "container": "rlrt-gpu.sif"}, deployment=["APPTAINER"])
    check_backend_installed({**paper, "container": "docker://example/rlrt-gpu:1"}, deployment=["APPTAINER"])


def test_conda_needs_an_env_file_that_installs_verl(paper, ci, tmp_path):
    gpu_env = ROOT / "envs" / "gpu.yaml"
    check_backend_installed(paper, deployment=["CONDA"], conda_env=gpu_env)  # its verl[vllm,fsdp]==0.9.1 line
    with pytest.raises(ConfigError) as e:
        check_backend_installed(paper, deployment=["CONDA"], conda_env=ROOT / "envs" / "rlrt.yaml")
    assert str(e.value).startswith("config key 'backend': verl, but the conda environment") and \
        "envs/gpu.yaml" in str(e.value)
    bad = tmp_path / "env.yaml"
    bad.write_text("dependencies: [python=3.12, pip, {pip: [verlx==1.0, torch]}]\n")  # a name that starts 'verl'
    with pytest.raises(ConfigError):
        check_backend_installed(paper, deployment=["CONDA"], conda_env=bad)
    # installed by the env's post-deploy script from a `#@stepN <requirement>` line (envs/gpu.yaml's layout)
    bad.write_text("# verl is installed after this file's pip list\ndependencies: [python=3.12, pip]\n"
                   "#@step3 verlx==1.0\n")
    with pytest.raises(ConfigError):
        check_backend_installed(paper, deployment=["CONDA"], conda_env=bad)
    good = tmp_path / "env2.yaml"
    good.write_text("dependencies: [python=3.12, pip]\n#@step3 verl[vllm,fsdp]==0.9.1   # the trainer\n")
    check_backend_installed(paper, deployment=["CONDA"], conda_env=good)
    check_backend_installed(ci, deployment=["CONDA"], conda_env=ROOT / "envs" / "rlrt.yaml")  # local: no verl


def test_env_modules_alone_needs_verl_here(paper, monkeypatch):
    """env-modules brings no Python of ours: like no --sdm, verl must be importable where snakemake runs."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "verl" else real(name, *a))
    with pytest.raises(ConfigError, match="config key 'backend': verl is not installed"):
        check_backend_installed(paper, deployment=["ENV_MODULES"])
    check_backend_installed(paper, deployment=["ENV_MODULES", "CONDA"], conda_env=ROOT / "envs" / "gpu.yaml")


def test_snakemake_with_sdm_apptainer_and_no_container_stops_before_any_job(tmp_path):
    """The check is wired to Snakemake's own --sdm: planning paper.yaml with --sdm apptainer and no `container`
    fails with the one-line message (before it was planned, and every job ran on the host's Python)."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(ROOT / "config" / "paper.yaml"), "--sdm", "apptainer", "-n", "--cores", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "invalid config: config key 'container': --sdm apptainer" in proc.stdout + proc.stderr
