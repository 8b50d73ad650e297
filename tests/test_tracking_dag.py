"""MLflow after a whole config/ci.yaml run: one run per training, evaluation and analysis job, findable with
``mlflow.search_runs`` by the tags a researcher filters on, with its params, step and final metrics, artifacts, and
one parent run per sweep.

The job list comes from Snakemake itself (``--detailed-summary``: one log file per job), so a job that logs twice,
or not at all, fails here.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter, defaultdict

import pytest

from conftest import snakemake

# Every rule whose job trains, evaluates or analyses (tables, figures, data prep and tokenizers are not runs).
TRACKED = {"backbone", "rl", "evaluate", "evaluate_passk", "analysis_heatmaps", "analysis_markers",
           "analysis_reflection", "analysis_shift", "rlt_teacher_sft", "rlt_teacher_rl", "rlt_distill",
           "rlt_reward_rank_data", "rlt_student_sft", "rlt_rl", "rlt_evaluate"}


@pytest.fixture(scope="module")
def jobs(dag_run):
    """rule -> number of jobs of the finished ci run, from Snakemake's detailed summary (one log per job)."""
    proc = snakemake(dag_run, "--detailed-summary", "--nolock")
    rows = list(csv.DictReader(io.StringIO(proc.stdout), delimiter="\t"))
    assert rows and "rule" in rows[0], proc.stdout[:2000]
    logs = defaultdict(set)
    for r in rows:
        logs[r["rule"]].add(r["log-file(s)"])
    return {rule: len(v) for rule, v in logs.items()}


@pytest.fixture(scope="module")
def runs(dag_run):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{dag_run}/results/mlflow/mlflow.db")
    return mlflow.search_runs(experiment_names=["rlrt-ci"], max_results=10000)


def test_one_run_per_job_with_its_tags(jobs, runs):
    children = runs[runs["tags.stage"] != "sweep"]
    per_rule = Counter(children["tags.rule"].dropna())
    expected = {rule: n for rule, n in jobs.items() if rule in TRACKED}
    assert set(expected) == TRACKED  # the ci run has every kind of job
    assert per_rule == Counter(expected)
    for col in ("tags.stage", "tags.method", "tags.backbone", "tags.seed", "tags.git_commit",
                "tags.mlflow.source.git.commit", "tags.wildcards"):
        assert children[col].notna().all(), col
    # the root seed (0), or a claims replicate's seed derived from it and its index (`<run>+seed=<k>`)
    from rlrt.plan import derive_seed

    k = children["tags.wildcards"].str.extract(r"\+seed=(\d+)")[0].fillna("0").astype(int)
    assert list(children["tags.seed"]) == [str(derive_seed(0, i)) for i in k]
    assert (k > 0).any() and (k == 0).any()
    # the wildcards of each job are tags of their own: one RL run per (backbone, run) of the plan
    rl = children[children["tags.rule"] == "rl"]
    assert not rl.duplicated(["tags.wc.backbone", "tags.wc.run"]).any()
    method_of = rl["tags.wc.run"].str.replace(r"\+seed=\d+$", "", regex=True).str.split("@").str[0]
    assert (method_of == rl["tags.method"]).all()
    assert (rl["tags.wc.backbone"] == rl["tags.backbone"]).all()


def test_runs_carry_step_metrics_final_metrics_params_and_artifacts(dag_run, runs):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{dag_run}/results/mlflow/mlflow.db")
    rl = runs[(runs["tags.rule"] == "rl") & (runs["tags.wc.backbone"] == "S-base") & (runs["tags.wc.run"] == "rlrt")]
    assert len(rl) == 1
    rid = rl["run_id"].iloc[0]
    history = json.loads((dag_run / "results/runs/S-base/rlrt/metrics.json").read_text())["history"]
    logged = client.get_metric_history(rid, "reward_mean")
    assert [m.step for m in logged] == [h["step"] for h in history]
    assert [m.value for m in logged] == pytest.approx([h["reward_mean"] for h in history])
    assert rl["metrics.final/reward_last"].notna().all()
    assert float(rl["params.method_cfg.eps_w"].iloc[0]) == 1.0  # the config slice is the run's params
    assert [a.path for a in client.list_artifacts(rid)] == ["metrics.json"]
    ev = runs[(runs["tags.rule"] == "evaluate") & (runs["tags.wc.backbone"] == "S-base") & (runs["tags.wc.run"] == "rlrt")]
    result = json.loads((dag_run / "results/eval/S-base/rlrt.json").read_text())
    assert ev["metrics.final/test/avg_at_4"].iloc[0] == pytest.approx(result["splits"]["test"]["metrics"]["avg@4"])
    heat = runs[runs["tags.rule"] == "analysis_heatmaps"]
    arts = {a.path for a in client.list_artifacts(heat["run_id"].iloc[0])}
    assert any(p.endswith(".png") for p in arts) and any(p.endswith(".json") for p in arts)


def test_each_sweep_shares_one_parent_run(runs):
    from rlrt.claims import planned_runs
    from rlrt.config import load_overlay

    from conftest import ROOT

    points = runs[(runs["tags.rule"] == "rl") & runs["tags.wc.run"].str.contains("@", na=False)]
    plan = planned_runs(load_overlay(ROOT / "config" / "ci.yaml"))
    # the ci sweeps' 6 new points, and the claims' replicate of one of them (claim 4's smaller eps_w, seed 1)
    assert len(points) == sum("@" in r for rs in plan.values() for r in rs) == 6 + 1
    parents = runs[runs["tags.stage"] == "sweep"].set_index("run_id")
    for (backbone, method, key), group in points.groupby(
            [points["tags.wc.backbone"], points["tags.method"], points["tags.wc.run"].str.split("=").str[0]]):
        ids = set(group["tags.mlflow.parentRunId"])
        assert len(ids) == 1, (backbone, key)  # one parent per sweep ...
        parent = parents.loc[ids.pop()]
        assert parent["tags.rlrt.parent"] == f"rl/{backbone}/{key}"  # ... named after it
        assert parent["tags.backbone"] == backbone and parent["tags.method"] == method
    assert runs[runs["tags.stage"] != "sweep"]["tags.mlflow.parentRunId"].notna().sum() == len(points)
    assert len(parents) == points.groupby(
        [points["tags.wc.backbone"], points["tags.wc.run"].str.split("=").str[0]]).ngroups
