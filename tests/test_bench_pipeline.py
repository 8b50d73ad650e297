"""``bench/bench_pipeline.py``'s accounting of Snakemake benchmark files: per stage family, and what the claims
study's seeded replicates add (on benchmark trees the test writes; the whole-DAG run itself is ``make bench``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_pipeline", ROOT / "bench" / "bench_pipeline.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write(path: Path, seconds: float, rss: str = "100.0") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("s\th:m:s\tmax_rss\tmax_vms\n" f"{seconds}\t0:00:00\t{rss}\t1.0\n")


def test_stage_table_and_replicate_cost(tmp_path, bench):
    b = tmp_path / "benchmarks"
    write(b / "rl" / "S-base" / "grpo.tsv", 100.0, "900.5")
    write(b / "rl" / "S-base" / "grpo+seed=1.tsv", 110.0, "950.0")
    write(b / "rl" / "M-base" / "rlrt@eps_w=0.2+seed=2.tsv", 90.0)
    write(b / "evaluate" / "S-base" / "grpo+seed=1.tsv", 40.0, "NA")
    write(b / "evaluate" / "S-base" / "base.tsv", 60.0)
    write(b / "table1.tsv", 0.0, "-")
    stages = bench.stage_table(b)
    assert stages == {"evaluate": {"jobs": 2, "job_seconds": 100.0, "peak_rss_mb": 100.0},
                      "rl": {"jobs": 3, "job_seconds": 300.0, "peak_rss_mb": 950.0},
                      "table1": {"jobs": 1, "job_seconds": 0.0, "peak_rss_mb": 0.0}}
    rep = bench.replicate_cost(b)
    assert rep == {"jobs": 3, "job_seconds": 240.0, "share": pytest.approx(240.0 / 400.0)}
    assert bench.replicate_cost(tmp_path / "none") == {"jobs": 0, "job_seconds": 0.0, "share": 0.0}
