"""A killed driver recovers with the same command (issue 35 §2; rlrt.driver, rlrt.driverwatch, profiles/default).

- The workflow profile is where Snakemake 9 reads it (``profiles/default`` beside the Snakefile) and its settings
  are in effect, alone and under the SLURM profile (whose own values it must not change).
- ``make run`` goes through ``rlrt.driver``.
- A second run started beside a live one refuses, naming it, both before the first has taken Snakemake's lock and
  after; the first's lock stays and it finishes. A hand-started ``snakemake`` beside it is refused by that lock.
- A live hand-started ``snakemake`` holding the folder's lock is never unlocked by ``make run``; a dead one's lock
  is cleared and its incomplete job rerun, by the same command.
- kill -9 of the driver of the ci DAG's S-base slice at a seeded random moment: its jobs stop within seconds, one
  rerun of the same command finishes, the evaluation JSONs / weights / training histories equal the uninterrupted
  run's, and every job has one MLflow run (``RLRT_DRIVER_KILL_TRIALS`` trials, default 1; slow).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

CI = ROOT / "config" / "ci.yaml"
SLICE = ("results/eval/S-base/grpo.json",)
# the slice's jobs that log an MLflow run: (rule, wildcards)
SLICE_JOBS = {("backbone", "backbone=S-base"), ("rl", "backbone=S-base,run=grpo"),
              ("evaluate", "backbone=S-base,run=grpo")}


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONHASHSEED": "0",
            "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}


def driver(workdir: Path, *targets: str, snakefile: Path = ROOT / "Snakefile", config: bool = True) -> list[str]:
    """``make run``'s command (rlrt.driver) on ``workdir``, targets after ``--``."""
    cfg = ["--configfile", str(CI)] if config else []
    return [sys.executable, "-m", "rlrt.driver", "--snakefile", str(snakefile), "--directory", str(workdir), *cfg,
            "--cores", "2", *(["--", *targets] if targets else [])]


def plain_snakemake(workdir: Path, snakefile: Path) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(workdir),
            "--cores", "1"]


def wait_for(cond, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc is None or proc.poll() is None, f"{what}: the process ended ({proc.returncode})"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


# ---------------------------------------------------------------- the workflow profile


def test_the_workflow_profile_is_read_and_in_effect(tmp_path, monkeypatch):
    """Snakemake's own argument parsing (snakemake.cli.parse_args, which loads the profiles) from an unrelated
    folder: the profile beside the Snakefile sets rerun-incomplete and show-failed-logs; with the SLURM profile
    those stay on and the SLURM profile's own settings (keep-going, latency-wait, retries) are untouched."""
    from snakemake.cli import parse_args

    assert (ROOT / "profiles" / "default" / "config.yaml").is_file()
    assert not (ROOT / "workflow" / "profiles" / "default").exists()  # the place Snakemake never read
    monkeypatch.chdir(tmp_path)
    _, args = parse_args(["--snakefile", str(ROOT / "Snakefile"), "-n"])
    assert args.rerun_incomplete is True and args.show_failed_logs is True
    _, off = parse_args(["--snakefile", str(ROOT / "Snakefile"), "-n", "--workflow-profile", "none"])
    assert off.rerun_incomplete is False  # so the True above is the profile's doing
    _, slurm = parse_args(["--snakefile", str(ROOT / "Snakefile"), "-n", "--profile",
                           str(ROOT / "workflow" / "profiles" / "slurm")])
    assert slurm.rerun_incomplete is True and slurm.show_failed_logs is True
    assert slurm.keep_going is True and slurm.latency_wait == 60 and slurm.retries == 2
    assert slurm.cores is None  # no core cap from the workflow profile on a cluster run


def test_make_run_goes_through_the_driver():
    out = subprocess.run(["make", "-n", "run", "dryrun"], cwd=ROOT, capture_output=True, text=True).stdout
    runs = [line for line in out.splitlines() if "--cores" in line]
    assert len(runs) == 2 and all("-m rlrt.driver " in line for line in runs), out


# ---------------------------------------------------------------- jobs die with their driver (fast)

WATCHED = """
import sys, time
from rlrt.stages.common import parse, parser
parse(parser("t"), ["--cfg", "{}"])
print("parsed", flush=True)
time.sleep(float(sys.argv[1]))
print("finished", flush=True)
"""


def test_a_stage_stops_when_its_driver_dies_and_runs_on_while_it_lives(tmp_path):
    """A stage of a live driver runs to its end; of a killed one it exits (75) within seconds, saying why, and
    takes its own children with it."""
    from rlrt.driverwatch import DRIVER_ENV, EXIT_DRIVER_GONE, token

    script = tmp_path / "stage.py"
    script.write_text(WATCHED)
    fake_driver = subprocess.Popen(["sleep", "300"])
    try:
        e = {**env(), DRIVER_ENV: token(fake_driver.pid)}
        live = subprocess.run([sys.executable, str(script), "1"], env=e, capture_output=True, text=True,
                              timeout=120)
        assert live.returncode == 0 and "finished" in live.stdout, live.stderr[-2000:]
        child_script = tmp_path / "stage_with_child.py"
        child_script.write_text(WATCHED.replace('print("parsed", flush=True)',
                                                'import subprocess; kid = subprocess.Popen(["sleep", "300"]); '
                                                'print("parsed", kid.pid, flush=True)'))
        job = subprocess.Popen([sys.executable, str(child_script), "120"], env=e, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        line = job.stdout.readline()
        assert line.startswith("parsed"), job.stderr.read()[-2000:]
        kid = int(line.split()[1])
        t0 = time.monotonic()
        fake_driver.kill()
        fake_driver.wait()
        assert job.wait(timeout=30) == EXIT_DRIVER_GONE
        assert time.monotonic() - t0 < 10
        assert "the Snakemake driver of this job" in job.stderr.read()
        time.sleep(0.2)
        assert not Path(f"/proc/{kid}").exists() or Path(f"/proc/{kid}/stat").read_text().split(") ")[1][0] == "Z"
    finally:
        if fake_driver.poll() is None:
            fake_driver.kill()
            fake_driver.wait()


def test_an_orphan_logs_no_mlflow_run_and_a_rerun_replaces_its_record(tmp_path, monkeypatch):
    """A job of a dead driver logs nothing; the same job's record written twice (a rerun before the flush) is one
    record, so the flush logs the job once."""
    from rlrt import tracking
    from rlrt.driverwatch import DRIVER_ENV, token

    spool = tmp_path / "spool"
    monkeypatch.setenv(tracking.SPOOL_ENV, str(spool))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/m.db")
    monkeypatch.setenv("RLRT_RULE", "rl")
    monkeypatch.setenv("RLRT_WILDCARDS", "backbone=S-base, run=grpo")
    dead = subprocess.Popen(["true"])
    dead.wait()
    # that pid with a start time no process of it can have: dead even if the pid were reused meanwhile
    monkeypatch.setenv(DRIVER_ENV, token(dead.pid).rsplit(":", 1)[0] + ":1")
    assert tracking.log_run({"enabled": True}, "rl/S-base/grpo", {}, {"a": 1}) is None
    assert not spool.exists() or not list(spool.glob("*.json"))
    monkeypatch.setenv(DRIVER_ENV, token())  # this process: alive
    for loss in (1.0, 2.0):  # the orphan's record, then the rerun's
        tracking.log_run({"enabled": True}, "rl/S-base/grpo", {}, {"a": 1}, final={"loss": loss})
    (rec,) = [json.loads(p.read_text()) for p in spool.glob("*.json")]
    assert rec["final"] == {"loss": 2.0}
    monkeypatch.setenv("RLRT_WILDCARDS", "backbone=S-base, run=rlrt")  # another job: its own record
    tracking.log_run({"enabled": True}, "rl/S-base/rlrt", {}, {"a": 1})
    assert len(list(spool.glob("*.json"))) == 2


# ---------------------------------------------------------------- live and stale locks (a tiny workflow)

SLOW = """
rule all:
    input: "out.txt"

rule slow:
    output: "out.txt"
    shell: "echo started > {output}.started && for i in $(seq 600); do [ -f release ] && break; sleep 0.2; done "
           "&& echo done > {output}"
"""
# the job runs until the test creates ``release`` (at most 2 minutes)


def tiny(tmp_path: Path, text: str = SLOW) -> Path:
    """A tiny workflow in ``tmp_path`` with this project's workflow profile beside it."""
    (tmp_path / "Snakefile").write_text(text)
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    return tmp_path / "Snakefile"


def test_a_second_run_beside_a_live_one_refuses_and_leaves_its_lock(tmp_path):
    smk = tiny(tmp_path)
    first = subprocess.Popen(driver(tmp_path, snakefile=smk, config=False), cwd=tmp_path, env=env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        run_lock = tmp_path / ".snakemake" / "rlrt-run.lock"
        wait_for(lambda: run_lock.exists() and "pid" in run_lock.read_text(), 60, "the first run's lock", first)
        # at once: the first may not have taken Snakemake's lock yet (the timing that fooled today's messages)
        early = subprocess.run(driver(tmp_path, snakefile=smk, config=False), cwd=tmp_path, env=env(),
                               capture_output=True, text=True, timeout=120)
        assert early.returncode == 1
        assert "another `make run` is running" in early.stderr and f"pid {first.pid} " in early.stderr
        lock = tmp_path / ".snakemake" / "locks" / "0.output.lock"
        wait_for(lambda: (tmp_path / "out.txt.started").exists(), 60, "the first run's job", first)
        assert lock.exists()
        late = subprocess.run(driver(tmp_path, snakefile=smk, config=False), cwd=tmp_path, env=env(),
                              capture_output=True, text=True, timeout=120)
        assert late.returncode == 1 and f"pid {first.pid} " in late.stderr
        by_hand = subprocess.run(plain_snakemake(tmp_path, smk), cwd=tmp_path, env=env(), capture_output=True,
                                 text=True, timeout=120)
        assert by_hand.returncode != 0 and "cannot be locked" in by_hand.stderr + by_hand.stdout
        assert lock.exists() and first.poll() is None  # nobody broke the live run's lock
        (tmp_path / "release").touch()
        assert first.wait(timeout=120) == 0
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert (tmp_path / "out.txt").read_text() == "done\n"


def test_a_live_hand_started_snakemake_is_never_unlocked(tmp_path):
    smk = tiny(tmp_path)
    live = subprocess.Popen(plain_snakemake(tmp_path, smk), cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: (tmp_path / "out.txt.started").exists(), 60, "the hand-started run's job", live)
        proc = subprocess.run(driver(tmp_path, snakefile=smk, config=False), cwd=tmp_path, env=env(),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1
        assert f"Snakemake pid {live.pid} " in proc.stderr and "holds its lock" in proc.stderr
        assert (tmp_path / ".snakemake" / "locks" / "0.output.lock").exists() and live.poll() is None
    finally:
        os.killpg(live.pid, signal.SIGKILL)
        live.wait()


def test_a_killed_driver_is_recovered_by_the_same_command(tmp_path):
    """kill -9 of the driver mid-job: the same command clears the dead run's lock and reruns its incomplete job
    (before: IncompleteFilesException, then LockException, then a third command)."""
    smk = tiny(tmp_path, SLOW.replace("echo started > {output}.started", "echo part > {output} && "
                                      "echo started > {output}.started"))
    first = subprocess.Popen(driver(tmp_path, snakefile=smk, config=False), cwd=tmp_path, env=env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: (tmp_path / "out.txt.started").exists(), 60, "the job", first)
        os.killpg(first.pid, signal.SIGKILL)  # the driver and its shell job (not a stage: it has no watch)
        first.wait()
        assert (tmp_path / "out.txt").read_text() == "part\n"
        (tmp_path / "release").touch()  # the rerun's job is quick
        again = subprocess.run(driver(tmp_path, snakefile=smk, config=False), cwd=tmp_path, env=env(),
                               capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "clearing the Snakemake lock" in again.stderr
        assert (tmp_path / "out.txt").read_text() == "done\n"
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()


# ---------------------------------------------------------------- kill -9 of the project's driver


def stage_processes(workdir: Path) -> list[str]:
    """Command lines of the live stage processes (``-m rlrt.stages``) whose working directory is ``workdir``."""
    out = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            args = (d / "cmdline").read_bytes().split(b"\0")
            if b"rlrt.stages" in b" ".join(args) and Path(os.readlink(d / "cwd")) == workdir:
                raw = (d / "stat").read_text()
                if raw[raw.rindex(")") + 2:].split()[0] not in ("Z", "X"):
                    out.append(b" ".join(args).decode(errors="replace")[:160])
        except OSError:
            continue
    return out


def results(workdir: Path) -> dict:
    """What the slice's tables read: the evaluation JSONs, the final weights, the training histories (without
    wall-clock timings)."""
    r = workdir / "results"
    out = {p: json.loads((workdir / p).read_text()) for p in SLICE}
    for p in ("checkpoints/S-base/model.safetensors", "runs/S-base/grpo/model/model.safetensors"):
        out[p] = (r / p).read_bytes()
    hist = json.loads((r / "runs/S-base/grpo/metrics.json").read_text())["history"]
    out["grpo history"] = [{k: v for k, v in h.items() if "time" not in k} for h in hist]
    return out


def mlflow_jobs(workdir: Path) -> list[tuple[str, str]]:
    """(rule, wildcards) of every live MLflow run in the workdir's store, duplicates kept."""
    db = sqlite3.connect(workdir / "results" / "mlflow" / "mlflow.db")
    try:
        rows = db.execute("SELECT a.value, b.value FROM tags a JOIN tags b ON a.run_uuid = b.run_uuid "
                          "JOIN runs r ON r.run_uuid = a.run_uuid WHERE a.key = 'rule' AND b.key = 'wildcards' "
                          "AND r.lifecycle_stage = 'active'").fetchall()
    finally:
        db.close()
    return sorted(rows)


def job_logs(workdir: Path) -> int:
    """How many jobs have started (each job's shell creates its log first)."""
    logs = workdir / "results" / "logs"
    return sum(1 for p in logs.rglob("*.log") if p.name != "mlflow_flush.log") if logs.is_dir() else 0


@pytest.mark.slow
def test_kill_9_of_the_driver_at_random_points_then_the_same_command_recovers(dag_run, tmp_path):
    """The reference is the finished ci DAG (``dag_run``): its S-base slice is byte-identical to the slice run
    alone (the jobs are seeded). Each trial kills the driver a seeded random 0-3 s after a seeded random job of
    the slice started (so the kill lands whatever the machine's speed), checks that its jobs stop, reruns the
    same command once and compares."""
    want = results(dag_run)
    # the slice's GRPO run learns (issue 35 §7): a rerun that lost or repeated a step would change its numbers
    assert max(h["grad_norm"] for h in want["grpo history"]) > 0, want["grpo history"]
    assert want["runs/S-base/grpo/model/model.safetensors"] != want["checkpoints/S-base/model.safetensors"]
    rng = random.Random(35)
    trials = int(os.environ.get("RLRT_DRIVER_KILL_TRIALS", "1"))
    report = []
    for i in range(trials):
        work = tmp_path / f"trial{i}"
        nth, delay = rng.randint(1, len(SLICE_JOBS) + 2), rng.uniform(0.0, 3.0)  # + prepare_data, tokenizer
        first = subprocess.Popen(driver(work, *SLICE), cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
        while job_logs(work) < nth and first.poll() is None:
            time.sleep(0.05)
        time.sleep(delay)
        landed = first.poll() is None
        if landed:
            os.kill(first.pid, signal.SIGKILL)  # the driver alone: its jobs must stop by themselves
        first.wait()
        running = stage_processes(work)
        t_kill = time.monotonic()
        while stage_processes(work):
            assert time.monotonic() - t_kill < 90, f"orphaned jobs run 90 s after the kill: {stage_processes(work)}"
            time.sleep(0.2)
        stopped_s = time.monotonic() - t_kill
        again = subprocess.run(driver(work, *SLICE), cwd=ROOT, env=env(), capture_output=True, text=True,
                               timeout=1800)
        where = f"trial {i} (kill {delay:.1f} s after job {nth} started)"
        assert again.returncode == 0, f"{where}: {again.stderr[-4000:]}"
        got = results(work)
        for key in want:
            assert got[key] == want[key], f"{where}: {key} differs from the uninterrupted run's"
        runs = mlflow_jobs(work)
        assert len(runs) == len(set(runs)) and set(runs) <= set(mlflow_jobs(dag_run)), f"{where}: {runs}"
        assert SLICE_JOBS <= set(runs), f"{where}: {runs}"
        report.append({"trial": i, "kill_after_job": nth, "delay_s": round(delay, 1), "landed": landed,
                       "jobs_running_at_kill": len(running), "orphans_gone_after_s": round(stopped_s, 1),
                       "stale_lock_cleared": "clearing the Snakemake lock" in again.stderr})
        print(json.dumps(report[-1]))
    assert any(r["landed"] for r in report)
