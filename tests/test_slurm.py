"""The workflow on a real SLURM cluster: the slurm profile parses, and a slice of the config/ci.yaml DAG runs through
sbatch on a single-node cluster started by tests/slurm_cluster.py, with the numbers of the local run.

The slice (the whole ci DAG would take several times the SLURM budget on CI's 2 cores): the targets
``results/eval/S-base/base.json``, ``results/eval/S-base/rlrt.json`` (the two Table 1 rows of backbone S-base for
the base model and RLRT), ``results/rlt/data/questions.jsonl`` (a CPU job) and ``results/tables/table4.csv``, on a
working directory that starts with the local run's (``dag_run``) data, tokenizer, MLflow store and S-base backbone
(copied with their manifest entries and times: pre-training the backbone again through SLURM took a minute of CI and
exercised nothing the other jobs do not). That is 4 SLURM jobs of 3 stage kinds (rlt_data: prepare, a CPU kind; rl
S-base/rlrt: rl; evaluate x2: evaluate) and 1 local rule (table4), plus the resubmission of the RL job that the test
cancels mid-run.

What it proves:
- every non-local job went through sbatch with the partition, --mem, -t and GPUs its stage kind's ``resources``
  in the config give (read back with ``scontrol show job`` while MinJobAge keeps the finished jobs), the profile's
  default partition for kinds that set none, ``--requeue`` from the profile, and no local rule became a job;
- the sbatch lines themselves (the plugin's ``sbatch call:`` debug lines): a ``--gpus`` site (kind rl: --gpus=1)
  and a ``--gres`` site (kind evaluate, ``gpu_flag: gres``: --gres=gpu:1, no --gpus) on the same cluster, both
  with --nodes=1; a CPU kind's ``constraint`` (-C, the node's feature) and ``slurm_extra`` (--nice=7) reach sbatch
  and SLURM; a backbone's own ``resources.evaluate`` (mem_mb) wins over the kind's;
- Table 1's cells of those rows (computed by rlrt.stages.tables from the SLURM run's eval files) and Table 4 equal
  the local run's (the ``dag_run`` fixture) character for character;
- the RL job ``scancel``-ed after it saved its resume state is resubmitted by the profile's ``retries``, resumes
  (its log says so) and ends with the uninterrupted local run's metrics history (timing keys excepted);
- the cluster goes away even when the code inside it fails (``test_cluster_is_torn_down_on_error``).

Set RLRT_TEST_LOCAL_DAG to the working directory of an earlier local ci.yaml run (results/ inside) to compare
against it instead of running ``dag_run`` (saves minutes when iterating on this file alone).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT
from slurm_cluster import FEATURE, SYSTEM_CONF, ClusterUnavailable, single_node_slurm, unavailable

PROFILE = ROOT / "workflow" / "profiles" / "slurm"
CPU_PART, GPU_PART = "rlrt-cpu", "rlrt-gpu"  # the cluster's default partition is "debug": no job may land there
TARGETS = ["results/eval/S-base/base.json", "results/eval/S-base/rlrt.json", "results/rlt/data/questions.jsonl",
           "results/tables/table4.csv"]
RL_RUN = "results/runs/S-base/rlrt"
# Per stage kind, values no other kind shares, so each job's sbatch flags show which kind's block they came from.
# cpus stay 1 (threads = cpus, as in the local run: the numbers must not change); gpus and partitions do not
# touch the numbers on the CPU backend.
# rl asks for its GPU as a --gpus site does (the default), evaluate as a --gres site does (gpu_flag: gres).
RESOURCES = {
    "default": {"gpus": 0, "cpus": 1, "mem_mb": 1000, "runtime": 20, "partition": None},
    "prepare": {"mem_mb": 1100, "runtime": 21, "constraint": FEATURE, "slurm_extra": "--nice=7"},
    "rl": {"gpus": 1, "mem_mb": 1500, "runtime": 31, "partition": GPU_PART},
    "evaluate": {"gpus": 1, "mem_mb": 1300, "runtime": 23, "partition": GPU_PART, "gpu_flag": "gres"},
}
BACKBONE_RESOURCES = {"S-base": {"resources": {"evaluate": {"mem_mb": 1350}}}}  # over resources.evaluate
BACKBONE_RULES = {"rl", "evaluate"}  # the slice's rules whose wildcards name the backbone (S-base)
RULE_KIND = {"rlt_data": "prepare", "rl": "rl",
             "evaluate": "evaluate"}
EXPECTED_JOBS = {"rlt_data": 1, "rl": 2, "evaluate": 2}  # rl: cancelled + retry
# what the slice starts with, from the local run: the upstream of its targets (so no job runs before rl / evaluate)
SEEDED = ["data", "tokenizer", "mlflow", "checkpoints/S-base", "checkpoints/S-base.json"]
SNAKEMAKE_TIMEOUT = 1200  # s; the run itself is budgeted at ~8 min on CI's 2 cores


def _env(extra: dict | None = None) -> dict:
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = {**os.environ, "PYTHONHASHSEED": "0", "PATH": path, **(extra or {})}
    for k in ("RLRT_SLURM_ACCOUNT", "RLRT_SDM", "RLRT_APPTAINER_ARGS", "RLRT_SLURM_JOBS"):
        env.pop(k, None)
    return env


def _snakemake_cmd(workdir: Path, *extra: str, overlays: tuple[Path, ...] = (), profile: Path = PROFILE) -> list[str]:
    """snakemake with the profile on config/ci.yaml (+ overlays); ``extra`` last (targets after the options)."""
    return [sys.executable, "-m", "snakemake", "--profile", str(profile), "--snakefile", str(ROOT / "Snakefile"),
            "--directory", str(workdir), "--configfile", str(ROOT / "config" / "ci.yaml"), *map(str, overlays),
            *extra]


# ---------------------------------------------------------------- the profile itself (fast, no cluster) ----

def test_profile_parses_and_rejects_unknown_keys(tmp_path):
    """``-n`` with the profile plans the ci DAG; the site's partition env var reaches every job; a copy of the
    profile with one unknown key is refused (so a misspelt key cannot be silently ignored)."""
    env = _env({"RLRT_SLURM_PARTITION": "site-part"})
    proc = subprocess.run(_snakemake_cmd(tmp_path, "-n"), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "This was a dry-run" in out
    assert "slurm_partition=site-part" in out  # default-resources from RLRT_SLURM_PARTITION (YTE)
    assert "slurm_account" not in out  # unset RLRT_SLURM_ACCOUNT: no -A
    bad = tmp_path / "bad_profile"
    shutil.copytree(PROFILE, bad)
    with open(bad / "config.yaml", "a") as f:
        f.write("slurm-status-comand: squeue\n")  # misspelt
    proc = subprocess.run(_snakemake_cmd(tmp_path, "-n", profile=bad), env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0
    assert "unrecognized arguments: --slurm-status-comand" in proc.stderr


def test_profile_settings_are_plugin_settings():
    """Every slurm-* key of the profile is a setting of the installed plugin (what `snakemake --help` lists)."""
    from dataclasses import fields

    from snakemake_executor_plugin_slurm import ExecutorSettings

    text = (PROFILE / "config.yaml").read_text()
    keys = [ln.split(":")[0] for ln in text.splitlines() if ln.startswith("slurm-")]
    assert set(keys) == {"slurm-requeue", "slurm-status-command", "slurm-init-seconds-before-status-checks",
                         "slurm-keep-successful-logs"}
    names = {f.name for f in fields(ExecutorSettings)}
    assert {k.removeprefix("slurm-").replace("-", "_") for k in keys} <= names


def test_paper_config_dry_run_through_the_profile(tmp_path):
    """`make paper-dryrun`: config/paper.yaml planned with the slurm profile shows each job's GPUs, memory, time
    and CPUs from the paper's resources block (a backbone's own block over its kind's: the 32B student's 2-GPU
    evaluation), --nodes=1 on every GPU job, and the site partition on every cluster job."""
    from rlrt.config import load_overlay
    from rlrt.resources import merged

    env = _env({"RLRT_SLURM_PARTITION": "site-gpu"})
    cmd = [sys.executable, "-m", "snakemake", "--profile", str(PROFILE), "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(tmp_path), "--configfile", str(ROOT / "config" / "paper.yaml"), "-n"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    paper = load_overlay(ROOT / "config" / "paper.yaml")
    kinds = {"rl": "rl", "evaluate": "evaluate", "evaluate_passk": "evaluate", "rlt_evaluate": "evaluate",
             "rlt_student_sft": "rlt_train", "rlt_teacher_rl": "rlt_train", "rlt_distill": "rlt_generate"}
    seen, gpus_of = set(), {}
    for block in (proc.stdout + proc.stderr).split("\nrule ")[1:]:
        rule = block.split(":", 1)[0]
        res = dict(kv.split("=", 1) for kv in re.search(r"resources: (.*)", block).group(1).split(", "))
        wc = re.search(r"wildcards: (.*)", block)
        wc = dict(kv.split("=", 1) for kv in wc.group(1).split(", ")) if wc else {}
        kind = kinds.get(rule)
        if kind:
            want = merged(paper, kind, wc.get("backbone") or wc.get("student"))
            assert (int(res["gpu"]), int(res["mem_mb"]), int(res["runtime"]), int(res["cpus_per_task"])) == \
                (want["gpus"], want["mem_mb"], want["runtime"], want["cpus"]), (rule, res)
            seen.add(rule)
            if rule == "rlt_evaluate":
                gpus_of[wc["student"]] = int(res["gpu"])
        assert res.get("nodes") == ("1" if int(res.get("gpu", 0)) else None), (rule, res)
        assert res.get("slurm_partition") == "site-gpu", (rule, res)
    assert seen == set(kinds)
    assert gpus_of == {"Qwen2.5-7B-Instruct": 1, "Qwen2.5-32B-Instruct": 2}


# ---------------------------------------------------------------- a real cluster ----

@pytest.mark.slow
def test_cluster_is_torn_down_on_error(tmp_path):
    """An exception inside the cluster still cancels its running job and stops every daemon it started."""
    folder = tmp_path / "slurm"
    pidfile = tmp_path / "job.pid"
    pids = {}
    try:
        with single_node_slurm(folder, partitions=("only",), gpus=1) as c:
            c.run("sbatch", "--parsable", "-o", str(tmp_path / "job.out"), "--wrap", f"echo $$ > {pidfile}; sleep 300")
            for _ in range(100):
                if pidfile.exists() and pidfile.read_text().strip():
                    break
                time.sleep(0.2)
            pids = {n: int((folder / f"{n}.pid").read_text()) for n in ("slurmctld", "slurmd")}
            pids["job"] = int(pidfile.read_text())
            assert all(_alive(p) for p in pids.values())
            raise RuntimeError("boom")
    except ClusterUnavailable as e:
        unavailable(str(e))
    except RuntimeError as e:
        assert str(e) == "boom"
    assert len(pids) == 3
    time.sleep(1)
    assert not [n for n, p in pids.items() if _alive(p)]
    assert not (folder / "state").exists() and not (folder / "spool").exists()
    assert not SYSTEM_CONF.is_symlink()  # the link for the jobs' srun is gone too


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")  # a zombie has ended


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        with single_node_slurm(tmp_path_factory.mktemp("slurm"), partitions=("debug", CPU_PART, GPU_PART)) as c:
            yield c
    except ClusterUnavailable as e:
        unavailable(str(e))


@pytest.fixture(scope="module")
def local_run(request):
    given = os.environ.get("RLRT_TEST_LOCAL_DAG")
    return Path(given) if given else request.getfixturevalue("dag_run")


def _cancel_when_resumable(cluster, workdir: Path, found: dict, stop: threading.Event) -> None:
    """Watch for the RL job's resume state, then scancel that job (once): a preempted / killed job mid-run."""
    state = workdir / f"{RL_RUN}/checkpoints.partial/resume_state.pt"
    while not stop.is_set():
        if state.exists():
            out = cluster.run("squeue", "-h", "-o", "%i|%k", check=False)
            ids = [ln.split("|")[0] for ln in out.splitlines() if ln.split("|")[-1].startswith("rule_rl_")]
            if ids:
                found["job_id"] = ids[0]
                found["at"] = time.monotonic()
                cluster.run("scancel", ids[0])
                return
        time.sleep(0.1)


def _seed(workdir: Path, local: Path) -> None:
    """Copy the local run's SEEDED outputs, their manifest entries and times into ``workdir``."""
    for rel in SEEDED:
        for src in [local / "results" / rel, *(local / "results" / ".manifest").glob(f"{rel}*")]:
            dst = workdir / src.relative_to(local)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, copy_function=shutil.copy2)
            else:
                shutil.copy2(src, dst)
    shutil.copy2(local / "results" / ".manifest" / "FORMAT", workdir / "results" / ".manifest" / "FORMAT")


@pytest.fixture(scope="module")
def slurm_run(cluster, local_run, tmp_path_factory):
    """The DAG slice through the slurm profile on the test cluster, with the RL job cancelled once mid-run.
    (--verbose: the plugin logs each sbatch line at debug level.)"""
    workdir = tmp_path_factory.mktemp("slurm_dag")
    _seed(workdir, local_run)
    overlay = workdir / "slurm_overlay.yaml"
    overlay.write_text(yaml.safe_dump({"resources": RESOURCES, "backbones": BACKBONE_RESOURCES}))
    env = {**_env({"RLRT_SLURM_PARTITION": CPU_PART}), "SLURM_CONF": cluster.env["SLURM_CONF"]}
    cmd = ["timeout", "-s", "INT", str(SNAKEMAKE_TIMEOUT),  # snakemake ignores SIGTERM
           *_snakemake_cmd(workdir, "--verbose", "--slurm-init-seconds-before-status-checks", "2", *TARGETS,
                           overlays=(overlay,))]
    found, stop = {}, threading.Event()
    watcher = threading.Thread(target=_cancel_when_resumable, args=(cluster, workdir, found, stop), daemon=True)
    t0 = time.monotonic()
    watcher.start()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=SNAKEMAKE_TIMEOUT + 60)
    finally:
        stop.set()
        watcher.join(5)
    wall = time.monotonic() - t0
    print(f"\nSLURM DAG slice: {wall:.0f} s wall, rc {proc.returncode}")
    (workdir / "snakemake.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        logs = "\n".join(f"== {p}\n{p.read_text(errors='replace')[-2000:]}"
                         for p in sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log")))
        raise AssertionError(f"snakemake through SLURM failed ({proc.returncode}) after {wall:.0f} s:\n"
                             f"{proc.stderr[-6000:]}\n{logs}")
    jobs = [j for j in cluster.jobs() if j.get("Comment", "").startswith("rule_")]
    return {"workdir": workdir, "wall": wall, "cancelled": found.get("job_id"), "jobs": jobs,
            "log": proc.stdout + proc.stderr}


def _rule(job: dict) -> str:
    comment = job["Comment"].removeprefix("rule_")
    return comment.split("_wildcards_")[0]


def _minutes(limit: str) -> int:
    """SLURM's TimeLimit ([D-]HH:MM:SS) in minutes."""
    days, _, hms = limit.rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    return (int(days) if days else 0) * 1440 + h * 60 + m + (s > 0)


def _expected(rule: str) -> dict:
    """The config values of one job of ``rule`` in the slice (rlrt.resources.merged: default < kind < backbone)."""
    from rlrt.resources import merged

    cfg = {"resources": RESOURCES, "backbones": BACKBONE_RESOURCES}
    return merged(cfg, RULE_KIND[rule], "S-base" if rule in BACKBONE_RULES else None)


def _gres_gpu(tres: str) -> str:
    """The GPU part of scontrol's TresPerJob / TresPerNode ('gres:gpu:1' or 'gres/gpu:1' -> 'gpu:1'; none: '')."""
    found = re.search(r"gres[:/](gpu:\d+)", tres or "")
    return found.group(1) if found else ""


def _sbatch_lines(log: str) -> dict[str, list[list[str]]]:
    """rule -> the options of each sbatch the plugin ran for it (its --verbose ``sbatch call:`` lines, up to the
    wrapped command), the rule read from the --comment it gives every job (rule_<rule>_wildcards_...)."""
    import shlex

    out = {}
    for line in log.splitlines():
        if "sbatch call: " not in line:
            continue
        head = line.split("sbatch call: ", 1)[1].split(" --wrap=", 1)[0]
        opts = shlex.split(head)
        comment = opts[opts.index("--comment") + 1]
        out.setdefault(_rule({"Comment": comment}), []).append(opts)
    return out


@pytest.mark.slow
def test_every_job_went_through_sbatch_with_its_config_resources(slurm_run):
    jobs = slurm_run["jobs"]
    counts = {}
    for j in jobs:
        counts[_rule(j)] = counts.get(_rule(j), 0) + 1
    assert counts == EXPECTED_JOBS, counts  # no local rule (table4) became a job
    for j in jobs:
        r = _expected(_rule(j))
        where = f"{_rule(j)} (SLURM job {j['JobId']})"
        assert j["Partition"] == (r["partition"] or CPU_PART), where  # config's partition, else the profile's
        assert j["MinMemoryNode"] == f"{r['mem_mb']}M", where
        assert _minutes(j["TimeLimit"]) == r["runtime"], where
        assert j["NumCPUs"] == str(r["cpus"]), where
        per_job, per_node = _gres_gpu(j.get("TresPerJob", "")), _gres_gpu(j.get("TresPerNode", ""))
        if not r["gpus"]:
            assert (per_job, per_node) == ("", ""), where
        elif r.get("gpu_flag") == "gres":  # --gres=gpu:N is a per-node request
            assert (per_job, per_node) == ("", f"gpu:{r['gpus']}"), where
        else:  # --gpus=N is a per-job total
            assert (per_job, per_node) == (f"gpu:{r['gpus']}", ""), where
        assert j["NumNodes"] == "1", where
        assert j.get("Features", "(null)") == (r.get("constraint") or "(null)"), where
        assert j["Nice"] == ("7" if r.get("slurm_extra") == "--nice=7" else "0"), where
        assert j["Requeue"] == "1", where  # the profile's slurm-requeue (the cluster's JobRequeue is 0)
        assert j["JobState"] == ("CANCELLED" if j["JobId"] == slurm_run["cancelled"] else "COMPLETED"), where
    print(f"\n{len(jobs)} SLURM jobs: {counts}; wall {slurm_run['wall']:.0f} s")


@pytest.mark.slow
def test_sbatch_lines_of_a_gpus_site_and_a_gres_site(slurm_run):
    """The flags themselves: --gpus=N (rl) vs --gres=gpu:N (evaluate, gpu_flag: gres), --nodes=1 on every GPU job
    and on no CPU job, the prepare kind's -C and slurm_extra, the S-base override of evaluate's --mem."""
    lines = _sbatch_lines(slurm_run["log"])
    assert {rule: len(v) for rule, v in lines.items()} == EXPECTED_JOBS, sorted(lines)
    for rule, calls in lines.items():
        r = _expected(rule)
        for opts in calls:
            where = f"{rule}: {' '.join(opts)}"
            gpus = [o for o in opts if o.startswith(("--gpus", "--gres"))]
            if not r["gpus"]:
                assert gpus == [] and not any(o.startswith("--nodes") for o in opts), where
            elif r.get("gpu_flag") == "gres":
                assert gpus == [f"--gres=gpu:{r['gpus']}"] and "--nodes=1" in opts, where
            else:
                assert gpus == [f"--gpus={r['gpus']}"] and "--nodes=1" in opts, where
            assert opts[opts.index("--mem") + 1] == str(r["mem_mb"]), where
            if r.get("constraint"):
                assert opts[opts.index("-C") + 1] == r["constraint"], where
            else:
                assert "-C" not in opts, where
            assert ("--nice=7" in opts) == (r.get("slurm_extra") == "--nice=7"), where
    assert _expected("evaluate")["mem_mb"] == 1350 != RESOURCES["evaluate"]["mem_mb"]  # the override is exercised
    # Inside each completed GPU job the plugin's job step runs the rule through `srun ... --gpus=N`: on the --gres
    # site too (the `gpus` resource beside gres), so the step asks for the job's GPUs rather than none.
    logs = slurm_run["workdir"] / ".snakemake" / "slurm_logs"
    for j in slurm_run["jobs"]:
        r = _expected(_rule(j))
        if not r["gpus"] or j["JobState"] != "COMPLETED":
            continue
        (log,) = logs.rglob(f"{j['JobId']}.log")
        step = next(ln for ln in log.read_text().splitlines() if "The call for this job is: srun" in ln)
        assert f"--gpus={r['gpus']} " in step and "--nodes=1 " in step, (_rule(j), step[:300])


def _table1_cells(workdir: Path, evals: list[Path], out: Path) -> pd.DataFrame:
    """Table 1 rows of S-base for base and RLRT, computed by rlrt.stages.tables as rule table1 does."""
    from rlrt.config import load_overlay

    cfg = load_overlay(ROOT / "config" / "ci.yaml")
    tcfg = {"backbones": ["S-base"], "methods": ["rlrt"], "splits": cfg["data"]["test_splits"],
            "skipped": {"S-base": []},
            "n": cfg["eval"]["n"], "stand_in_for": {"S-base": cfg["backbones"]["S-base"].get("stand_in_for", "")}}
    subprocess.run([sys.executable, "-m", "rlrt.stages.tables", "--table", "table1", "--cfg", json.dumps(tcfg),
                    "--evals", *map(str, evals), "--out-csv", str(out), "--out-md", str(out.with_suffix(".md"))],
                   check=True, env=_env(), cwd=workdir, capture_output=True, text=True)
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    return df[(df.backbone == "S-base") & df.method.isin(["base", "rlrt"])].set_index("method").sort_index()


@pytest.mark.slow
def test_tables_equal_the_local_run(slurm_run, local_run):
    work, local = slurm_run["workdir"], local_run
    got = _table1_cells(work, [work / "results/eval/S-base/base.json", work / "results/eval/S-base/rlrt.json"],
                        work / "table1_slice.csv")
    # the same cells from the local run's evaluations (its table1.csv pools RLRT's claims replicates over seeds,
    # which the SLURM run does not train)
    ref = _table1_cells(local, [local / "results/eval/S-base/base.json", local / "results/eval/S-base/rlrt.json"],
                        work / "table1_slice_local.csv")
    value_cols = [c for c in ref.columns if "@" in c]
    assert len(value_cols) >= 4 and len(got) == 2
    pd.testing.assert_frame_equal(got[value_cols], ref[value_cols])
    assert (work / "results/tables/table4.csv").read_text() == (local / "results/tables/table4.csv").read_text()
    rlt = "results/rlt/data/questions.jsonl"  # the CPU job's output
    assert (work / rlt).read_text() == (local / rlt).read_text()


def _no_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "step_time" and not k.startswith("time_")} for h in history]


@pytest.mark.slow
def test_cancelled_rl_job_is_retried_and_resumes_to_the_same_history(slurm_run, local_run):
    work, local = slurm_run["workdir"], local_run
    assert slurm_run["cancelled"], "the RL job was never seen with its resume state (nothing was cancelled)"
    rl = sorted((j for j in slurm_run["jobs"] if _rule(j) == "rl"), key=lambda j: int(j["JobId"]))
    assert [j["JobState"] for j in rl] == ["CANCELLED", "COMPLETED"] and rl[0]["JobId"] == slurm_run["cancelled"]
    log = (work / "results/logs/rl/S-base/rlrt.log").read_text()
    assert "resuming from" in log and "finished steps" in log, log[-2000:]  # the retry continued, not restarted
    got = json.loads((work / RL_RUN / "metrics.json").read_text())
    ref = json.loads((local / RL_RUN / "metrics.json").read_text())
    assert len(got["history"]) == len(ref["history"]) > 1
    assert _no_timing(got["history"]) == _no_timing(ref["history"])
    assert not (work / f"{RL_RUN}/checkpoints.partial").exists()  # the completed retry removed its resume state


def test_unavailable_cluster_skips_here_and_fails_under_ci(monkeypatch):
    """Without root/apt the SLURM test is skipped with the reason, except under CI, where it must fail."""
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not root"):
        unavailable("not root")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="unavailable under CI: not root"):
        unavailable("not root")
