"""Run planning: what a validated config trains, evaluates and with which settings.

The views the rules and stages derive from a config that :func:`rlrt.config.validate` has passed: run ids (a
method, a sweep point ``<method>@<key>=<value>``, a seeded replicate ``<run>+seed=<k>``) and their seeds, each
run's settings, the plain plan of RL runs per backbone (:func:`plain_runs`: Table 1, extra runs, sweeps), the data
splits and the evaluation engine. The claims study's seeded replicates are planned by :mod:`rlrt.claims` on top of
this plan (:func:`rlrt.claims.planned_runs` is the whole plan), and the validation (:mod:`rlrt.config`) sits above
both: imports point down, ``rlrt.errors`` <- ``rlrt.plan`` <- ``rlrt.claims`` <- ``rlrt.config``.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from rlrt.errors import ConfigError


def format_value(value: Any) -> str:
    """Setting value as it appears in a run id: JSON for numbers/booleans/null, raw for strings."""
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
    digest = hashlib.sha256(f"{int(root)}/{int(k)}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def run_seed(cfg: dict[str, Any], run: str) -> int:
    """The random seed a job of ``run`` (RL run, evaluated run or RLT student) uses: :func:`derive_seed` of the
    root ``seed`` and the run's seed index."""
    return derive_seed(cfg["seed"], split_seed(run)[1])


def parse_run_id(run: str) -> tuple[str, dict[str, Any]]:
    """Inverse of :func:`run_id`: (method, {key: value}) with the value parsed back (JSON, else string). A seed
    suffix (:func:`seeded`) is dropped: seeds change the random stream, never the settings."""
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


def data_splits(cfg: dict[str, Any]) -> list[str]:
    """The split names the data rules produce: ``data.splits`` (synthetic) or ``data.datasets`` (hub)."""
    d = cfg["data"]
    return list(d["datasets"] if d["source"] == "hub" else d["splits"])


def fig8_splits(cfg: dict[str, Any]) -> list[str]:
    """The test splits of Fig 8's pass@k evaluation, figure and claim 6: ``experiments.fig8.splits`` (RLRT Sec. 6.4:
    AIME24 and AIME26), else every ``data.test_splits``."""
    return list(((cfg.get("experiments") or {}).get("fig8") or {}).get("splits") or cfg["data"]["test_splits"])


def chat_template_kwargs(cfg: dict[str, Any], backbone: str) -> dict[str, Any]:
    """``backbones.<backbone>.chat_template_kwargs`` ({} when unset): the variables every prompt rendered for the
    backbone passes to its chat template (``rlrt.tasks.prompts.chat_prompt``)."""
    return dict(cfg["backbones"][backbone].get("chat_template_kwargs") or {})


def rl_settings(cfg: dict[str, Any], backbone: str) -> dict[str, Any]:
    """The RL block a backbone's runs train with: ``rl`` with ``backbones.<backbone>.rl`` over it (e.g. a longer
    run for a backbone that learns more slowly). Only the runs of a backbone with an override change."""
    return {**cfg["rl"], **(cfg["backbones"][backbone].get("rl") or {})}


def settings_error(e: Exception) -> ConfigError:
    """``build_settings``' ``KeyError`` / ``ValueError`` (``"<where>.<key>: <why>"``) as a ``ConfigError`` that
    starts ``config key '<where>.<key>':`` like every other."""
    msg = str(e.args[0]) if e.args else str(e)
    key, sep, why = msg.partition(": ")
    if sep and key and " " not in key:
        return ConfigError(f"config key {key!r}: {why}")
    return ConfigError(f"config key {msg}")


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
        raise settings_error(e) from None


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


def plain_runs(cfg: dict[str, Any]) -> dict[str, list[str]]:
    """Every RL run of the config but the claims study's seeded replicates, per RL backbone (``rl_backbones``):
    methods.run (Table 1; less methods.skip for the backbone's kind) + experiments.extra_runs + sweeps, each once.
    The whole plan, with the replicates, is :func:`rlrt.claims.planned_runs`."""
    exp = cfg.get("experiments") or {}
    runs: dict[str, list[str]] = {b: table1_methods(cfg, b) for b in cfg["rl_backbones"]}
    for method, bbs in (exp.get("extra_runs") or {}).items():
        for b in bbs:
            runs[b].append(method)
    for sw in exp.get("sweeps") or []:
        for b in sw["backbones"]:
            runs[b].extend(sweep_runs(cfg, sw, b))
    return {b: list(dict.fromkeys(r)) for b, r in runs.items()}
