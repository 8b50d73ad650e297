# Validation and input functions shared by every rule file.
import json
import os
import re

from rlrt.config import ConfigError, parse_run_id, planned_runs, run_config, sweep_runs, validate

try:
    validate(config)
except ConfigError as e:
    raise WorkflowError(f"invalid config: {e}") from None

R = config["results"]
# The interpreter of the job's environment: `python` on PATH -- the conda env under `--sdm conda`, else the one
# the caller puts first on PATH (`make` and the tests put the venv's bin/ there), never the driver's own path.
PYTHON = "python"
BACKBONES = list(config["backbones"])
METHODS = list(config["methods"]["run"])  # Table 1: trained and evaluated on every backbone
RUNS = planned_runs(config)  # backbone -> every RL run there (methods.run + extra runs + sweep points)
EXP = config.get("experiments") or {}
TRACK = None
if config["tracking"]["enabled"]:
    TRACK = {
        "uri": f"sqlite:///{R}/mlflow/mlflow.db",
        "artifact_root": f"{R}/mlflow/artifacts",
        **config["tracking"],
    }
ENV = "../envs/rlrt.yaml"
# envs/rlrt.yaml installs this checkout (`-e ${RLRT_ROOT}`): Snakemake copies the file under .snakemake/conda/,
# so a path relative to it would miss the repository; conda's pip expands the variable from this environment.
os.environ["RLRT_ROOT"] = str(workflow.basedir)


def _alternatives(names):
    return "|".join(re.escape(x) for x in sorted(set(names), key=len, reverse=True))


wildcard_constraints:
    backbone=_alternatives(BACKBONES),
    run=_alternatives(["base"] + [r for rs in RUNS.values() for r in rs]),
    split="[a-z][a-z0-9_]*",


def as_json(obj):
    return json.dumps(obj, sort_keys=True)


def tracking_input():
    return [f"{R}/mlflow/.initialized"] if TRACK else []


def backbone_cfg(backbone):
    b = dict(config["backbones"][backbone])
    b.update(name=backbone, seed=config["seed"], tracking=TRACK)
    return b


def checkpoint_dir(backbone):
    return f"{R}/checkpoints/{backbone}"


def model_for(backbone, run):
    """Checkpoint folder evaluated as (backbone, run): the untrained backbone for run 'base'."""
    return checkpoint_dir(backbone) if run == "base" else f"{R}/runs/{backbone}/{run}/model"


def rl_cfg(backbone, run):
    return {
        "rl": config["rl"],
        "method": parse_run_id(run)[0],
        "run": run,
        "method_cfg": run_config(config, backbone, run),
        "backbone": {"name": backbone, "kind": config["backbones"][backbone]["kind"]},
        "max_response_length": config["backbones"][backbone]["max_response_length"],
        "seed": config["seed"],
        "grader_workers": config["rl"].get("grader_workers", 1),
        "tracking": TRACK,
    }


def eval_cfg(backbone, run, **override):
    return {
        **config["eval"],
        **override,
        "backbone": backbone,
        "method": run,
        "seed": config["seed"],
        "max_new_tokens": config["backbones"][backbone]["max_response_length"],
        "grader_workers": config["rl"].get("grader_workers", 1),
        "tracking": TRACK,
    }


def eval_files():
    return [f"{R}/eval/{b}/{m}.json" for b in BACKBONES for m in ["base"] + METHODS]


def run_metrics(runs=None):
    """metrics.json of the given {backbone: [runs]} (default: every planned run)."""
    runs = RUNS if runs is None else runs
    return [f"{R}/runs/{b}/{r}/metrics.json" for b in runs for r in runs[b]]


def passk_files():
    f8 = EXP.get("fig8")
    return [f"{R}/eval_passk/{f8['backbone']}/{r}.json" for r in f8["runs"]] if f8 else []


# Final targets of `rule all`: each rule file appends the outputs it contributes (ALL_OUTPUTS.extend([...])).
ALL_OUTPUTS = []
