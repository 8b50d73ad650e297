"""MLflow tracking: every training, evaluation and analysis job is one MLflow run.

A run holds the job's config slice as params, its per-step metrics, its final metrics (``final/...``), its key
output files as artifacts (metrics JSON, figures), and tags: ``stage``, ``method``, ``backbone``, ``seed``, the git
commit (``mlflow.source.git.commit``), and the Snakemake ``rule`` and ``wildcards`` (one ``wc.<name>`` tag each;
the rules export ``RLRT_RULE`` / ``RLRT_WILDCARDS`` to the job). The runs of one sweep share a parent run
(``mlflow.parentRunId``), created by whichever sweep job logs first.

Where: ``MLFLOW_TRACKING_URI`` (the workflow exports it to every job: an ``mlflow server`` on a cluster, else
``tracking.uri`` of the config, else a SQLite file ``<results>/mlflow/mlflow.db``). The URI is deliberately not a
rule parameter: pointing the jobs at another store reruns nothing. Two jobs may log at once (``snakemake --cores
2``): the store is created once by the ``mlflow_init`` rule, each job logs in a few batched calls at its end, and a
locked database is retried. Tracking never fails a job: a store that still fails (deleted, locked past the retries,
replaced by a non-database file) gives a warning naming the store and what was not logged, and the job's outputs
stay. Open the UI with ``mlflow ui --backend-store-uri sqlite:///results/mlflow/mlflow.db``.

Deferred logging (``tracking.deferred``, the embedded default): a job does not import MLflow (2-3 s of start-up
per job) but writes its run as one JSON record into the spool folder the workflow exports (``RLRT_MLFLOW_SPOOL``,
``<results>/mlflow/spool``); the Snakemake driver logs every record once the DAG ends (``onsuccess`` and
``onerror``: :func:`flush`), with the job's own tags and its start and end times, and removes each record it
logged. A record whose logging fails stays for the next flush (``python -m rlrt.tracking --flush <folder>``).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The checkout's commit, ``+dirty`` when tracked files differ from it; ``unknown`` outside a git checkout."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def job_tags() -> dict[str, str]:
    """Tags of the Snakemake job this process runs in: rule, wildcards (whole and one tag each), git commit."""
    tags = {"git_commit": git_commit()}
    tags["mlflow.source.git.commit"] = tags["git_commit"].removesuffix("+dirty")
    rule = os.environ.get("RLRT_RULE")
    if rule:
        tags["rule"] = rule
        wildcards = os.environ.get("RLRT_WILDCARDS", "")
        tags["wildcards"] = wildcards
        for item in re.split(r",\s*(?=[A-Za-z_]\w*=)", wildcards):  # "backbone=S-base,run=rlrt@eps_w=0.5"
            if "=" in item:
                k, v = item.split("=", 1)
                tags[f"wc.{k}"] = v
    return tags


def tracking_uri(tracking: dict[str, Any]) -> str:
    """``tracking.uri`` when given explicitly, else ``MLFLOW_TRACKING_URI`` (what the workflow exports)."""
    uri = tracking.get("uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise RuntimeError("MLflow tracking is on but no store is set: export MLFLOW_TRACKING_URI (the workflow "
                           "does) or pass tracking.uri")
    return uri


def _client(uri: str):
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no network at run time
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _retry(fn, tries: int = 20):
    for i in range(tries):
        try:
            return fn()
        except Exception as e:  # sqlite "database is locked" surfaces as various mlflow exceptions
            if "locked" not in str(e).lower() or i == tries - 1:
                raise
            time.sleep(0.5 + 0.25 * i)


def ensure_experiment(uri: str, experiment: str, artifact_root: str | None = None) -> str:
    """Create the store and the experiment if needed; return the experiment id."""
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    client = _client(uri)
    exp = _retry(lambda: client.get_experiment_by_name(experiment))
    if exp is not None:
        return exp.experiment_id
    loc = Path(artifact_root).resolve().as_uri() if artifact_root else None
    try:
        return _retry(lambda: client.create_experiment(experiment, artifact_location=loc))
    except Exception:
        exp = client.get_experiment_by_name(experiment)  # created by a concurrent job
        if exp is None:
            raise
        return exp.experiment_id


def metric_name(key: str) -> str:
    """MLflow metric names allow [A-Za-z0-9_-. :/]: ``pass@16`` is logged as ``pass_at_16``."""
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", key.replace("@", "_at_"))


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = str(v)[:6000]
    return out


def sweep_parent(stage: str, backbone: str, run: str) -> str | None:
    """The parent-run name of a sweep point ``<method>@<key>=<value>``: ``<stage>/<backbone>/<method>@<key>``, shared
    by every point of that sweep on that backbone; None for a plain run (whose settings are the config's)."""
    if "@" not in run:
        return None
    method, setting = run.split("@", 1)
    return f"{stage}/{backbone}/{method}@{setting.split('=', 1)[0]}"


def _parent_run(client, exp_id: str, key: str, tags: dict[str, str]) -> str:
    """The run id of the parent run named ``key`` (created if missing). Concurrent jobs may each create one; all
    then agree on the oldest (lowest start time, then id) and delete their own duplicate."""
    def find():
        runs = client.search_runs([exp_id], filter_string=f"tags.`rlrt.parent` = '{key}'", max_results=50)
        return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))

    found = _retry(find)
    if found:
        return found[0].info.run_id
    mine = _retry(lambda: client.create_run(exp_id, run_name=key, tags={**tags, "rlrt.parent": key, "stage": "sweep"}))
    _retry(lambda: client.set_terminated(mine.info.run_id))
    winner = _retry(find)[0].info.run_id
    if winner != mine.info.run_id:
        _retry(lambda: client.delete_run(mine.info.run_id))
    return winner


SPOOL_ENV = "RLRT_MLFLOW_SPOOL"
_JOB_START_MS = int(time.time() * 1000)  # this process's start: a deferred run's start time


def log_run(
    tracking: dict[str, Any] | None, run_name: str, tags: dict[str, str], params: dict[str, Any],
    history: Sequence[dict[str, float]] = (), final: dict[str, float] | None = None, step_key: str = "step",
    artifacts: Sequence[str | os.PathLike] = (), parent: str | None = None,
) -> str | None:
    """Log one finished job as an MLflow run: now, or (``RLRT_MLFLOW_SPOOL`` set: deferred logging) as a record
    in that folder for the driver's :func:`flush`; returns the run id when logged now (None when deferred,
    disabled or failed). Arguments: see :func:`log_now`."""
    if not tracking or not tracking.get("enabled", True):
        return None
    from rlrt.driverwatch import driver_gone

    if driver_gone():  # an orphan of a killed driver: its outputs count as incomplete, the rerun logs the job
        log.warning("mlflow: the Snakemake driver of this job is gone; run %r is not logged (the rerun logs it)",
                    run_name)
        return None
    spool = os.environ.get(SPOOL_ENV)
    if spool:
        spool_run(spool, tracking, run_name, tags, params, history, final, step_key, artifacts, parent)
        return None
    return log_now(tracking, run_name, tags, params, history, final, step_key, artifacts, parent)


def spool_run(spool: str | os.PathLike, tracking: dict[str, Any], run_name: str, tags: dict[str, str],
              params: dict[str, Any], history: Sequence[dict[str, float]] = (), final: dict[str, float] | None = None,
              step_key: str = "step", artifacts: Sequence[str | os.PathLike] = (), parent: str | None = None) -> Path:
    """Write one run as a JSON record into ``spool`` (atomically: a flush never reads half a record) and return
    its path. The record holds everything :func:`log_now` needs, the job's own tags (rule, wildcards, commit) and
    the store it was meant for; no MLflow import. A record that cannot be written is a warning, never a failure."""
    import json

    record = {"tracking": {**tracking, "uri": tracking_uri(tracking)},
              "artifact_root": tracking.get("artifact_root") or os.environ.get("RLRT_MLFLOW_ARTIFACT_ROOT"),
              "run_name": run_name, "tags": {**job_tags(), **{k: str(v) for k, v in tags.items()}},
              "params": params, "history": list(history), "final": final or {}, "step_key": step_key,
              "artifacts": [str(Path(a).resolve()) for a in artifacts], "parent": parent,
              "start_ms": _JOB_START_MS, "end_ms": int(time.time() * 1000)}
    folder = Path(spool)
    safe = re.sub(r"[^A-Za-z0-9_.=-]", "_", run_name)[:120]
    # One record per job and run name: a job rerun before the flush (its driver was killed, the next run reruns
    # it) replaces its earlier record, so the flush logs the job once. Outside a Snakemake job: one per call.
    import hashlib

    job = "\0".join((os.environ.get("RLRT_RULE", ""), os.environ.get("RLRT_WILDCARDS", ""), run_name))
    key = (hashlib.sha256(job.encode()).hexdigest()[:16] if os.environ.get("RLRT_RULE")
           else f"{time.time_ns()}-{os.getpid()}")
    path = folder / f"{safe}-{key}.json"
    try:
        from rlrt.io import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(record, default=str))
    except OSError as e:
        log.warning("mlflow: cannot write the deferred record of run %r to %s (%s); not logged. The job's "
                    "outputs on disk are complete.", run_name, folder, e)
    return path


def flush(spool: str | os.PathLike) -> tuple[int, int]:
    """Log every record of ``spool`` (oldest written first) with :func:`log_now` and remove each one logged; a
    record whose store fails stays (with :func:`log_now`'s warning) for the next flush. Returns (logged, left)."""
    import json

    logged = left = 0

    def written(p: Path) -> tuple[float, str]:
        try:
            return p.stat().st_mtime, p.name
        except OSError:
            return 0.0, p.name

    for path in sorted(Path(spool).glob("*.json"), key=written):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            log.warning("mlflow: unreadable record %s (%s); left in place", path, e)
            left += 1
            continue
        if rec.get("artifact_root") and not os.environ.get("RLRT_MLFLOW_ARTIFACT_ROOT"):
            rec["tracking"].setdefault("artifact_root", rec["artifact_root"])
        rid = log_now(rec["tracking"], rec["run_name"], rec["tags"], rec["params"], rec["history"], rec["final"],
                      rec["step_key"], rec["artifacts"], rec["parent"], times=(rec["start_ms"], rec["end_ms"]))
        if rid is None:
            left += 1
            continue
        path.unlink(missing_ok=True)
        logged += 1
    return logged, left


def log_now(
    tracking: dict[str, Any] | None, run_name: str, tags: dict[str, str], params: dict[str, Any],
    history: Sequence[dict[str, float]] = (), final: dict[str, float] | None = None, step_key: str = "step",
    artifacts: Sequence[str | os.PathLike] = (), parent: str | None = None,
    times: tuple[int, int] | None = None,
) -> str | None:
    """Log one finished job as an MLflow run now; returns its run id (None when tracking is disabled or failed).

    ``tags`` are the stage's own (stage, method, backbone, seed, ...); the job's rule, wildcards and git commit are
    added here. ``artifacts``: files or folders copied into the run (missing ones are skipped with a warning).
    ``parent``: the name of the run's parent (a sweep), shared by every job that names it. ``times``: the run's
    (start, end) in ms since the epoch (a deferred record's job times; default: now).

    Tracking never fails the job: the stages call this after writing their outputs, and a store that is missing,
    locked past the retries, not a database or otherwise failing gives one warning naming the store, the run and
    what was not logged, and returns None (the outputs on disk stay). A SQLite store whose file has gone is
    recreated empty, with a warning."""
    if not tracking or not tracking.get("enabled", True):
        return None
    from mlflow.entities import Metric, Param

    uri, experiment = tracking_uri(tracking), tracking.get("experiment", "rlrt")
    now = times[1] if times else int(time.time() * 1000)
    metrics = [
        Metric(metric_name(k), float(v), now, int(rec.get(step_key, i)))
        for i, rec in enumerate(history) for k, v in rec.items() if k != step_key and isinstance(v, (int, float))
    ]
    metrics += [Metric(metric_name(f"final/{k}"), float(v), now, 0) for k, v in (final or {}).items()
                if isinstance(v, (int, float))]
    flat = [Param(k, v) for k, v in _flat(params).items()]
    # what is still to log, in order; the warning of a failure lists what is left
    todo = {"run": f"run {run_name!r}", "metrics": f"{len(metrics)} metric values", "params": f"{len(flat)} params",
            "artifacts": "artifacts " + (", ".join(str(a) for a in artifacts) or "(none)")}
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        log.warning("mlflow: store %s is missing (deleted?); run %r goes to a new, empty store there", uri, run_name)
    rid = None
    try:
        exp_id = ensure_experiment(uri, experiment, tracking.get("artifact_root")
                                   or os.environ.get("RLRT_MLFLOW_ARTIFACT_ROOT"))
        client = _client(uri)
        all_tags = {**job_tags(), **{k: str(v) for k, v in tags.items()}}
        if parent:
            shared = {k: all_tags[k] for k in ("method", "backbone", "seed", "git_commit") if k in all_tags}
            all_tags["mlflow.parentRunId"] = _parent_run(client, exp_id, parent, shared)
            all_tags["rlrt.sweep"] = parent
        run = _retry(lambda: client.create_run(exp_id, run_name=run_name, tags=all_tags,
                                               start_time=times[0] if times else None))
        rid = run.info.run_id
        del todo["run"]
        for i in range(0, max(len(metrics), 1), 1000):
            batch_params = flat[:100] if i == 0 else []
            _retry(lambda: client.log_batch(rid, metrics=metrics[i:i + 1000], params=batch_params))
        del todo["metrics"]
        for i in range(100, len(flat), 100):
            _retry(lambda: client.log_batch(rid, params=flat[i:i + 100]))
        del todo["params"]
        for path in artifacts:
            p = Path(path)
            if p.is_dir():
                _retry(lambda: client.log_artifacts(rid, str(p), artifact_path=p.name))
            elif p.is_file():
                _retry(lambda: client.log_artifact(rid, str(p)))
            else:
                log.warning("mlflow: artifact %s does not exist; not logged", p)
        del todo["artifacts"]
        _retry(lambda: client.set_terminated(rid, end_time=times[1] if times else None))
    except Exception as e:  # noqa: BLE001 - whatever the store raises, the job's results are already on disk
        log.warning("mlflow: store %s failed (%s); not logged: %s%s. The job's outputs on disk are complete.",
                    uri, _root_cause(e), "; ".join(todo.values()) or "the run's end status",
                    f" (run {run_name!r}, id {rid}, left unfinished)" if rid else "")
        return None
    return rid


def persistent_run_id(state_file: str | os.PathLike, tracking: dict[str, Any] | None, experiment: str,
                      run_name: str) -> str | None:
    """The MLflow run id of a long job that may be killed and requeued (the verl trainer's live run): the id kept
    in ``state_file`` (beside the job's resume state) when that run still exists in the store, else a new run
    (created now, left running, tagged like every job's run) whose id is written there. The caller exports it as
    ``MLFLOW_RUN_ID``, which the run's logger resumes, so a requeue continues the same run instead of opening a
    second one. Returns None (and the logger opens its own run, as before) when tracking is off, no store is set
    or the store fails (one warning); never fails the job. Not used by the local engine, which logs each job once
    at its end (:func:`log_run`)."""
    if not tracking or not tracking.get("enabled", True):
        return None
    path = Path(state_file)
    try:
        uri = tracking_uri(tracking)
    except RuntimeError as e:
        log.warning("mlflow: %s; the trainer's run is not kept across requeues", e)
        return None
    try:
        client = _client(uri)
        if path.is_file():
            rid = path.read_text().strip()
            try:
                if rid and _retry(lambda: client.get_run(rid)).info.lifecycle_stage == "active":
                    return rid
            except Exception as e:  # noqa: BLE001 - deleted, or a store that was replaced
                log.warning("mlflow: run %s of %s is not in store %s (%s); starting a new one", rid, path, uri,
                            _root_cause(e))
        exp_id = ensure_experiment(uri, experiment, tracking.get("artifact_root")
                                   or os.environ.get("RLRT_MLFLOW_ARTIFACT_ROOT"))
        run = _retry(lambda: client.create_run(exp_id, run_name=run_name, tags=job_tags()))
        from rlrt.io import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_text(run.info.run_id + "\n")
        return run.info.run_id
    except Exception as e:  # noqa: BLE001 - tracking never fails a job
        log.warning("mlflow: store %s failed (%s); run %r is not kept across requeues", uri, _root_cause(e),
                    run_name)
        return None


def _root_cause(e: BaseException) -> str:
    """``Type: first line`` of the innermost exception of a chain (e.g. sqlite's "file is not a database" under
    MLflow's and SQLAlchemy's wrappers)."""
    while e.__cause__ is not None or (e.__context__ is not None and not e.__suppress_context__):
        e = e.__cause__ or e.__context__
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"


def run_flush(spool: str | os.PathLike, log_file: str | os.PathLike, python: str = "python") -> tuple[int, str]:
    """Run ``python -m rlrt.tracking --flush <spool>`` as a child of the Snakemake driver (its ``onsuccess`` /
    ``onerror``: rules/common.smk), appending its output to ``log_file``; return (its exit code, the line for the
    driver to print). A failure's line says why: the log's last line, or, where the log got nothing (its disk is
    full: the flush then writes the cause to the driver's stderr, rlrt.joblog), the disk's free space. Never
    raises: tracking never fails the workflow."""
    from rlrt.joblog import disk_note

    log_file = Path(log_file)
    start = 0
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_file, "ab")
        start = out.tell()
    except OSError as e:
        out = None  # the flush's output then goes to the driver's own stderr
        print(f"mlflow: cannot open {log_file} ({e}); the flush writes to this terminal", file=sys.stderr)
    try:
        rc = subprocess.run([python, "-m", "rlrt.tracking", "--flush", str(spool)], stdin=subprocess.DEVNULL,
                            stdout=out, stderr=subprocess.STDOUT if out else None).returncode
    except OSError as e:
        return 127, f"mlflow: flushing {spool} failed: cannot run {python} ({e})"
    finally:
        if out is not None:
            out.close()
    try:
        with open(log_file, "rb") as f:
            f.seek(start)
            lines = f.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        lines = []
    failed = [ln for ln in lines if ln.startswith("[rlrt] mlflow flush failed:")]  # rlrt.joblog's cause line
    last = (failed or [ln for ln in lines if not ln.startswith("[rlrt] mlflow flush: started")] or [""])[-1]
    disk = disk_note(log_file)
    if rc == 0:
        if last:
            return rc, f"{last}  (log: {log_file})"
        return rc, (f"mlflow: the flush of {spool} wrote nothing to its log {log_file}"
                    + (f" ({disk}); what it could not write is above, on stderr" if disk else ""))
    why = last or f"its log {log_file} is empty" + (f" ({disk}; the cause is above, on stderr)" if disk else "")
    return rc, f"mlflow: flushing {spool} failed (exit {rc}): {why}; see {log_file}"


def main(argv: list[str] | None = None) -> None:
    """``python -m rlrt.tracking --cfg '<tracking json>'``: create the store and experiment (rule mlflow_init);
    ``python -m rlrt.tracking --flush <spool folder>``: log the deferred runs (the workflow's end)."""
    import argparse
    import json

    p = argparse.ArgumentParser(description=main.__doc__)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--cfg")
    g.add_argument("--flush")
    args = p.parse_args(argv)
    if argv is None:  # a job (mlflow_init) or the driver's flush: a failure writes its cause (rlrt.joblog)
        from rlrt.joblog import install

        store = os.environ.get("MLFLOW_TRACKING_URI", "")
        install("mlflow flush" if args.flush else "mlflow_init",
                [args.flush] if args.flush else [store[len("sqlite:///"):]] if store.startswith("sqlite:///") else [])
    if args.flush:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                            stream=sys.stderr)
        logged, left = flush(args.flush)
        print(f"mlflow: logged {logged} deferred run(s) from {args.flush}" + (f", {left} left (see warnings)"
                                                                            if left else ""))
        return
    cfg = json.loads(args.cfg)
    uri = tracking_uri(cfg)
    exp = ensure_experiment(uri, cfg.get("experiment", "rlrt"), cfg.get("artifact_root")
                            or os.environ.get("RLRT_MLFLOW_ARTIFACT_ROOT"))
    print(f"mlflow store {uri} experiment {cfg.get('experiment', 'rlrt')} id {exp}")


if __name__ == "__main__":
    main()
