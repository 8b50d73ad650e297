"""What the jobs' machines and software must provide, checked before any job: the resources the SLURM plugin
would refuse, the verl backend's rules (checkpoint frequency, no EMA teacher, the update's token budget, each
SDPO / SRPO run's GPU memory), and an environment that has verl (or vLLM for ``eval.engine: vllm``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from rlrt.errors import ConfigError
from rlrt.plan import parse_run_id, rl_settings, run_config


def check_resources(cfg: dict[str, Any]) -> None:
    """What the SLURM plugin would refuse at submission, refused now."""
    from rlrt.resources import resource_problem

    bad = resource_problem(cfg)
    if bad:
        raise ConfigError(f"config key {bad[0]!r}: {bad[1]}")


def check_backend_installed(cfg: dict[str, Any], deployment=(), conda_env: str | Path | None = None) -> None:
    """The jobs' software environment provides what the backend needs, checked before any job (else every GPU job
    fails hours into the queue with "No module named verl").

    ``deployment``: Snakemake's software deployment methods (``conda``, ``apptainer``, ``env-modules``);
    ``conda_env``: the env file of the rules under ``--sdm conda``. Under ``apptainer`` the config must name the
    image (``container``; Snakemake otherwise runs the jobs on the host's Python), and a local image file must
    exist; under ``conda`` with ``backend: verl`` the env file must install verl (envs/gpu.yaml); with neither
    (env-modules brings no Python of ours) verl must be importable in this interpreter's environment, which the
    jobs inherit."""
    import importlib.util
    import os

    methods = {str(m).lower() for m in deployment}
    if "apptainer" in methods:
        image = cfg.get("container")
        if not image:
            raise ConfigError("config key 'container': --sdm apptainer runs every job in the config's container "
                              "image, and none is set, so the jobs would run on the host's Python instead; build "
                              "one (apptainer build rlrt-gpu.sif envs/gpu.def) and set container: to it")
        if "://" not in image and not os.path.exists(image):
            raise ConfigError(f"config key 'container': image file {image!r} does not exist (relative to the working "
                              f"directory {os.getcwd()!r}); a registry image is named with its scheme, e.g. "
                              f"docker://...")
    if cfg["backend"] != "verl":
        return
    if "conda" in methods:
        if conda_env is None or not _env_file_installs(conda_env, "verl"):
            raise ConfigError(f"config key 'backend': verl, but the conda environment of the jobs ({conda_env}) does "
                              f"not install verl; under --sdm conda the verl rules need envs/gpu.yaml")
        return
    if "apptainer" in methods:
        return  # the image's contents cannot be checked from here: envs/gpu.def installs verl
    if importlib.util.find_spec("verl") is None:
        raise ConfigError("config key 'backend': verl is not installed in this environment; install the GPU "
                          "environment (envs/gpu.yaml), run with --sdm conda / --sdm apptainer, or set backend: local")


def check_vllm_python(python: str) -> None:
    """``eval.engine: vllm`` under ``backend: local``: the evaluation jobs' interpreter ``python`` (RLRT_VLLM_PYTHON,
    else ``python`` on PATH) can import vLLM; checked before any job (else every evaluation fails at its start)."""
    import shutil
    import subprocess

    exe = shutil.which(python) or (python if Path(python).is_file() else None)
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    if exe is None or subprocess.run([exe, "-c", probe], capture_output=True).returncode != 0:
        what = "not found" if exe is None else "cannot import vllm"
        raise ConfigError(f"config key 'eval.engine': vllm, but the evaluation jobs' interpreter {python!r} "
                          f"({'RLRT_VLLM_PYTHON' if python != 'python' else 'python on PATH'}) {what}; build vLLM's "
                          "CPU build with `make vllm-cpu-env` and set RLRT_VLLM_PYTHON=.venv-vllm-cpu/bin/python, or "
                          "set eval.engine: local")


def _env_file_installs(path: str | Path, package: str) -> bool:
    """A conda env file lists ``package`` (any version / extras) among its conda or pip dependencies, or on a
    ``#@stepN <requirement>`` line: what its post-deploy script installs (envs/gpu.yaml, envs/gpu_requirements.py)."""
    try:
        text = Path(path).read_text()
        env = yaml.safe_load(text) or {}
    except (OSError, yaml.YAMLError):
        return False
    specs = re.findall(r"^#@step\d+\s+(\S+)", text, re.M)
    for dep in env.get("dependencies") or []:
        specs += (dep.get("pip") or []) if isinstance(dep, dict) else [dep]
    return any(re.split(r"[\s\[<>=!~;]", str(s).strip(), maxsplit=1)[0].lower() == package for s in specs)


def check_backend(cfg: dict[str, Any], runs: dict[str, list[str]]) -> None:
    """``backend: verl`` with a planned run verl cannot train as configured stops here, before any job, instead of
    failing at the start of that RL job after a day in the queue."""
    if cfg["backend"] != "verl":
        return
    from rlrt.backends.verl.overrides import save_freq  # pure (no verl import): the rule verl's checkpoints follow
    from rlrt.methods.registry import get_method

    try:
        for backbone in runs:
            save_freq(cfg.get("verl") or {}, rl_settings(cfg, backbone))
    except ValueError as e:
        raise ConfigError(f"config key 'verl.save_freq': {e}") from None

    for backbone, rs in runs.items():
        for r in rs:
            method, _ = parse_run_id(r)
            spec = get_method(method)
            settings = spec.make_settings(run_config(cfg, backbone, r))
            if float(getattr(settings, "ema_rate", 0.0) or 0.0) > 0:
                raise ConfigError(
                    f"config key 'methods.{method}.ema_rate': backend verl distils toward the frozen initial policy "
                    f"(the paper's rate 0); run {r!r} on {backbone!r} asks for an EMA teacher, which only backend: "
                    f"local trains")


def check_gpu_memory(cfg: dict[str, Any], runs: dict[str, list[str]]) -> None:
    """``backend: verl``: the update's token budget holds one student sequence (verl refuses less at its first
    update), and every planned SDPO / SRPO run's per-GPU memory estimate (``rlrt.backends.verl.memory``: FSDP
    actor state over the job's GPUs, the frozen teacher, vLLM's reservation, the full-vocabulary working sets)
    fits ``resources.rl.gpu_mem_gb`` (or the backbone's ``backbones.<b>.resources.rl.gpu_mem_gb``) when that is
    set; a refusal names the keys and both numbers."""
    if cfg["backend"] != "verl" or not cfg.get("verl"):
        return
    from rlrt.backends.verl import memory
    from rlrt.methods.objectives import get_objective
    from rlrt.methods.registry import get_method, objective_name
    from rlrt.resources import merged

    v = cfg["verl"]
    for backbone, rs in runs.items():
        b = cfg["backbones"][backbone]
        problem = memory.token_budget_problem(v, b["max_response_length"])
        if problem:
            raise ConfigError(f"config key 'verl.ppo_max_token_len_per_gpu': {problem} (backbone {backbone!r})")
        r = merged(cfg, "rl", backbone)
        limit = r.get("gpu_mem_gb")
        if limit is None:
            continue
        over = ((b.get("resources") or {}).get("rl") or {})
        key = f"backbones.{backbone}.resources.rl" if "gpu_mem_gb" in over else "resources.rl"
        for run in rs:
            method, _ = parse_run_id(run)
            spec = get_method(method)
            if not get_objective(objective_name(spec, spec.make_settings(run_config(cfg, backbone, run)))) \
                    .uses_teacher_logits:
                continue
            est = memory.run_memory(v, rl_settings(cfg, backbone), b, int(r.get("gpus") or 1), float(limit))
            if est is None:
                raise ConfigError(f"config key 'backbones.{backbone}.hub_id': {b.get('hub_id')!r} has no architecture "
                                  f"in rlrt.backends.verl.memory.ARCHITECTURES, so run {run!r}'s GPU memory cannot be "
                                  f"estimated against {key}.gpu_mem_gb; add it there, or set gpu_mem_gb: null")
            if est.peak > float(limit):
                raise ConfigError(
                    f"config key '{key}.gpu_mem_gb': run {run!r} on {backbone!r} needs about {est.peak:.1f} GB per GPU "
                    f"(update {est.update:.1f}, log-prob {est.log_prob:.1f}, rollout {est.rollout:.1f}; "
                    f"rlrt.backends.verl.memory), more than gpu_mem_gb = {float(limit):g}; lower "
                    f"verl.ppo_max_token_len_per_gpu ({v.get('ppo_max_token_len_per_gpu')}), "
                    f"verl.rollout.gpu_memory_utilization ({v['rollout']['gpu_memory_utilization']}) or "
                    f"verl.max_reprompt_length ({v['max_reprompt_length']}), offload (verl.param_offload / "
                    f"optimizer_offload), or raise {key}.gpus ({int(r.get('gpus') or 1)})")

