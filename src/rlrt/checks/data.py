"""Data splits and backbones: every split referenced exists, every backbone named exists, an SFT backbone's parent
is a pretrained one, no two backbone names differ only in case, and chat-template variables are read."""

from __future__ import annotations

from typing import Any

from rlrt.errors import ConfigError
from rlrt.plan import data_splits


def check_data(cfg: dict[str, Any]) -> None:
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


def check_backbones(cfg: dict[str, Any]) -> None:
    _check_case_collisions(cfg["backbones"], "backbones", "backbone")
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


def _check_case_collisions(names, key: str, what: str) -> None:
    """Names that become folder names (``<results>/runs/<backbone>/``) must differ in more than case: on a
    case-insensitive filesystem (macOS, Windows shares) ``S-base`` and ``s-base`` would share one folder and
    overwrite each other's outputs. (Split names, method names and run ids are lower case by the schema.)"""
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(str(name).casefold(), name)
        if other != name:
            raise ConfigError(f"config key '{key}.{name}': {what} name {name!r} differs from {other!r} only in case; "
                              f"on a case-insensitive filesystem both would write the same folder, so rename one")


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
