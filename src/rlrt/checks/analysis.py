"""The ``analysis`` block (RLRT's Sec. 6 studies): each study's backbone, split and runs exist in the plan, and
its sizes are consistent (examples within problems, candidates shown within the top-k, word lengths, bins)."""

from __future__ import annotations

from typing import Any

from rlrt.errors import ConfigError
from rlrt.plan import data_splits
from rlrt.schema import analysis_config


def check_analysis(cfg: dict[str, Any], runs: dict[str, list[str]]) -> None:
    """``runs``: the whole plan (:func:`rlrt.claims.planned_runs`)."""
    analysis = analysis_config(cfg)
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
                                  f"{runs.get(b, [])})")
    h = analysis.get("heatmaps")
    if h and h["n_examples"] > h["n_problems"]:
        raise ConfigError("config key 'analysis.heatmaps.n_examples': larger than n_problems (one rollout per "
                          "problem is rendered)")
    if h and h["candidates_show"] > h["candidates_top"]:
        raise ConfigError(f"config key 'analysis.heatmaps.candidates_show': {h['candidates_show']} explore / exploit "
                          f"tokens shown, more than the {h['candidates_top']} candidates they are chosen from "
                          f"(analysis.heatmaps.candidates_top)")
    m = analysis.get("markers")
    if m and m["min_chars"] > m["max_chars"]:
        raise ConfigError(f"config key 'analysis.markers.min_chars': {m['min_chars']} is larger than "
                          f"analysis.markers.max_chars ({m['max_chars']}), so no word could be a marker")
    r = analysis.get("reflection")
    if r:
        for bin_ in ("hard", "easy"):
            lo, hi = r[bin_]
            if not 0 <= lo <= hi <= r["n_rollouts"]:
                raise ConfigError(f"config key 'analysis.reflection.{bin_}': need 0 <= {lo} <= {hi} <= n_rollouts "
                                  f"({r['n_rollouts']})")

