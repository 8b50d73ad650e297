"""``bench/bench_pipeline.py``'s accounting of Snakemake benchmark files: per stage family, and what the claims
study's seeded replicates add (on benchmark trees the test writes; the whole-DAG run itself is ``make bench``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT, bench_script


@pytest.fixture(scope="module")
def bench():
    return bench_script("bench_pipeline")


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


def test_summary_renders_every_figure(bench):
    """The Markdown summary carries the whole-DAG, stage, step-time, sampler, dry-run and import figures."""
    phases = {"time_gen": 0.4, "time_grade": 0.02, "time_old_logp": 0.2, "time_teacher": 0.0, "time_update": 0.8,
              "teacher_rows": 0.0}
    sampler_row = {"rows": 128, "generated_tokens": 4351, "generate_tok_per_s": 2150.0, "lean_tok_per_s": 5374.0,
                   "speedup": 2.5, "same_tokens": True}
    res = {"date": "2026-12-03", "machine": "2 cores, test CPU", "commit": "abc1234", "cores": 2, "wall_s": 600.0,
           "jobs": 3, "job_seconds_total": 900.0, "stages": {"rl": {"jobs": 3, "job_seconds": 900.0,
                                                                    "peak_rss_mb": 1400.0}},
           "claims_replicates": {"jobs": 2, "job_seconds": 600.0, "share": 2 / 3},
           "step_time": {"question_batch": 16, "n_rollouts": 8, "steps": 6, "grpo_step_s": 1.42, "rlrt_step_s": 1.55,
                         "rlsd_step_s": 1.7, "rlrt_over_grpo": 1.09, "rlsd_over_grpo": 1.2,
                         "breakdown_s": {m: {**phases, "time_teacher": t} for m, t in
                                         (("grpo", 0.0), ("rlrt", 0.13), ("rlsd", 0.28))}},
           "sampler": {"results": {"rl_step": sampler_row, "greedy": {**sampler_row, "rows": 16, "speedup": 1.6}}},
           "dryrun_s": 1.37, "imports_s": {"model_job": 2.5, "table_job": 0.9}}
    base = {"wall_s": 3600.0, "jobs": 125, "job_seconds_total": 7239.0, "job_seconds_by_stage": {"rl": 1958.0},
            "date": "2026-11-24", "machine": "m", "commit": "c"}
    md = bench.summary_md(res, base)
    assert "**10.0 min** wall, 3 jobs" in md and "| rl | 3 | 900 | 1,958 | 1,400 |" in md
    assert "2 jobs, 600 job-seconds, 67 %" in md
    assert "RLRT 1.55 s (**1.09x**)" in md and "| teacher | 0.000 | 0.130 | 0.280 |" in md
    assert "| rl_step | 128 | 4351 | 2,150 | 5,374 | 2.50x | True |" in md
    assert "| greedy | 16 | 4351 | 2,150 | 5,374 | 1.60x | True |" in md
    assert "1.37 s" in md and "model job: 2.50 s" in md
    assert "recomputed" not in md
    st = res["step_time"]
    res["step_time"] = {**st, "grpo_recompute_step_s": 1.7, "rollout_logp_speedup": 1.2,
                        "breakdown_s": {**st["breakdown_s"], "grpo_recompute": phases}}
    md = bench.summary_md(res, base)
    assert "| phase (s) | grpo | rlrt | rlsd | grpo_recompute |" in md
    assert "recomputed instead of the sampler's: 1.70 s (1.20x slower)" in md


def test_from_results_measures_only_a_finished_tree_of_its_config(tmp_path, bench, monkeypatch):
    """``make bench FROM=<dir>`` refuses a tree its config did not write, and a tree with jobs left to run."""
    import os
    import sys

    env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    with pytest.raises(SystemExit, match="results: is results; measure the tree that config wrote"):
        bench.finished_tree(tmp_path / "elsewhere", str(ROOT / "config" / "ci.yaml"), env)
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text((ROOT / "config" / "ci.yaml").read_text() + f"\nresults: {tmp_path / 'fresh'}\n")
    with pytest.raises(SystemExit, match="the run is not finished"):
        bench.finished_tree((tmp_path / "fresh").resolve(), str(overlay), env)


def test_the_fresh_run_goes_through_make_run_s_driver(tmp_path, bench, monkeypatch):
    """The measured run is the one `make run` makes: rlrt.driver (its longest-chain-first priorities and ETA lines)
    with the bench's Snakemake options, into the fresh folder."""
    import subprocess
    import sys

    calls = []

    class Stop(Exception):
        pass

    def run(cmd, **kw):
        calls.append(cmd)
        raise Stop

    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(sys, "argv", ["bench_pipeline.py", "--workdir", str(tmp_path / "w"),
                                      "--out", str(tmp_path / "pipeline.json")])
    with pytest.raises(Stop):
        bench.main()
    cmd = calls[0]
    assert cmd[:3] == [sys.executable, "-m", "rlrt.driver"], cmd
    assert cmd[cmd.index("--directory") + 1] == str(tmp_path / "w") and cmd[cmd.index("--cores") + 1] == "2"
    assert cmd[cmd.index("--snakefile") + 1].endswith("Snakefile")
