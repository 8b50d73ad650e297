"""Workflow config: validation against ``workflow/schemas/config.schema.yaml`` and the derived views rules use.

``validate`` raises ``ConfigError`` with ONE line naming the offending key (``rl.steps: -1 is less than the
minimum of 1``), before any job runs. The Snakefile calls it first; tests call it directly.
"""

from __future__ import annotations

import copy
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

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = list(validator.iter_errors(cfg))
    if errors:
        err = jsonschema.exceptions.best_match(errors)
        path = list(err.absolute_path)
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            raise ConfigError(f"config key {_key(path + extra[:1])!r}: unknown key (misspelled?); "
                              f"allowed here: {sorted(err.schema.get('properties', {}))}")
        if err.validator == "required":
            raise ConfigError(f"config key {_key(path)!r}: {err.message}")
        raise ConfigError(f"config key {_key(path)!r}: {err.message}")
    _cross_checks(cfg)
    return cfg


def _cross_checks(cfg: dict[str, Any]) -> None:
    splits = cfg["data"]["splits"]
    for name in cfg["data"]["test_splits"]:
        if name not in splits:
            raise ConfigError(f"config key 'data.test_splits': split {name!r} is not defined in data.splits")
        if name == "train":
            raise ConfigError("config key 'data.test_splits': the train split cannot be a test split")
    for name, s in splits.items():
        if s["min_digits"] > s["max_digits"]:
            raise ConfigError(f"config key 'data.splits.{name}.min_digits': larger than max_digits")
    for name, b in cfg["backbones"].items():
        if b["mode"] == "sft":
            parent = b["parent"]
            if parent not in cfg["backbones"]:
                raise ConfigError(f"config key 'backbones.{name}.parent': unknown backbone {parent!r}")
            if cfg["backbones"][parent]["mode"] != "pretrain":
                raise ConfigError(f"config key 'backbones.{name}.parent': {parent!r} must be a pretrained backbone")
    rl = cfg["rl"]
    if rl["mini_batch"] > rl["question_batch"]:
        raise ConfigError("config key 'rl.mini_batch': larger than rl.question_batch")
    for k in cfg["eval"]["ks"]:
        if k > cfg["eval"]["n"]:
            raise ConfigError(f"config key 'eval.ks': k={k} is larger than eval.n={cfg['eval']['n']}")


def load(path: str | Path) -> dict[str, Any]:
    cfg = yaml.safe_load(Path(path).read_text())
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: the config must be a mapping")
    return validate(cfg)


def method_config(cfg: dict[str, Any], backbone: str, method: str) -> dict[str, Any]:
    """Registry defaults <- ``methods.<method>`` <- ``method_overrides.<kind>.<method>`` for this backbone."""
    from rlrt.methods.registry import get_method

    kind = cfg["backbones"][backbone]["kind"]
    out = copy.deepcopy(get_method(method).defaults)
    out.update(cfg["methods"].get(method) or {})
    out.update(((cfg.get("method_overrides") or {}).get(kind) or {}).get(method) or {})
    return out
