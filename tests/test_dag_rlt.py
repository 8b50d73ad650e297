"""The RLT branch end to end on config/ci.yaml (the shared ``dag_run``): both tables, both figures, the
reward-rank JSON, distillation data that keeps the teacher's raw text, and every stage in MLflow."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import ROOT


def _cfg():
    from rlrt.config import load_overlay

    return load_overlay(ROOT / "config" / "ci.yaml")


@pytest.mark.slow
@pytest.mark.parametrize("table, rows", [
    ("rlt_table1", ["base", "sft-rlt", "sft-reference", "sft-rlt_small", "sft-reference_small", "delta"]),
    ("rlt_table2", ["base", "grpo-base", "sft-rlt", "grpo-sft-rlt", "sft-reference", "grpo-sft-reference", "delta"]),
])
def test_rlt_tables_have_every_row_and_a_number_in_every_cell(dag_run, table, rows):
    cfg = _cfg()
    n = cfg["rlt"]["eval"]["n"]
    df = pd.read_csv(dag_run / "results" / "tables" / f"{table}.csv")
    assert set(rows) <= set(df["method"])
    cols = [f"{s}/{m}@{n}" for s in cfg["data"]["test_splits"] for m in ("Avg", "Pass")]
    vals = df[df.method != "delta"][cols].to_numpy(dtype=float)
    assert ((vals >= 0) & (vals <= 100)).all()
    delta = df[df.method == "delta"][cols].to_numpy(dtype=float)
    assert ((delta >= -100) & (delta <= 100)).all()
    assert "RLT" in (dag_run / "results" / "tables" / f"{table}.md").read_text()


@pytest.mark.slow
def test_rlt_figures_and_reward_rank_json(dag_run):
    for name in ("rlt_countdown.png", "rlt_reward_rank.png"):
        assert (dag_run / "results" / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rr = json.loads((dag_run / "results" / "rlt" / "reward_rank.json").read_text())
    K = _cfg()["rlt"]["reward_rank"]["ranks"]
    assert "pearson_r" in rr and rr["ranks"] == list(range(1, K + 1))
    assert rr["pearson_r"] is None or -1.0 <= rr["pearson_r"] <= 1.0
    assert rr["mean_reward"] == sorted(rr["mean_reward"])  # rank r holds each question's r-th lowest reward
    assert len(set(rr["examples"])) == 1  # every rank's dataset holds the same questions


@pytest.mark.slow
def test_distillation_data_is_the_teachers_raw_text(dag_run):
    from rlrt.io import read_jsonl
    from rlrt.tasks.rlt_format import student_text

    cfg = _cfg()
    traces = read_jsonl(dag_run / "results" / "rlt" / "traces" / "arithmetic.jsonl")
    assert len(traces) == cfg["rlt"]["n_questions"]  # no filtering: every question keeps its trace
    for t in traces:
        assert t["text"] == student_text(t["explanation"], t["solution"])
    summary = json.loads((dag_run / "results" / "rlt" / "traces" / "arithmetic.json").read_text())["summary"]
    assert summary["traces"] == len(traces)
    assert summary["format_failures"] == sum(not t["format_ok"] for t in traces)
    qs = read_jsonl(dag_run / "results" / "rlt" / "data" / "questions.jsonl")
    assert [q["id"] for q in qs] == [t["id"] for t in traces]
    cd = {r["id"] for r in read_jsonl(dag_run / "results" / "rlt" / "data" / "countdown_test.jsonl")}
    assert len(cd) == cfg["rlt"]["countdown"]["n_test"]
    small = json.loads((dag_run / "results" / "rlt" / "students" / "S-base" / "sft-rlt_small" / "metrics.json")
                       .read_text())["summary"]
    assert small["examples"] == cfg["rlt"]["n_small"]


@pytest.mark.slow
def test_rlt_stages_are_logged_to_mlflow(dag_run):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{dag_run}/results/mlflow/mlflow.db")
    exp = client.get_experiment_by_name("rlrt-ci")
    runs = client.search_runs([exp.experiment_id], max_results=2000)
    stages = {r.data.tags.get("stage") for r in runs}
    assert {"rlt_teacher_sft", "rlt_teacher_rl", "rlt_distill", "rlt_reward_rank", "rlt_student_sft", "rlt_rl",
            "rlt_eval"} <= stages
    teacher = [r for r in runs if r.data.tags.get("stage") == "rlt_teacher_rl"][0]
    assert {"reward_mean", "r_ss", "r_kl", "format_ok"} <= set(teacher.data.metrics)
    cd = [r for r in runs if r.data.tags.get("stage") == "rlt_eval" and r.data.tags.get("task") == "countdown"]
    # one MLflow run per countdown evaluation the DAG wrote (6 of the RLT branch + the claims' seeded replicates)
    written = list((dag_run / "results" / "rlt" / "eval").glob("*/*/countdown.json"))
    assert len(cd) == len(written) >= 6
