"""`make run`'s schedule and ETA (issue 34; rlrt.eta, rlrt.driver): the plan parsed from Snakemake 9's output, each
job's seconds estimated from the last run's benchmark files (with the documented fall-backs), the ETA's two bounds
(job-seconds / cores, the longest chain left), the longest-chain-first priorities, and the driver printing the ETA
while its jobs run longest chain first. Made-up benchmark trees and a 3-job workflow: a few seconds in all."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT
from rlrt import eta

# Snakemake 9.27's own output (a dry run's job blocks; a run's log adds "Finished jobid" and "N of M steps")
PLAN = """\
Building DAG of jobs...
Job stats:
job      count
-----  -------
mk           2
all          1
total        3

[Mon Dec  7 05:03:27 2026]
localrule mk:
    output: out/c.txt, out/c.extra
    log: logs/c.log
    jobid: 3
    benchmark: results/benchmarks/mk/c.tsv
    reason: Missing output files: out/c.txt
    wildcards: x=c
    threads: 4
    resources: tmpdir=/tmp
[Mon Dec  7 05:03:27 2026]
rule use:
    input: out/c.txt, data/raw.txt
    output: out/d/model
    jobid: 1
    benchmark: results/benchmarks/use/d.tsv
    wildcards: x=d, y=e
    resources: tmpdir=/tmp
Select jobs to execute...
[Mon Dec  7 05:03:28 2026]
Finished jobid: 3 (Rule: mk)
1 of 3 steps (33%) done
[Mon Dec  7 05:03:29 2026]
localrule all:
    input: out/d/model/weights.bin
    jobid: 0
    reason: Input files updated by another job: out/d/model
    resources: tmpdir=/tmp
"""


def job(rule, key, inputs=(), outputs=(), threads=1):
    return eta.Job(rule=rule, benchmark=f"results/benchmarks/{key}.tsv", inputs=list(inputs), outputs=list(outputs),
                   threads=threads)


def bench(root: Path, key: str, s) -> None:
    p = root / "results" / "benchmarks" / f"{key}.tsv"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(f"s\th:m:s\tmax_rss\n{s}\t0:00:00\t100.0\n")


def test_the_plan_is_read_from_snakemake_9_job_blocks():
    jobs = eta.parse_jobs(PLAN.splitlines())
    assert [(j.rule, j.jobid) for j in jobs] == [("mk", 3), ("use", 1), ("all", 0)]
    mk, use, all_ = jobs
    assert mk.outputs == ["out/c.txt", "out/c.extra"] and mk.threads == 4 and mk.wildcards == "x=c"
    assert use.inputs == ["out/c.txt", "data/raw.txt"] and use.rule_key == "use[x=d, y=e]"
    assert mk.key == "results/benchmarks/mk/c.tsv" and all_.key == "all[]" and all_.benchmark is None
    # an edge where an input is another job's output, or a file under an output folder
    assert eta.dependencies(jobs) == {mk.key: set(), use.key: {mk.key}, all_.key: {use.key}}


def test_estimates_come_from_the_last_run_then_medians_then_the_table(tmp_path):
    bench(tmp_path, "rl/S-base/grpo", 100)
    bench(tmp_path, "rl/S-base/rlrt", 300)
    bench(tmp_path, "rl/M-base/grpo", 1000)
    (tmp_path / "results/benchmarks/rl/S-base/broken.tsv").write_text("not a benchmark\n")
    jobs = [job("rl", "rl/S-base/grpo"), job("rl", "rl/S-base/sdpo"), job("rl", "rl/M-thinking/grpo"),
            job("evaluate", "evaluate/S-base/base"), job("evaluate", "evaluate/M-base/base"),
            job("fig", "figures/fig9"), eta.Job(rule="all")]
    est = eta.estimates(jobs, tmp_path, {"evaluate": 50.0, "evaluate/M-base/base": 70.0})
    assert est["results/benchmarks/rl/S-base/grpo.tsv"] == (100.0, "last run")
    assert est["results/benchmarks/rl/S-base/sdpo.tsv"] == (200.0, "folder median")  # S-base's 100 and 300
    assert est["results/benchmarks/rl/M-thinking/grpo.tsv"] == (300.0, "rule median")  # rl/**: 100, 300, 1000
    assert est["results/benchmarks/evaluate/S-base/base.tsv"] == (50.0, "table")  # the family's mean
    assert est["results/benchmarks/evaluate/M-base/base.tsv"] == (70.0, "table")  # the job's own
    assert est["results/benchmarks/figures/fig9.tsv"] == (0.0, None)
    assert est["all[]"] == (0.0, "untimed")


def test_the_table_is_make_bench_s_jobs_and_per_stage_means(tmp_path):
    (tmp_path / "performance.json").write_text(json.dumps(
        {"stages": {"rl": {"jobs": 4, "job_seconds": 1000.0}, "none": {"jobs": 0, "job_seconds": 0.0}},
         "schedule": {"job_seconds_by_job": {"rl/M-base/grpo": 400.0}}}))
    assert eta.load_table(tmp_path / "performance.json") == {"rl": 250.0, "rl/M-base/grpo": 400.0}
    assert eta.bench_key("results/benchmarks/rl/M-base/grpo.tsv") == "rl/M-base/grpo"
    assert eta.bench_key("results/benchmarks/tokenizer.tsv") == "tokenizer" and eta.bench_key("x/y.tsv") is None
    (tmp_path / "bad.json").write_text("{")
    assert eta.load_table(tmp_path / "bad.json") == {} and eta.load_table(tmp_path / "absent.json") == {}


def test_the_eta_is_the_larger_of_work_over_cores_and_the_longest_chain():
    a = job("t", "a", outputs=["a"])
    b = job("t", "b", inputs=["a"], outputs=["b"])
    c, d = job("t", "c"), job("t", "d")
    jobs = [a, b, c, d]
    est = {a.key: (100.0, "last run"), b.key: (100.0, "last run"), c.key: (10.0, "last run"), d.key: (10.0, None)}
    r = eta.remaining(jobs, est, cores=2)
    assert (r.work_s, r.critical_s, r.eta_s, r.jobs_left, r.unknown) == (220.0, 200.0, 200.0, 4, 1)
    # a done, b running for 30 s: 70 s of b left
    r = eta.remaining(jobs, est, cores=2, done={a.key}, elapsed={b.key: 30.0})
    assert (r.work_s, r.critical_s, r.eta_s, r.jobs_left) == (90.0, 70.0, 70.0, 3)
    # on one core the work bound wins; a job of 4 threads on 2 cores holds both
    assert eta.remaining(jobs, est, cores=1).eta_s == 220.0
    wide = [a, b, job("t", "w", threads=4)]
    r = eta.remaining(wide, {**est, wide[2].key: (300.0, "last run")}, cores=2)
    assert r.work_s == 800.0 and r.eta_s == 400.0
    line = eta.eta_line(r, 2, 5, now=0.0)
    assert line.startswith("make run: ETA 6 min (~") and "3 of 5 jobs left, 800 job-seconds on 2 cores" in line
    assert "longest chain 5 min" in line and "without a benchmark" not in line
    assert "1 job without a benchmark" in eta.eta_line(eta.remaining(jobs, est, 2), 2, 4, now=0.0)


def test_longest_chain_first_shortens_the_tail():
    """Short jobs listed first, a long chain behind them: plan order leaves a core idle at the tail."""
    short = [job("s", f"s{i}") for i in range(4)]
    l1 = job("l", "l1", outputs=["l1"])
    l2 = job("l", "l2", inputs=["l1"])
    jobs = [*short, l1, l2]
    secs = {**{j.key: 10.0 for j in short}, l1.key: 50.0, l2.key: 50.0}
    levels = eta.bottom_levels(jobs, secs)
    assert levels[l1.key] == 100.0 and levels[l2.key] == 50.0 and levels[short[0].key] == 10.0
    assert eta.simulate(jobs, secs, 2) == 120.0
    assert eta.simulate(jobs, secs, 2, levels) == 100.0
    assert eta.critical_path(jobs, secs) == (100.0, [l1.key, l2.key])


def test_the_schedule_report_of_a_finished_tree(tmp_path):
    jobs = eta.parse_jobs(PLAN.splitlines())
    bench(tmp_path, "mk/c", 30)
    bench(tmp_path, "use/d", 50)
    rep = eta.schedule_report(jobs, tmp_path, cores=2)
    assert rep["job_seconds"] == 30 * 2 + 50  # mk's 4 threads hold both cores
    assert rep["critical_path_s"] == 80.0 and [c["job"] for c in rep["critical_path"]][:2] == [
        "results/benchmarks/mk/c.tsv", "results/benchmarks/use/d.tsv"]
    assert rep["work_bound_s"] == 55.0 and rep["list_schedule_s"]["longest chain first"] == 80.0
    assert rep["unestimated"] == 0
    assert rep["job_seconds_by_job"] == {"mk/c": 30.0, "use/d": 50.0}  # what a fresh clone's ETA starts from


def test_the_log_tracker_counts_started_and_finished_jobs():
    jobs = eta.parse_jobs(PLAN.splitlines())
    est = {j.key: (s, "last run") for j, s in zip(jobs, (30.0, 50.0, 0.0))}
    t = eta.Tracker(jobs, est, cores=2)
    finished = [t.feed(line, 100.0) for line in PLAN.splitlines()]
    assert sum(finished) == 1 and t.done == {jobs[0].key}
    assert set(t.started) == {jobs[0].key, jobs[1].key}  # the plan's blocks stand for the run's job blocks here
    line = t.line(110.0)  # the last block ends with the log so far
    assert set(t.started) == {j.key for j in jobs}
    assert "2 of 3 jobs left, 40 job-seconds" in line  # use: 10 s of its 50 gone


def test_a_first_run_is_estimated_from_the_jobs_it_has_finished(tmp_path):
    """No benchmark file when the run started: every job counts 0 s. Once a job of a folder finishes, the others of
    that folder (and rule family) are estimated from it, and the ETA line says so; a done job is never re-estimated."""
    jobs = [job("rl", "rl/S/a"), job("rl", "rl/S/b"), job("rl", "rl/M/c"), job("evaluate", "evaluate/S/a")]
    t = eta.Tracker(jobs, eta.estimates(jobs, tmp_path), cores=1)
    assert "4 jobs without a benchmark" in t.line(0.0)
    assert t.refresh(tmp_path) == 0  # nothing written yet
    bench(tmp_path, "rl/S/a", 100.0)
    t.done.add(jobs[0].key)
    assert t.refresh(tmp_path) == 2  # rl/S/b from its folder, rl/M/c from the rule family; evaluate still unknown
    assert t.est[jobs[1].key] == (100.0, "folder median") and t.est[jobs[2].key] == (100.0, "rule median")
    assert jobs[0].key not in {j.key for j in jobs if t.est[j.key][1] is not None}  # done: left as it was
    line = t.line(0.0)
    assert "3 of 4 jobs left, 200 job-seconds" in line and "1 job without a benchmark" in line, line


def test_the_table_is_rescaled_by_this_run_s_own_speed(tmp_path):
    """A fresh machine estimates every job from the committed table, measured on another machine and commit: once
    the finished table-estimated jobs sum to CALIBRATE_MIN_S, the table's estimates of the jobs left are scaled by
    their measured / table ratio (of sums), and the line says so; estimates from this tree's own files are not."""
    jobs = [job("backbone", "backbone/S"), job("backbone", "backbone/M"), job("rl", "rl/S/a"), job("rl", "rl/M/b"),
            job("evaluate", "evaluate/S/a")]
    bench(tmp_path, "evaluate/S/a", 10.0)  # this tree's own last run: "last run", never scaled
    table = {"backbone/S": 40.0, "backbone/M": 20.0, "rl/S/a": 100.0, "rl": 300.0}
    t = eta.Tracker(jobs, eta.estimates(jobs, tmp_path, table), cores=1)
    assert "470 job-seconds" in t.line(0.0) and "x" not in t.line(0.0).split("longest chain")[1]
    bench(tmp_path, "backbone/S", 50.0)  # 50 s measured: below CALIBRATE_MIN_S, no scale yet
    t.done.add(jobs[0].key)
    t.refresh(tmp_path, table)
    assert t.scale is None and "430 job-seconds" in t.line(0.0)
    bench(tmp_path, "backbone/M", 40.0)  # 90 s measured where the table said 60: x1.5
    t.done.add(jobs[1].key)
    t.refresh(tmp_path, table)
    assert t.scale == (1.5, 2)
    line = t.line(0.0)
    # rl/S/a 100 x 1.5 (its own table entry), rl/M/b 300 x 1.5 (the family's), evaluate 10 as measured here
    assert "3 of 5 jobs left, 610 job-seconds" in line, line
    assert "the table's estimates x1.50, as measured on 2 finished jobs" in line, line
    assert t.est[jobs[2].key] == (100.0, "table")  # the estimates themselves stay: the scale is applied per line


def test_a_priority_is_looked_up_by_rule_and_wildcards_as_snakemake_prints_them(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"rl[backbone=S-base, run=grpo]": 4321, "all[]": 0}))
    pr = eta.load_priorities(tmp_path / "p.json")
    assert eta.priority(pr, "rl", {"backbone": "S-base", "run": "grpo"}) == 4321
    assert eta.priority(pr, "rl", {"backbone": "M-base", "run": "grpo"}) == 0
    assert eta.load_priorities(None) == {} and eta.load_priorities(tmp_path / "absent.json") == {}


SNAKEFILE = """\
import os
from rlrt.eta import load_priorities, priority
P = load_priorities(os.environ.get("RLRT_PRIORITIES"))
rule all:
    input: expand("out/{x}.txt", x=["a", "b", "c"])
rule mk:
    output: "out/{x}.txt"
    benchmark: "results/benchmarks/mk/{x}.tsv"
    shell: "sleep 0.6; echo {wildcards.x} > {output}"
for r in workflow.rules:
    r.priority = (lambda name: lambda wildcards: priority(P, name, wildcards))(r.name)
"""


def test_make_run_prints_the_eta_and_runs_the_longest_jobs_first(tmp_path):
    """The last run measured a 30 s, b 10 s; c has no file (its folder's median: 20 s). On one core the jobs run
    a, c, b (Snakemake alone starts c first), and the ETA appears before the first job and as they finish."""
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    bench(tmp_path, "mk/a", 30.0)
    bench(tmp_path, "mk/b", 10.0)
    env = {**os.environ, "RLRT_ETA_POLL_S": "0.1",
           "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    env.pop("RLRT_ETA", None)
    env.pop("RLRT_PRIORITIES", None)
    proc = subprocess.run([sys.executable, "-m", "rlrt.driver", "--cores", "1"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    err = proc.stderr
    etas = [line for line in err.splitlines() if line.startswith("make run: ETA")]
    assert etas and etas[0].startswith("make run: ETA 1 min") and "4 of 4 jobs left, 60 job-seconds on 1 core" \
        in etas[0], err[-3000:]
    assert any(re.search(r"[123] of 4 jobs left", line) for line in etas[1:]), err[-3000:]
    prio = json.loads((tmp_path / ".snakemake" / "rlrt-priority.json").read_text())
    assert prio == {"all[]": 0, "mk[x=a]": 30, "mk[x=b]": 10, "mk[x=c]": 20}
    started = re.findall(r"wildcards: x=(\w)", err)
    assert started == ["a", "c", "b"], err[-3000:]
    # other priorities (this run's own benchmark files) rerun nothing
    (tmp_path / "p.json").write_text(json.dumps({"mk[x=a]": 1, "mk[x=b]": 99, "mk[x=c]": 5}))
    again = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "-n"], cwd=tmp_path,
                           env={**env, "RLRT_PRIORITIES": str(tmp_path / "p.json")}, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stderr[-2000:]


def test_the_workflow_gives_every_rule_the_planned_priority(tmp_path):
    """The real Snakefile: a job's priority in RLRT_PRIORITIES is the one Snakemake schedules it with."""
    (tmp_path / "p.json").write_text(json.dumps({"backbone[backbone=S-base]": 4321, "tokenizer[]": 77}))
    env = {**os.environ, "RLRT_PRIORITIES": str(tmp_path / "p.json"),
           "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
                           str(tmp_path), "--configfile", str(ROOT / "config" / "ci.yaml"), "--cores", "2", "-n",
                           "results/checkpoints/S-base"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = {j.rule_key: j for j in eta.parse_jobs(proc.stdout.splitlines() + proc.stderr.splitlines())}
    assert "backbone[backbone=S-base]" in jobs and "tokenizer[]" in jobs
    text = proc.stdout + proc.stderr
    assert re.search(r"rule backbone:\n(    .*\n)*    priority: 4321\n", text), text[-3000:]
    assert re.search(r"rule tokenizer:\n(    .*\n)*    priority: 77\n", text), text[-3000:]
    assert "rule prepare_data:" in text and not re.search(r"rule prepare_data:\n(    .*\n)*    priority:", text)


def test_performance_doc_reports_the_critical_path_against_work_over_cores(tmp_path):
    from rlrt import docs
    from test_docs import PIPELINE

    jobs = eta.parse_jobs(PLAN.splitlines())
    bench(tmp_path, "mk/c", 30)
    bench(tmp_path, "use/d", 50)
    sched = eta.schedule_report(jobs, tmp_path, cores=2)
    doc = docs.performance_doc({**PIPELINE, "wall_s": 120.0, "schedule": sched}, "p.json")
    assert "## Schedule" in doc
    assert "the critical path, **1.3 min**" in doc
    assert "the job-seconds / 2, **0.9 min** (110 job-seconds over 3 jobs)" in doc
    assert "the run took 2.0 min, 50 % over that bound" in doc and "The critical path is the bound" in doc
    assert "| `results/benchmarks/mk/c.tsv` | 30 |" in doc and "| `results/benchmarks/use/d.tsv` | 50 |" in doc
    assert "all[]" not in doc  # untimed targets are not rows
    assert "## Schedule" not in docs.performance_doc(PIPELINE, "p.json")  # an older pipeline.json: no section


def test_the_eta_counts_the_cores_or_the_cluster_s_jobs():
    from rlrt.driver import _cores, _parse

    assert _cores(_parse(["--cores", "3"])) == 3
    assert _cores(_parse(["--executor", "slurm", "--jobs", "40"])) == 40
    assert _cores(_parse([])) == (os.cpu_count() or 1)


def test_make_docs_commits_the_bench_figures_the_eta_reads(tmp_path):
    from rlrt import docs
    from test_docs import PIPELINE

    res = {**PIPELINE, "schedule": {"cores": 2, "jobs": 1, "job_seconds": 750.0, "work_bound_s": 375.0,
                                    "critical_path_s": 750.0, "critical_path": [], "unestimated": 0,
                                    "list_schedule_s": {"plan order": 750.0},
                                    "job_seconds_by_job": {"rl/M-base/grpo": 750.0}}}
    (tmp_path / "pipeline.json").write_text(json.dumps(res))
    assert docs.main(["--no-results", "--bench", str(tmp_path / "pipeline.json"), "--out", str(tmp_path / "d")]) == 0
    assert json.loads((tmp_path / "d" / "performance.json").read_text()) == res
    assert eta.load_table(tmp_path / "d" / "performance.json") == {"evaluate": 150.0, "rl": 375.0,
                                                                   "rl/M-base/grpo": 750.0}


def test_a_failing_plan_or_schedule_never_stops_the_run(tmp_path, monkeypatch, capsys):
    """No plan (Snakemake's dry run fails) or a schedule that raises: the run starts without ETA or priorities."""
    from rlrt import driver

    calls = []
    monkeypatch.setattr(driver.os, "execv", lambda exe, args: calls.append(args))
    monkeypatch.setattr(driver, "rebuild_targets", lambda argv, workdir, dryrun: [])
    monkeypatch.setattr(driver, "clear_stale_lock", lambda workdir, argv: False)
    monkeypatch.setattr(driver, "hold_run_lock", lambda workdir: 0)
    monkeypatch.delenv("RLRT_ETA", raising=False)
    monkeypatch.delenv(driver.PRIORITY_ENV, raising=False)
    monkeypatch.setattr(driver, "plan_run", lambda argv: subprocess.Popen(["false"], stdout=subprocess.PIPE, text=True))
    assert driver.main(["--cores", "1", "--directory", str(tmp_path)]) == 0
    assert len(calls) == 1 and driver.PRIORITY_ENV not in os.environ  # no plan: Snakemake alone

    def broken(plan, workdir):
        plan.communicate()
        os.environ[driver.PRIORITY_ENV] = "half-written"
        raise OSError("disk full")

    monkeypatch.setattr(driver, "plan_run", lambda argv: subprocess.Popen(["true"], stdout=subprocess.PIPE, text=True))
    monkeypatch.setattr(driver, "schedule", broken)
    assert driver.main(["--cores", "1", "--directory", str(tmp_path)]) == 0
    assert len(calls) == 2 and driver.PRIORITY_ENV not in os.environ
    assert "make run: no ETA this time (OSError: disk full)" in capsys.readouterr().err
