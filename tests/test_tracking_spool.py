"""Deferred MLflow logging: a job writes its run as a record without importing MLflow; the driver's flush logs
it with the job's tags and times exactly as a direct log would, and keeps what it could not log."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

HISTORY = [{"step": 0, "loss": 1.5}, {"step": 1, "loss": 1.25}]


@pytest.fixture
def store(tmp_path):
    return {"uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "spool", "artifact_root": str(tmp_path / "art")}


def test_a_deferred_job_imports_no_mlflow_and_writes_one_record(tmp_path, store):
    spool = tmp_path / "spool"
    code = (
        "import sys, json; from rlrt.tracking import log_run;"
        f"r = log_run({store!r}, 'rl/S-base/grpo', {{'stage': 'rl', 'seed': 0}}, {{'lr': 1e-3}}, {HISTORY!r},"
        " {'acc': 0.5});"
        "print(json.dumps([r, 'mlflow' in sys.modules]))"
    )
    env = {"RLRT_MLFLOW_SPOOL": str(spool), "RLRT_RULE": "rl", "RLRT_WILDCARDS": "backbone=S-base,run=grpo",
           "PATH": "/usr/bin:/bin"}
    import os

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    rid, imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert rid is None and imported is False
    (rec,) = [json.loads(p.read_text()) for p in spool.glob("*.json")]
    assert not list(spool.glob(".*.tmp"))  # written atomically
    assert rec["run_name"] == "rl/S-base/grpo" and rec["tags"]["rule"] == "rl" and rec["tags"]["wc.run"] == "grpo"
    assert rec["tags"]["seed"] == "0" and rec["history"] == HISTORY and rec["start_ms"] <= rec["end_ms"]


def test_flush_logs_what_a_direct_log_logs_and_removes_the_record(tmp_path, store, monkeypatch):
    from mlflow import MlflowClient

    from rlrt.tracking import flush, log_run

    artifact = tmp_path / "metrics.json"
    artifact.write_text("{}")
    monkeypatch.setenv("RLRT_WILDCARDS", "backbone=S-base,run=rlrt@eps_w=0.5")
    monkeypatch.setenv("RLRT_RULE", "rl")
    monkeypatch.delenv("RLRT_MLFLOW_SPOOL", raising=False)
    direct = log_run(store, "direct", {"stage": "rl"}, {"lr": 1e-3}, HISTORY, {"acc": 0.5}, artifacts=[artifact],
                     parent="rl/S-base/rlrt@eps_w")
    spool = tmp_path / "spool"
    monkeypatch.setenv("RLRT_MLFLOW_SPOOL", str(spool))
    assert log_run(store, "deferred", {"stage": "rl"}, {"lr": 1e-3}, HISTORY, {"acc": 0.5}, artifacts=[artifact],
                   parent="rl/S-base/rlrt@eps_w") is None
    monkeypatch.delenv("RLRT_RULE")  # the driver is no job: the record's own tags must survive
    monkeypatch.delenv("RLRT_MLFLOW_SPOOL")
    assert flush(spool) == (1, 0) and not list(spool.glob("*.json"))
    client = MlflowClient(store["uri"])
    exp = client.get_experiment_by_name("spool")
    (deferred,) = client.search_runs([exp.experiment_id], "attributes.run_name = 'deferred'")
    d = client.get_run(direct)
    assert deferred.data.params == d.data.params and deferred.data.metrics == d.data.metrics
    same = {k: v for k, v in d.data.tags.items() if not k.startswith("mlflow.") or k == "mlflow.parentRunId"}
    assert {k: deferred.data.tags.get(k) for k in same} == same  # rule, wildcards, sweep parent (the same one)
    assert [m.value for m in client.get_metric_history(deferred.info.run_id, "loss")] == [1.5, 1.25]
    assert [a.path for a in client.list_artifacts(deferred.info.run_id)] == ["metrics.json"]
    assert deferred.info.status == "FINISHED" and deferred.info.start_time <= deferred.info.end_time


def test_a_record_the_store_refuses_stays_for_the_next_flush(tmp_path, store, monkeypatch, caplog):
    from rlrt.tracking import flush, log_run

    spool = tmp_path / "spool"
    monkeypatch.setenv("RLRT_MLFLOW_SPOOL", str(spool))
    log_run(store, "later", {"stage": "t"}, {}, HISTORY)
    (spool / "broken.json").write_text("{not json")
    monkeypatch.delenv("RLRT_MLFLOW_SPOOL")
    bad = tmp_path / "not-a-db"
    bad.write_text("garbage")
    rec = next(p for p in spool.glob("*.json") if p.name != "broken.json")
    data = json.loads(rec.read_text())
    data["tracking"]["uri"] = f"sqlite:///{bad}"
    rec.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="rlrt.tracking"):
        assert flush(spool) == (0, 2)
    assert rec.exists() and "unreadable record" in caplog.text and "not logged" in caplog.text
    data["tracking"]["uri"] = store["uri"]  # the store is back: the next flush logs it
    rec.write_text(json.dumps(data))
    assert flush(spool) == (1, 1) and not rec.exists()
