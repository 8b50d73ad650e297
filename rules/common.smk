# Validation and input functions shared by every rule file.
import json
import sys

from rlrt.config import ConfigError, method_config, validate

try:
    validate(config)
except ConfigError as e:
    raise WorkflowError(f"invalid config: {e}") from None

R = config["results"]
PYTHON = sys.executable
BACKBONES = list(config["backbones"])
METHODS = list(config["methods"]["run"])
TRACK = None
if config["tracking"]["enabled"]:
    TRACK = {
        "uri": f"sqlite:///{R}/mlflow/mlflow.db",
        "artifact_root": f"{R}/mlflow/artifacts",
        **config["tracking"],
    }
ENV = "../envs/rlrt.yaml"


wildcard_constraints:
    backbone="|".join(BACKBONES),
    method="|".join(["base"] + METHODS),
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


def model_for(backbone, method):
    """Checkpoint folder evaluated as (backbone, method): the untrained backbone for method 'base'."""
    return checkpoint_dir(backbone) if method == "base" else f"{R}/runs/{backbone}/{method}/model"


def rl_cfg(backbone, method):
    return {
        "rl": config["rl"],
        "method": method,
        "method_cfg": method_config(config, backbone, method),
        "backbone": {"name": backbone, "kind": config["backbones"][backbone]["kind"]},
        "max_response_length": config["backbones"][backbone]["max_response_length"],
        "seed": config["seed"],
        "grader_workers": config["rl"].get("grader_workers", 1),
        "tracking": TRACK,
    }


def eval_cfg(backbone, method):
    return {
        **config["eval"],
        "backbone": backbone,
        "method": method,
        "seed": config["seed"],
        "max_new_tokens": config["backbones"][backbone]["max_response_length"],
        "grader_workers": config["rl"].get("grader_workers", 1),
        "tracking": TRACK,
    }


def eval_files():
    return [f"{R}/eval/{b}/{m}.json" for b in BACKBONES for m in ["base"] + METHODS]


def run_metrics():
    return [f"{R}/runs/{b}/{m}/metrics.json" for b in BACKBONES for m in METHODS]


# Final targets of `rule all`: each rule file appends the outputs it contributes (ALL_OUTPUTS.extend([...])).
ALL_OUTPUTS = []
