"""Benchmark: wall time of the whole embedded default DAG (``make run`` from scratch) and where it goes.

Runs ``snakemake --cores 2`` on ``config/config.yaml`` into a fresh directory, then reads every rule's
``benchmark:`` file to report the wall time per stage, and runs ``bench_step_time.py`` for the RLRT/GRPO ratio.

    python bench/bench_pipeline.py [--workdir /tmp/rlrt-bench]   (the folder is kept for inspection)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workdir", default=None)
    p.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    p.add_argument("--out", default=str(ROOT / "results" / "bench" / "pipeline.json"))
    args = p.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="rlrt-bench-"))
    if (work / "results").exists():
        shutil.rmtree(work / "results")
    # Rules run `python` from PATH (the job's environment): this interpreter's bin/ first, as `make` does.
    env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
                    str(work), "--configfile", args.config, "--cores", "2"], check=True, env=env)
    wall = time.perf_counter() - t0
    per_stage: dict[str, float] = defaultdict(float)
    for tsv in (work / "results" / "benchmarks").rglob("*.tsv"):
        stage = tsv.relative_to(work / "results" / "benchmarks").parts[0].removesuffix(".tsv")
        with tsv.open() as f:
            row = next(csv.DictReader(f, delimiter="\t"))
        per_stage[stage] += float(row["s"])
    res = {"wall_s": wall, "cores": 2, "job_seconds_by_stage": dict(sorted(per_stage.items())),
           "job_seconds_total": sum(per_stage.values())}
    step = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_step_time.py"), "--checkpoint",
                           str(work / "results" / "checkpoints" / "S-base"),
                           "--out", str(Path(args.out).with_name("step_time.json"))],
                          check=True, capture_output=True, text=True)
    res["step_time"] = json.loads(step.stdout[step.stdout.index("{"):])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
