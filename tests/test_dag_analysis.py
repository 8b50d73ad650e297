"""The analysis stages inside the shared CI DAG run (config/ci.yaml): every output exists and is consistent."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from rlrt.config import load_overlay

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def acfg():
    cfg = load_overlay(ROOT / "config" / "ci.yaml")
    return cfg, cfg["analysis"]


@pytest.mark.slow
def test_heatmaps(dag_run, acfg):
    _, a = acfg
    res = dag_run / "results"
    n = a["heatmaps"]["n_examples"]
    for i in range(1, n + 1):
        assert (res / "figures" / f"fig2_heatmap_{i}.png").read_bytes()[:8] == PNG
        assert (res / "figures" / f"fig2_heatmap_{i}.html").read_text().startswith("<!DOCTYPE html>")
    assert not (res / "figures" / f"fig2_heatmap_{n + 1}.png").exists()
    h = json.loads((res / "analysis" / "heatmaps.json").read_text())
    assert len(h["examples"]) == n and h["run"] == a["heatmaps"]["run"]
    for ex in h["examples"]:
        d = np.array(ex["dbar"])
        assert len(d) == len(ex["tokens"]) == len(ex["dhat"]) > 0 and (d >= 0).all()
        crit = ex["critical"]
        assert len(crit) == min(a["heatmaps"]["n_critical"], len(d))
        assert crit[0]["dbar"] == pytest.approx(d.max()) and crit[0]["position"] == int(d.argmax())
        assert np.allclose(ex["dhat"], np.log(ex["p_s"]) - np.log(ex["p_t"]), atol=1e-3)
        html = (res / "figures" / f"fig2_heatmap_{h['examples'].index(ex) + 1}.html").read_text()
        assert html.count("<span") == len(d)


@pytest.mark.slow
def test_markers_table_and_figure(dag_run, acfg):
    from rlrt.analysis.markers import monroe_z, stop_words

    _, a = acfg
    m = a["markers"]
    res = dag_run / "results"
    assert (res / "figures" / "fig3_markers.png").read_bytes()[:8] == PNG
    assert "| Direction | Category | Tokens (z) |" in (res / "tables" / "table2_markers.md").read_text()
    info = json.loads((res / "analysis" / "markers.json").read_text())
    assert info["n_problems"] == m["n_problems"] and 0 <= info["n_pairs"] <= m["n_problems"]
    scores = pd.read_csv(res / "analysis" / "marker_scores.csv", keep_default_na=False)
    table = pd.read_csv(res / "tables" / "table2_markers.csv", keep_default_na=False)
    assert len(scores) == info["n_scored"] and len(table) == info["n_markers"]
    if len(scores):
        assert (scores["total"] >= m["min_count"]).all()
        _, z = monroe_z(scores["n_explore"].to_numpy(), scores["n_exploit"].to_numpy(), info["n_positions"],
                        info["n_positions"], m["alpha"])
        assert np.allclose(z, scores["z"])
    stop = stop_words(m["domain_stopwords"])
    for row in table.itertuples():
        assert abs(row.z) >= m["z_threshold"] and row.token not in stop and row.total >= m["min_count"]
        assert row.direction == ("explore" if row.z > 0 else "exploit")


@pytest.mark.slow
def test_reflection_across_checkpoints(dag_run, acfg):
    cfg, a = acfg
    r = a["reflection"]
    res = dag_run / "results"
    assert (res / "figures" / "fig6_reflection.png").read_bytes()[:8] == PNG
    info = json.loads((res / "analysis" / "reflection.json").read_text())
    steps = sorted(k for k in cfg["rl"]["save_steps"] if k < cfg["rl"]["steps"]) + [cfg["rl"]["steps"]]
    expected = [("base", 0)] + [(run, k) for run in r["runs"] for k in steps]
    assert [(c["run"], c["step"]) for c in info["checkpoints"]] == expected
    rec = pd.read_csv(res / "analysis" / "reflection_records.csv", keep_default_na=False)
    assert len(rec) == 3 * sum(c["n_targets"] for c in info["checkpoints"])
    assert set(rec["position"]) <= {"max_kl", "random", "min_kl"}
    assert ((rec["t"] >= 0) & (rec["t"] < rec["length"])).all()
    assert rec["before"].isin([0, 1]).all() and rec["after"].isin([0, 1]).all()
    assert rec["text"].str.contains(r["text"].strip(), regex=False).all()
    hard = rec[rec["bin"] == "hard"]
    assert (hard["before"] == 0).all() and (rec[rec["bin"] == "easy"]["before"] == 1).all()
    flips = pd.read_csv(res / "analysis" / "reflection_flips.csv")
    for f in flips.itertuples():
        sub = rec[(rec["bin"] == f.bin) & (rec["position"] == f.position)
                  & (rec["step"] == f.step) & (rec["run"].isin([f.run] if f.step else ["base"]))]
        assert f.n == len(sub)
        want = sub["after"].mean() if f.bin == "hard" else 1 - sub["after"].mean()
        assert f.rate == pytest.approx(want)


@pytest.mark.slow
def test_distribution_shift(dag_run, acfg):
    _, a = acfg
    s = a["shift"]
    res = dag_run / "results"
    assert (res / "figures" / "fig7_shift.png").read_bytes()[:8] == PNG
    info = json.loads((res / "analysis" / "shift.json").read_text())
    assert set(info["results"]) == set(s["runs"]) and 0 < info["n_hard_prompts"] <= s["n_prompts"]
    for r in info["results"].values():
        cc = np.array(r["ccdf"])
        assert r["n_positions"] > 0 and ((cc >= 0) & (cc <= 1)).all() and (np.diff(cc) <= 1e-12).all()
        assert 0 <= r["n_high"] <= r["n_positions"] and 0 <= r["js_mean"] <= np.log(2)
        assert len(r["overlap"]) == s["max_k"] and len(r["tail"]) == len(s["tail_thresholds"])


@pytest.mark.slow
def test_analyses_in_mlflow(dag_run):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{dag_run}/results/mlflow/mlflow.db")
    exp = client.get_experiment_by_name("rlrt-ci")
    runs = client.search_runs([exp.experiment_id], "tags.stage = 'analysis'", max_results=100)
    assert sorted(r.data.tags["analysis"] for r in runs) == ["heatmaps", "markers", "reflection", "shift"]
