"""Workflow config: validation against ``workflow/schemas/config.schema.yaml`` and the derived views rules use.

``validate`` raises ``ConfigError`` with ONE line naming the offending key (``rl.steps: -1 is less than the
minimum of 1``), before any job runs. The Snakefile calls it first; tests call it directly.
"""

from __future__ import annotations

import copy
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config value the schema or a cross-field check rejects; the message names the key."""


def _key(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def validate(cfg: dict[str, Any], schema_path: str | Path = SCHEMA) -> dict[str, Any]:
    """Validate ``cfg``; returns it unchanged or raises ``ConfigError`` naming the key."""
    import jsonschema

    _check_finite(cfg, [])  # JSON-schema ranges let NaN through (every comparison with NaN is false)
    schema = _schema(str(schema_path))
    validator = jsonschema.Draft202012Validator(schema)
    errors = list(validator.iter_errors(cfg))
    if errors:
        err = jsonschema.exceptions.best_match(errors)
        path = list(err.absolute_path)
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            raise ConfigError(f"config key {_key(path + extra[:1])!r}: unknown key (misspelled?); "
                              f"allowed here: {sorted(err.schema.get('properties', {}))}")
        raise ConfigError(f"config key {_key(path)!r}: {_schema_message(err)}")  # required, enum, minimum, type, ...
    _cross_checks(cfg, schema)
    return cfg


def _schema_message(err) -> str:
    """The validator's message; a broken sanity bound (``maximum``) also says why the bound is there (the
    schema's description of that value, e.g. ``$defs/steps``)."""
    if err.validator == "maximum" and isinstance(err.schema, dict) and err.schema.get("description"):
        return f"{err.message} ({' '.join(str(err.schema['description']).split())})"
    return err.message


def _check_finite(value: Any, path: list) -> None:
    """Every number of the config is finite: YAML's ``.nan`` / ``.inf`` (or JSON's ``NaN`` / ``Infinity``) pass
    every schema range, so they are refused here, anywhere in the (merged) config, naming the first one's key."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key {_key(path)!r}: {value} is not a finite number (.nan / .inf are not "
                          f"allowed anywhere in the config)")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, path + [k])
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_finite(v, path + [i])


def _settings_error(e: Exception) -> ConfigError:
    """``build_settings``' ``KeyError`` / ``ValueError`` (``"<where>.<key>: <why>"``) as a ``ConfigError`` that
    starts ``config key '<where>.<key>':`` like every other."""
    msg = str(e.args[0]) if e.args else str(e)
    key, sep, why = msg.partition(": ")
    if sep and key and " " not in key:
        return ConfigError(f"config key {key!r}: {why}")
    return ConfigError(f"config key {msg}")


def data_splits(cfg: dict[str, Any]) -> list[str]:
    """The split names the data rules produce: ``data.splits`` (synthetic) or ``data.datasets`` (hub)."""
    d = cfg["data"]
    return list(d["datasets"] if d["source"] == "hub" else d["splits"])


def fig8_splits(cfg: dict[str, Any]) -> list[str]:
    """The test splits of Fig 8's pass@k evaluation, figure and claim 6: ``experiments.fig8.splits`` (RLRT Sec. 6.4:
    AIME24 and AIME26), else every ``data.test_splits``."""
    return list(((cfg.get("experiments") or {}).get("fig8") or {}).get("splits") or cfg["data"]["test_splits"])


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


def _backend_checks(cfg: dict[str, Any], runs: dict[str, list[str]]) -> None:
    """``backend: verl`` with a planned run verl cannot train as configured stops here, before any job, instead of
    failing at the start of that RL job after a day in the queue."""
    if cfg["backend"] != "verl":
        return
    from rlrt.backends.verl.overrides import save_freq  # pure (no verl import): the rule verl's checkpoints follow
    from rlrt.methods.registry import get_method, objective_name

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



def _gpu_memory_checks(cfg: dict[str, Any], runs: dict[str, list[str]]) -> None:
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

def _cross_checks(cfg: dict[str, Any], schema: dict[str, Any]) -> None:
    data = cfg["data"]
    if data["source"] == "hub" and not data.get("datasets"):
        raise ConfigError("config key 'data.datasets': data.source is hub but no data set is configured")
    splits = data_splits(cfg)
    if "train" not in splits:
        raise ConfigError("config key 'data.datasets': no 'train' split (the RL training set)")
    for name in data["test_splits"]:
        if name not in splits:
            where = "data.datasets" if data["source"] == "hub" else "data.splits"
            raise ConfigError(f"config key 'data.test_splits': split {name!r} is not defined in {where}")
        if name == "train":
            raise ConfigError("config key 'data.test_splits': the train split cannot be a test split")
    if data["source"] == "synthetic":
        for name, s in data["splits"].items():
            if s["min_digits"] > s["max_digits"]:
                raise ConfigError(f"config key 'data.splits.{name}.min_digits': larger than max_digits")
    for b in cfg["rl_backbones"]:
        if b not in cfg["backbones"]:
            raise ConfigError(f"config key 'rl_backbones': unknown backbone {b!r} (not in backbones)")
    for b in (cfg.get("claims") or {}).get("backbones") or []:
        if b not in cfg["rl_backbones"]:
            raise ConfigError(f"config key 'claims.backbones': {b!r} is not an RL backbone (rl_backbones: "
                              f"{cfg['rl_backbones']})")
    for name, b in cfg["backbones"].items():
        if b["mode"] == "sft":
            parent = b["parent"]
            if parent not in cfg["backbones"]:
                raise ConfigError(f"config key 'backbones.{name}.parent': unknown backbone {parent!r}")
            if cfg["backbones"][parent]["mode"] != "pretrain":
                raise ConfigError(f"config key 'backbones.{name}.parent': {parent!r} must be a pretrained backbone")
        _chat_kwargs_check(cfg, name, b)
    from rlrt.resources import resource_problem  # what the SLURM plugin would refuse at submission, refused now

    bad = resource_problem(cfg)
    if bad:
        raise ConfigError(f"config key {bad[0]!r}: {bad[1]}")
    # Each RL backbone's runs take rl over by backbones.<b>.rl (backbones.<b>.steps is pretraining / SFT; the RLT
    # cold start runs without intermediate checkpoints), so every backbone's RL length is checked against the save
    # steps, and the message names the key that made the conflict.
    def unreached(rl: dict[str, Any]) -> list[int]:
        return [k for k in rl.get("save_steps") or [] if k > rl["steps"]]

    rl = cfg["rl"]
    if rl["mini_batch"] > rl["question_batch"]:
        raise ConfigError("config key 'rl.mini_batch': larger than rl.question_batch")
    late = unreached(rl)
    if late:
        raise ConfigError(f"config key 'rl.save_steps': {late} beyond rl.steps = {rl['steps']}: no RL run reaches "
                          f"that step, so the checkpoint would silently never be written")
    for name in cfg["rl_backbones"]:
        over = cfg["backbones"][name].get("rl") or {}
        mine = rl_settings(cfg, name)
        if over and mine["mini_batch"] > mine["question_batch"]:
            key = "mini_batch" if "mini_batch" in over else "question_batch"
            raise ConfigError(f"config key 'backbones.{name}.rl.{key}': the mini-batch ({mine['mini_batch']}) is "
                              f"larger than the question batch ({mine['question_batch']})")
        late = unreached(mine)
        if late:
            raise ConfigError(f"config key 'backbones.{name}.rl.steps': {mine['steps']} steps end before rl.save_steps "
                              f"{late}: no RL run of {name} reaches that step, so the checkpoint would silently never "
                              f"be written")
    for k in cfg["eval"]["ks"]:
        if k > cfg["eval"]["n"]:
            raise ConfigError(f"config key 'eval.ks': k={k} is larger than eval.n={cfg['eval']['n']}")
    if cfg["backend"] == "verl" and cfg["eval"].get("engine") == "local":
        raise ConfigError("config key 'eval.engine': local, but backend: verl evaluates with vLLM only (the "
                          "checkpoints are evaluated at paper scale in the GPU environment); set eval.engine: vllm "
                          "or remove it")
    exp = cfg.get("experiments") or {}
    backbones = set(cfg["rl_backbones"])  # RL runs live on these
    for method, bbs in (exp.get("extra_runs") or {}).items():
        for b in bbs:
            if b not in backbones:
                raise ConfigError(f"config key 'experiments.extra_runs.{method}': unknown backbone {b!r}")
    for i, sw in enumerate(exp.get("sweeps") or []):
        for b in sw["backbones"]:
            if b not in backbones:
                raise ConfigError(f"config key 'experiments.sweeps[{i}].backbones': unknown backbone {b!r}")
        from rlrt.methods.settings import field_names, settings_class

        if sw["key"] not in field_names(settings_class(sw["method"])):
            raise ConfigError(f"config key 'experiments.sweeps[{i}].key': {sw['key']!r} is not a setting of "
                              f"method {sw['method']!r} (its settings: "
                              f"{field_names(settings_class(sw['method']))})")
    _method_checks(cfg)
    _sweep_value_checks(cfg, schema)
    runs = planned_runs(cfg)
    for name in ("table3", "fig8", "gate_ablation"):
        block = exp.get(name)
        if not block:
            continue
        b = block["backbone"]
        if b not in backbones:
            raise ConfigError(f"config key 'experiments.{name}.backbone': unknown backbone {b!r}")
        for r in block.get("runs") or []:
            if r not in runs[b]:
                raise ConfigError(f"config key 'experiments.{name}.runs': run {r!r} is not trained on {b!r} "
                                  f"(trained there: {runs[b]}); add it to methods.run, experiments.extra_runs "
                                  f"or a sweep")
    if exp.get("fig8") and exp["fig8"]["n"] < max(exp["fig8"].get("ks") or [1]):
        raise ConfigError("config key 'experiments.fig8.ks': a k is larger than experiments.fig8.n")
    for s in (exp.get("fig8") or {}).get("splits") or []:
        if s not in cfg["data"]["test_splits"]:
            raise ConfigError(f"config key 'experiments.fig8.splits': {s!r} is not one of data.test_splits "
                              f"({cfg['data']['test_splits']})")
    _backend_checks(cfg, runs)
    _gpu_memory_checks(cfg, runs)
    _context_checks(cfg, runs)
    _analysis_checks(cfg)
    _rlt_checks(cfg)
    _tracking_checks(cfg)


NO_SOLUTION_LOADERS = frozenset({"dapo_math"})
"""Train-set loaders whose rows carry no reference solution (``rlrt.tasks.benchmarks``: DAPO-Math-17k's
``solution`` is "")."""


def _context_checks(cfg: dict[str, Any], runs: dict[str, list[str]]) -> None:
    """A run whose teacher is shown the train split's reference solution (``context: reference``) on a data set
    that has none would score an empty context: refused before any job (RLSD there: ``context: answer``)."""
    from rlrt.methods.settings import make_settings

    data = cfg["data"]
    loader = ((data.get("datasets") or {}).get("train") or {}).get("loader") if data["source"] == "hub" else None
    if loader not in NO_SOLUTION_LOADERS:
        return
    for backbone, rs in runs.items():
        for r in rs:
            method, _ = parse_run_id(r)
            if getattr(make_settings(method, run_config(cfg, backbone, r)), "context", None) == "reference":
                raise ConfigError(f"config key 'methods.{method}.context': run {r!r} on {backbone!r} shows its "
                                  f"teacher the train split's reference solution, which {loader} rows do not have "
                                  f"(empty); use context: answer (the gold answer in RLSD's template)")


def _method_checks(cfg: dict[str, Any]) -> None:
    """Every key of ``methods.<m>`` and ``method_overrides.<kind>.<m>`` is a field of that method's settings class
    (``rlrt.methods.settings``): a key another method has, or a typo, stops here with its full name."""
    from rlrt.methods.settings import field_names, make_settings, settings_class

    blocks = [(f"methods.{m}", m, v) for m, v in cfg["methods"].items() if m not in ("run", "skip")]
    for kind, per in (cfg.get("method_overrides") or {}).items():
        blocks += [(f"method_overrides.{kind}.{m}", m, v) for m, v in (per or {}).items()]
    for where, method, values in blocks:
        allowed = field_names(settings_class(method))
        for key in values or {}:
            if key not in allowed:
                raise ConfigError(f"config key '{where}.{key}': not a setting of method {method!r}; its settings: "
                                  f"{allowed}")
        try:
            make_settings(method, values, where)
        except (KeyError, ValueError) as e:
            raise _settings_error(e) from None


RUN_ID_CHARS = re.compile(r"[A-Za-z0-9_.=@+-]+")
"""What a run id (a folder name under ``<results>/runs/<backbone>/``, a wildcard value, an MLflow tag) is made of."""
RUN_ID_MAX_LEN = 100


def run_id_problem(run: str) -> str | None:
    """Why ``run`` cannot be a run id (``None`` when it can): only ``[A-Za-z0-9_.=@+-]``, no ``..``, at most
    ``RUN_ID_MAX_LEN`` characters -- it becomes a folder name, so no ``/``, no parent step, no unicode."""
    if not RUN_ID_CHARS.fullmatch(run):
        return f"run id {run!r} may only use the characters [A-Za-z0-9_.=@+-] (it names a folder)"
    if ".." in run:
        return f"run id {run!r} contains '..'"
    if len(run) > RUN_ID_MAX_LEN:
        return f"run id {run!r} is longer than {RUN_ID_MAX_LEN} characters"
    return None


def _sweep_value_checks(cfg: dict[str, Any], schema: dict[str, Any]) -> None:
    """Every value of ``experiments.sweeps[i].values`` is checked exactly as the key it sweeps: against that
    setting's schema (type, range, enum: ``$defs/method_settings``), then as a run id, then by building the method's
    settings on each swept backbone with that value (a method's own choices, e.g. GRPO+EB's ``variant``)."""
    import jsonschema

    from rlrt.methods.settings import make_settings

    props = schema["$defs"]["method_settings"]["properties"]
    for i, sw in enumerate((cfg.get("experiments") or {}).get("sweeps") or []):
        method, key = sw["method"], sw["key"]
        sub = {"$defs": schema["$defs"], **props[key]} if key in props else None
        for j, value in enumerate(sw["values"]):
            where = f"experiments.sweeps[{i}].values[{j}]"
            if sub is not None:
                errors = list(jsonschema.Draft202012Validator(sub).iter_errors(value))
                if errors:
                    err = jsonschema.exceptions.best_match(errors)
                    raise ConfigError(f"config key {where!r}: not a valid methods.{method}.{key}: "
                                      f"{_schema_message(err)}")
            problem = run_id_problem(run_id(method, key, value))
            if problem:
                raise ConfigError(f"config key {where!r}: {problem}")
            for b in sw["backbones"]:
                try:
                    make_settings(method, {**method_config(cfg, b, method), key: value}, f"methods.{method}")
                except (KeyError, ValueError) as e:
                    raise ConfigError(f"config key {where!r}: {e.args[0]}") from None


def _tracking_checks(cfg: dict[str, Any]) -> None:
    """``tracking.uri`` pointing at a local store (``sqlite:///<file>``: its folder; ``file:<folder>``: the folder)
    must point into an existing folder, or under ``results`` (the workflow creates ``<results>/mlflow/``): a typo'd
    path would otherwise put the runs' records somewhere nobody looks. Relative paths are relative to the working
    directory (Snakemake's ``--directory``), as MLflow reads them."""
    import os
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    tracking = cfg["tracking"]
    uri = tracking.get("uri")
    if not tracking["enabled"] or not uri:
        return
    if uri.startswith("sqlite:///"):
        db = uri[len("sqlite:///"):].split("?", 1)[0]
        if db in ("", ":memory:"):
            return
        folder, what = Path(db).parent, "the SQLite file's folder"
    elif uri.startswith("file:"):
        folder, what = Path(url2pathname(urlparse(uri).path) or "."), "the store folder"
    else:
        return  # a tracking server: nothing to check from here
    if folder.is_dir():
        return
    results = Path(os.path.abspath(cfg["results"]))
    if Path(os.path.abspath(folder)).is_relative_to(results):
        return  # created by the workflow (mlflow_init) before any job logs
    raise ConfigError(f"config key 'tracking.uri': {what} {str(folder)!r} does not exist and is not under results "
                      f"({cfg['results']!r}, which the workflow creates); create it or fix the URI")


def _rlt_checks(cfg: dict[str, Any]) -> None:
    rlt = cfg.get("rlt")
    if not rlt or not rlt.get("enabled", True):
        return
    if cfg["backend"] == "verl":  # the teacher's RL: its reward worker takes GPUs of the job, the trainer the rest
        res = cfg.get("resources") or {}
        gpus = int({**(res.get("default") or {}), **(res.get("rlt_train") or {})}.get("gpus") or 0)
        reward = int((cfg.get("verl") or {}).get("rlt_reward_gpus", 1))
        if gpus <= reward:
            raise ConfigError(f"config key 'resources.rlt_train.gpus': {gpus} GPU(s) leave none for the RLT teacher's "
                              f"trainer next to its reward worker's {reward} (verl.rlt_reward_gpus)")
        trl = rlt["teacher_rl"]  # verl balances the rollout batch and each mini-batch over the trainer's GPUs
        for what, size in (("question_batch", trl["question_batch"]), ("mini_batch", trl["mini_batch"])):
            if size * trl["n_samples"] % (gpus - reward):
                raise ConfigError(
                    f"config key 'verl.rlt_reward_gpus': the RLT teacher's trainer gets resources.rlt_train.gpus - "
                    f"verl.rlt_reward_gpus = {gpus} - {reward} = {gpus - reward} GPUs, which do not divide "
                    f"rlt.teacher_rl.{what} x n_samples = {size * trl['n_samples']} sequences; choose GPU counts "
                    f"whose difference divides it (e.g. 8 and 4)")
    for key in ("teacher", "reward_student"):
        if rlt[key] not in cfg["backbones"]:
            raise ConfigError(f"config key 'rlt.{key}': unknown backbone {rlt[key]!r}")
    for b in rlt["students"]:
        if b not in cfg["backbones"]:
            raise ConfigError(f"config key 'rlt.students': unknown backbone {b!r}")
    for name in rlt.get("test_splits") or []:
        if name not in data_splits(cfg) or name == "train":
            raise ConfigError(f"config key 'rlt.test_splits': {name!r} is not a test split ({data_splits(cfg)})")
    split = rlt.get("data_split", "train")
    if split not in data_splits(cfg):
        raise ConfigError(f"config key 'rlt.data_split': {split!r} is not a data split ({data_splits(cfg)})")
    if cfg["data"]["source"] == "synthetic" and rlt["n_questions"] > cfg["data"]["splits"][split]["n"]:
        raise ConfigError(f"config key 'rlt.n_questions': more than the {split} split has "
                          f"(data.splits.{split}.n)")
    if rlt["n_small"] >= rlt["n_questions"]:
        raise ConfigError("config key 'rlt.n_small': must be smaller than rlt.n_questions")
    if rlt["reward_rank"]["n_questions"] > rlt["n_questions"]:
        raise ConfigError("config key 'rlt.reward_rank.n_questions': larger than rlt.n_questions")
    if rlt["teacher_rl"]["mini_batch"] > rlt["teacher_rl"]["question_batch"]:
        raise ConfigError("config key 'rlt.teacher_rl.mini_batch': larger than rlt.teacher_rl.question_batch")
    cold = {**cfg["rl"], **rlt["cold_start"]}  # what rules/rlt.smk hands the cold-start GRPO runs
    if cold["mini_batch"] > cold["question_batch"]:
        key = "mini_batch" if "mini_batch" in rlt["cold_start"] else "question_batch"
        raise ConfigError(f"config key 'rlt.cold_start.{key}': the cold start's mini-batch ({cold['mini_batch']}) is "
                          f"larger than its question batch ({cold['question_batch']}; unset keys come from rl)")
    for k in rlt["eval"]["ks"]:
        if k > rlt["eval"]["n"]:
            raise ConfigError(f"config key 'rlt.eval.ks': k={k} is larger than rlt.eval.n={rlt['eval']['n']}")


def _with_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """``value`` with every missing key that has a ``default`` in ``schema`` filled in (recursively)."""
    if not isinstance(value, dict):
        return value
    out = dict(value)
    for key, sub in (schema.get("properties") or {}).items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if key in out:
            out[key] = _with_defaults(out[key], sub)
    return out


def analysis_config(cfg: dict[str, Any], schema_path: str | Path = SCHEMA) -> dict[str, Any]:
    """The ``analysis`` block with its schema defaults filled in ({} when absent: no analysis runs)."""
    return _with_defaults(cfg.get("analysis") or {}, _schema(str(schema_path))["properties"]["analysis"])


def _analysis_checks(cfg: dict[str, Any]) -> None:
    analysis = analysis_config(cfg)
    runs = planned_runs(cfg)
    for name in ("heatmaps", "markers", "reflection", "shift"):
        if name not in analysis:
            continue
        block, key = analysis[name], f"analysis.{name}"
        b = block["backbone"]
        if b not in cfg["backbones"]:
            raise ConfigError(f"config key '{key}.backbone': unknown backbone {b!r}")
        if block["split"] not in data_splits(cfg):
            raise ConfigError(f"config key '{key}.split': split {block['split']!r} is not a data split "
                              f"({data_splits(cfg)})")
        for run in block.get("runs") or [block.get("run", "base")]:
            if run != "base" and run not in runs.get(b, []):
                raise ConfigError(f"config key '{key}': run {run!r} is not trained on {b!r} (trained there: "
                                  f"{runs[b]})")
    h = analysis.get("heatmaps")
    if h and h["n_examples"] > h["n_problems"]:
        raise ConfigError("config key 'analysis.heatmaps.n_examples': larger than n_problems (one rollout per "
                          "problem is rendered)")
    r = analysis.get("reflection")
    if r:
        for bin_ in ("hard", "easy"):
            lo, hi = r[bin_]
            if not 0 <= lo <= hi <= r["n_rollouts"]:
                raise ConfigError(f"config key 'analysis.reflection.{bin_}': need 0 <= {lo} <= {hi} <= n_rollouts "
                                  f"({r['n_rollouts']})")


# ---- runs: a method, or a method with one setting changed (a sweep point) -------------------------------------

def format_value(value: Any) -> str:
    """Setting value as it appears in a run id: JSON for numbers/booleans/null, raw for strings."""
    import json

    return value if isinstance(value, str) else json.dumps(value)


def eval_engine(eval_cfg: dict[str, Any], backend: str) -> str:
    """What samples an evaluation: ``eval.engine`` when set, else ``vllm`` under ``backend: verl`` (its only
    engine) and ``local`` under ``backend: local``. ``eval_cfg``: the ``eval`` block or a stage's eval slice."""
    return str(eval_cfg.get("engine") or ("vllm" if backend == "verl" else "local"))


def run_id(method: str, key: str | None = None, value: Any = None) -> str:
    """``grpo`` or ``rlrt@eps_w=0.5`` (a folder name under results/runs/<backbone>/)."""
    return method if key is None else f"{method}@{key}={format_value(value)}"


SEED_MARK = "+seed="


def seeded(run: str, k: int) -> str:
    """``run`` trained with seed index ``k`` (the claims study's replicates): the plain run for k = 0, else
    ``<run>+seed=<k>`` (``grpo+seed=2``, ``rlrt@eps_w=0.2+seed=1``, RLT student ``sft-rlt+seed=1``)."""
    if k < 0:
        raise ValueError(f"seed index must be >= 0, got {k}")
    return run if k == 0 else f"{run}{SEED_MARK}{k}"


def split_seed(run: str) -> tuple[str, int]:
    """Inverse of :func:`seeded`: (the run without its seed, the seed index; 0 when there is none)."""
    base, mark, k = run.partition(SEED_MARK)
    if not mark:
        return run, 0
    if not k.isdigit():
        raise ValueError(f"run id {run!r}: the seed index after {SEED_MARK!r} must be a number")
    return base, int(k)


def derive_seed(root: int, k: int) -> int:
    """The random seed of seed index ``k``: ``root`` itself for k = 0 (the plain runs keep every number they had),
    else 31 bits of SHA-256("<root>/<k>") -- a function of (root, k) only, so adding seed index k+1 to a study
    changes no number of seeds 0..k, and no two indices share a stream in practice."""
    if k == 0:
        return int(root)
    import hashlib

    digest = hashlib.sha256(f"{int(root)}/{int(k)}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def run_seed(cfg: dict[str, Any], run: str) -> int:
    """The random seed a job of ``run`` (RL run, evaluated run or RLT student) uses: :func:`derive_seed` of the
    root ``seed`` and the run's seed index."""
    return derive_seed(cfg["seed"], split_seed(run)[1])


def parse_run_id(run: str) -> tuple[str, dict[str, Any]]:
    """Inverse of :func:`run_id`: (method, {key: value}) with the value parsed back (JSON, else string). A seed
    suffix (:func:`seeded`) is dropped: seeds change the random stream, never the settings."""
    import json

    run = split_seed(run)[0]
    if "@" not in run:
        return run, {}
    method, setting = run.split("@", 1)
    key, raw = setting.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return method, {key: value}


def chat_template_kwargs(cfg: dict[str, Any], backbone: str) -> dict[str, Any]:
    """``backbones.<backbone>.chat_template_kwargs`` ({} when unset): the variables every prompt rendered for the
    backbone passes to its chat template (``rlrt.tasks.prompts.chat_prompt``)."""
    return dict(cfg["backbones"][backbone].get("chat_template_kwargs") or {})


def _chat_kwargs_check(cfg: dict[str, Any], name: str, b: dict[str, Any]) -> None:
    """A stand-in (mode pretrain / sft) renders ``rlrt.tasks.prompts.CHAT_TEMPLATE``, which reads no switch; the
    RLT branch's prompts (SFT on verl, the teacher's agent loop, distillation) do not pass the variables: both
    refused here rather than silently ignored. A hub model's own template is checked when a prompt is rendered."""
    kw = b.get("chat_template_kwargs")
    if not kw:
        return
    key = f"backbones.{name}.chat_template_kwargs"
    if b["mode"] != "hub":
        from rlrt.tasks.prompts import CHAT_TEMPLATE, template_variables

        reads = template_variables(CHAT_TEMPLATE) or frozenset()
        unread = sorted(set(kw) - reads)
        if unread:
            raise ConfigError(f"config key {key!r}: {unread} not read by a stand-in's chat template "
                              f"(rlrt.tasks.prompts.CHAT_TEMPLATE reads only {sorted(reads)})")
    rlt = cfg.get("rlt") or {}
    if rlt.get("enabled") and name in {rlt.get("teacher"), rlt.get("reward_student"), *(rlt.get("students") or [])}:
        raise ConfigError(f"config key {key!r}: {name!r} is an RLT backbone (rlt.teacher / reward_student / "
                          f"students), whose prompts do not pass chat_template_kwargs; remove them there")


def rl_settings(cfg: dict[str, Any], backbone: str) -> dict[str, Any]:
    """The RL block a backbone's runs train with: ``rl`` with ``backbones.<backbone>.rl`` over it (e.g. a longer
    run for a backbone that learns more slowly). Only the runs of a backbone with an override change."""
    return {**cfg["rl"], **(cfg["backbones"][backbone].get("rl") or {})}


def run_config(cfg: dict[str, Any], backbone: str, run: str) -> dict[str, Any]:
    """Settings of ``run`` on ``backbone`` as a dict: :func:`method_config` with the run's override applied."""
    method, override = parse_run_id(run)
    out = method_config(cfg, backbone, method)
    out.update(override)
    return out


def sweep_runs(cfg: dict[str, Any], sweep: dict[str, Any], backbone: str) -> list[str]:
    """The run ids of one sweep on ``backbone``, in value order. A value equal to the method's configured setting
    maps to the plain method run (no duplicate job)."""
    configured = method_config(cfg, backbone, sweep["method"])
    out = []
    for v in sweep["values"]:
        same = configured.get(sweep["key"]) == v
        out.append(sweep["method"] if same else run_id(sweep["method"], sweep["key"], v))
    return out


def table1_methods(cfg: dict[str, Any], backbone: str) -> list[str]:
    """The methods of ``methods.run`` trained on ``backbone``: all but ``methods.skip.<its kind>``."""
    skip = (cfg["methods"].get("skip") or {}).get(cfg["backbones"][backbone]["kind"]) or []
    return [m for m in cfg["methods"]["run"] if m not in skip]


def planned_runs(cfg: dict[str, Any], with_claims: bool = True) -> dict[str, list[str]]:
    """Every RL run of the config, per RL backbone (``rl_backbones``): methods.run (Table 1; less methods.skip
    for the backbone's kind) + experiments.extra_runs + sweeps, then (``with_claims``) the claims study's seeded
    replicates ``<run>+seed=<k>`` (:func:`rlrt.claims.claim_runs`)."""
    exp = cfg.get("experiments") or {}
    runs: dict[str, list[str]] = {b: table1_methods(cfg, b) for b in cfg["rl_backbones"]}
    for method, bbs in (exp.get("extra_runs") or {}).items():
        for b in bbs:
            runs[b].append(method)
    for sw in exp.get("sweeps") or []:
        for b in sw["backbones"]:
            runs[b].extend(sweep_runs(cfg, sw, b))
    if with_claims and cfg.get("claims"):
        from rlrt.claims import claim_runs  # the claims plan reads the plain plan: imported here, not at the top

        for b, extra in claim_runs(cfg).items():
            runs[b].extend(extra)
    return {b: list(dict.fromkeys(r)) for b, r in runs.items()}


BASE_CONFIG = Path(__file__).resolve().parents[2] / "config" / "config.yaml"


def merge_configs(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` deep-merged over ``base``, as Snakemake merges a ``--configfile`` over the Snakefile's
    ``configfile:`` (``snakemake.utils.update_config``): where both values are mappings they are merged key by key,
    recursively; any other overlay value (scalar, list, null) replaces the base value whole; keys only in the overlay
    are added. Nothing can be removed. Returns a new dict; neither argument is modified.

    One corner follows Snakemake too: an empty mapping ``{}`` over a non-mapping value leaves that value as it is.
    """
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict):
            old = out.get(key, {})
            if isinstance(old, dict):
                out[key] = merge_configs(old, value)
            elif value:  # a mapping over a scalar/list replaces it; {} over one keeps it (as Snakemake does)
                out[key] = merge_configs({}, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int, first: int):
        super().__init__(key, line, first)
        self.key, self.line, self.first = key, line, first


# libyaml's parser where PyYAML was built with it (the pure-Python one costs ~0.1 s per config file read, and
# `snakemake -n` reads several)
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@lru_cache(maxsize=None)
def _schema(schema_path: str) -> dict[str, Any]:
    """The JSON schema (YAML), read once per process. Callers must not mutate it."""
    return yaml.load(Path(schema_path).read_text(), Loader=_SafeLoader)  # noqa: S506 -- a safe loader


class _UniqueKeyLoader(_SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (plain PyYAML, and Snakemake, keep the
    later value silently). Keys brought in by a merge key (``<<: *anchor``) may be overridden, as YAML intends."""

    def construct_document(self, node):
        self._check_unique(node, [], set())
        return super().construct_document(node)

    def _check_unique(self, node, path: list, seen_nodes: set) -> None:
        if id(node) in seen_nodes:  # an alias of a node already walked (or a recursive anchor)
            return
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True) if isinstance(key_node, yaml.ScalarNode) else None
                try:
                    hash(key)
                except TypeError:
                    key = None
                line = key_node.start_mark.line + 1
                if key is not None and key in first:
                    raise _DuplicateKey(_key(path + [key]), line, first[key])
                if key is not None:
                    first[key] = line
                self._check_unique(value_node, path + [key if key is not None else "?"], seen_nodes)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._check_unique(item, path + [i], seen_nodes)


def _read_config(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        cfg = yaml.load(p.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 -- a SafeLoader subclass
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except _DuplicateKey as e:
        raise ConfigError(f"{path}: line {e.line}: duplicate key {e.key!r} (first given at line {e.first}); the "
                          f"later value would silently win, so give each key once") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: the config must be a mapping")
    return cfg


def check_config_files(paths) -> None:
    """Each file as ``_read_config`` reads it: present, valid YAML (or JSON), a mapping, no key given twice. For the
    files Snakemake has already loaded with its own reader (``workflow.configfiles``), which keeps the later of two
    equal keys silently; ``validate`` sees only the merged dict and cannot tell."""
    for path in paths:
        _read_config(path)


def load(*paths: str | Path) -> dict[str, Any]:
    """The first file, then each further file deep-merged over it (:func:`merge_configs`, Snakemake's rule for
    later ``--configfile``s), validated as a whole. ``load("config/config.yaml", "config/ci.yaml")`` is the config
    ``snakemake --configfile config/ci.yaml`` runs with. A missing or unreadable file raises ``ConfigError``."""
    if not paths:
        raise ConfigError("load: no config file given")
    cfg = _read_config(paths[0])
    for path in paths[1:]:
        cfg = merge_configs(cfg, _read_config(path))
    return validate(cfg)


def load_overlay(path: str | Path) -> dict[str, Any]:
    """``path`` as the workflow runs it (``snakemake --configfile <path>``): merged over ``config/config.yaml``.
    ``config/config.yaml`` itself is loaded alone."""
    if Path(path).resolve() == BASE_CONFIG:
        return load(BASE_CONFIG)
    return load(BASE_CONFIG, path)


def method_config(cfg: dict[str, Any], backbone: str, method: str) -> dict[str, Any]:
    """Every setting of ``method`` on ``backbone`` as a dict: its settings class's defaults (Table 5) <-
    ``methods.<method>`` <- ``method_overrides.<kind>.<method>``. Rules pass it to the stage, which rebuilds the
    typed object with ``get_method(method).make_settings``."""
    from rlrt.methods.settings import as_dict, make_settings

    kind = cfg["backbones"][backbone]["kind"]
    values = dict(cfg["methods"].get(method) or {})
    values.update(((cfg.get("method_overrides") or {}).get(kind) or {}).get(method) or {})
    try:
        return as_dict(make_settings(method, values))
    except (KeyError, ValueError) as e:
        raise _settings_error(e) from None


def main(argv: list[str] | None = None) -> int:
    """``python -m rlrt.config [OVERLAY ...]``: check the config ``snakemake --configfile OVERLAY ...`` would run
    with (each file read strictly: present, no duplicated key; merged over ``config/config.yaml``; validated) and
    print one line. Snakemake itself answers a missing ``--configfile`` with a traceback before the Snakefile is
    read, so a wrapper (the Makefile) can run this first."""
    import sys

    paths = list(sys.argv[1:] if argv is None else argv)
    files = [BASE_CONFIG] + [p for p in paths if Path(p).resolve() != BASE_CONFIG]
    try:
        check_config_files(files)
        load(*files)
    except ConfigError as e:
        print(f"invalid config: {e}", file=sys.stderr)
        return 1
    print(f"config OK: {' + '.join(str(p) for p in files)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
