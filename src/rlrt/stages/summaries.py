"""Stage: the run's numbers in the flat files DVC reads (``dvc.yaml``'s ``metrics:`` and ``plots:``).

* ``--out-metrics`` (JSON): every evaluation's metrics, keyed by the evaluation file's path under the results folder
  without ``.json`` (``eval/S-base/rlrt``, ``rlt/eval/S-base/sft-rlt-full/arithmetic``) -> split -> metric
  (``avg@16``, ``pass@16``, ...). ``dvc metrics show`` / ``dvc metrics diff`` flatten it.
* ``--out-curves``: one CSV per RL backbone, ``training_<backbone>.csv``, column ``step`` then one column per run
  (the run's ``reward_mean`` at that step), written into that folder; ``dvc plots show`` draws one line per run.
* ``--out-passk`` (CSV): ``k`` then one column ``<run>/<split>`` per pass@k evaluation (unbiased pass@k in
  percent, k = 1..n): Fig 8's curves.

Nothing is recomputed that the tables do not already show; this only reshapes the stage outputs.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

from rlrt.io import atomic_dir, atomic_path, read_json, write_json
from rlrt.metrics import passk_curve


def metrics_summary(evals: list[str], results: str) -> dict:
    """Evaluation files -> {key: {split: {metric: value}}} (key: the file's path under ``results``, no suffix)."""
    out = {}
    for f in sorted(evals):
        key = Path(os.path.relpath(f, results)).with_suffix("").as_posix()
        out[key] = {split: d["metrics"] for split, d in read_json(f)["splits"].items()}
    return out


def training_curves(runs: list[str], results: str) -> dict[str, list[dict]]:
    """RL metrics files (``<results>/runs/<backbone>/<run>/metrics.json``) -> {backbone: wide rows by step}."""
    by_backbone: dict[str, dict[str, dict[int, float]]] = {}
    for f in sorted(runs):
        backbone, run = Path(os.path.relpath(f, results)).parts[1:3]
        hist = read_json(f)["history"]
        by_backbone.setdefault(backbone, {})[run] = {int(h["step"]): float(h["reward_mean"]) for h in hist}
    tables = {}
    for backbone, cols in by_backbone.items():
        steps = sorted({s for c in cols.values() for s in c})
        tables[backbone] = [{"step": s, **{r: cols[r].get(s, "") for r in cols}} for s in steps]
    return tables


def passk_table(files: list[str], results: str) -> list[dict]:
    """pass@k evaluation files -> wide rows ``k, <run>/<split>...`` (k = 1..n)."""
    cols = {}
    for f in sorted(files):
        e = read_json(f)
        run = Path(os.path.relpath(f, results)).with_suffix("").as_posix().removeprefix("eval_passk/")
        for split, d in e["splits"].items():
            cols[f"{run}/{split}"] = passk_curve(d["correct_counts"], int(e["n"]))
    n = max((len(c) for c in cols.values()), default=0)
    return [{"k": k + 1, **{c: round(float(v[k]), 6) if k < len(v) else "" for c, v in cols.items()}}
            for k in range(n)]


def _write_csv(path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["k"])
        w.writeheader()
        w.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", required=True, help="the results folder (keys are relative to it)")
    p.add_argument("--evals", nargs="*", default=[])
    p.add_argument("--runs", nargs="*", default=[])
    p.add_argument("--passk", nargs="*", default=[])
    p.add_argument("--out-metrics", required=True)
    p.add_argument("--out-curves", required=True, help="folder of training_<backbone>.csv")
    p.add_argument("--out-passk", required=True)
    a = p.parse_args(argv)
    write_json(a.out_metrics, metrics_summary(a.evals, a.results))
    with atomic_dir(a.out_curves) as tmp:
        for backbone, rows in training_curves(a.runs, a.results).items():
            _write_csv(Path(tmp) / f"training_{backbone}.csv", rows)
    _write_csv(a.out_passk, passk_table(a.passk, a.results))
    print(f"{len(a.evals)} evaluations, {len(a.runs)} runs, {len(a.passk)} pass@k files")


if __name__ == "__main__":
    main()
