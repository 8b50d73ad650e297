"""MLflow tracking: every training and evaluation job logs params, step metrics and final metrics.

The store is a SQLite file under ``results/`` (``tracking.uri`` in config). Two jobs may log at once
(``snakemake --cores 2``): the store is created once by the ``mlflow_init`` rule, each job logs in a few batched
calls at its end, and a locked database is retried. Open the UI with
``mlflow ui --backend-store-uri sqlite:///results/mlflow/mlflow.db``.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)


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


def log_run(
    tracking: dict[str, Any] | None, run_name: str, tags: dict[str, str], params: dict[str, Any],
    history: Sequence[dict[str, float]] = (), final: dict[str, float] | None = None, step_key: str = "step",
) -> str | None:
    """Log one finished job as an MLflow run; returns its run id (None when tracking is disabled)."""
    if not tracking or not tracking.get("enabled", True):
        return None
    from mlflow.entities import Metric, Param

    uri, experiment = tracking["uri"], tracking.get("experiment", "rlrt")
    exp_id = ensure_experiment(uri, experiment, tracking.get("artifact_root"))
    client = _client(uri)
    run = _retry(lambda: client.create_run(exp_id, run_name=run_name, tags={k: str(v) for k, v in tags.items()}))
    rid = run.info.run_id
    now = int(time.time() * 1000)
    metrics = [
        Metric(metric_name(k), float(v), now, int(rec.get(step_key, i)))
        for i, rec in enumerate(history) for k, v in rec.items() if k != step_key and isinstance(v, (int, float))
    ]
    metrics += [Metric(metric_name(f"final/{k}"), float(v), now, 0) for k, v in (final or {}).items()
                if isinstance(v, (int, float))]
    flat = [Param(k, v) for k, v in _flat(params).items()]
    for i in range(0, max(len(metrics), 1), 1000):
        batch_params = flat[:100] if i == 0 else []
        _retry(lambda: client.log_batch(rid, metrics=metrics[i:i + 1000], params=batch_params))
    for i in range(100, len(flat), 100):
        _retry(lambda: client.log_batch(rid, params=flat[i:i + 100]))
    _retry(lambda: client.set_terminated(rid))
    return rid


def main(argv: list[str] | None = None) -> None:
    """``python -m rlrt.tracking --cfg '<tracking json>'``: create the store and experiment (rule mlflow_init)."""
    import argparse
    import json

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--cfg", required=True)
    cfg = json.loads(p.parse_args(argv).cfg)
    exp = ensure_experiment(cfg["uri"], cfg.get("experiment", "rlrt"), cfg.get("artifact_root"))
    print(f"mlflow store {cfg['uri']} experiment {cfg.get('experiment', 'rlrt')} id {exp}")


if __name__ == "__main__":
    main()
