"""``bench/bench_cuts.py``: the claims under cuts of work (half the samples, half the problems, two seeds), on
evaluation files the test writes with a known answer."""

from __future__ import annotations


import numpy as np
import pytest

from conftest import ROOT, bench_script


@pytest.fixture(scope="module")
def cuts():
    return bench_script("bench_cuts")


def _eval(counts, n=16):
    return {"n": n, "splits": {"test": {"correct_counts": list(counts)}, "hard": {"correct_counts": list(counts)}}}


def test_half_the_samples_is_a_draw_without_replacement(cuts):
    res = _eval([0, 3, 8, 16, 15])
    rng = np.random.default_rng(0)
    draws = np.array([cuts.halve_samples(res, rng)["splits"]["test"]["correct_counts"] for _ in range(4000)])
    assert cuts.halve_samples(res, rng)["n"] == 8
    c = np.array([0, 3, 8, 16, 15])
    assert (draws >= np.maximum(0, c - 8)).all() and (draws <= np.minimum(c, 8)).all()
    assert draws[:, 0].max() == 0 and draws[:, 3].min() == 8 and draws[:, 4].min() == 7  # forced by the counts
    np.testing.assert_allclose(draws.mean(0), c / 2, atol=0.06)  # E = c * 8 / 16
    # hypergeometric variance: 8 * p (1 - p) * (16 - 8) / 15 at p = 8 / 16
    assert draws[:, 2].var() == pytest.approx(8 * 0.25 * 8 / 15, rel=0.1)
    assert cuts.halve_problems(res)["splits"]["test"]["correct_counts"] == [0, 3]
    with pytest.raises(ValueError, match="no half"):
        cuts.halve_samples({"n": 1, "splits": {}}, rng)


def test_cut_rows_score_each_cut_as_the_claims_stage_does(cuts, tmp_path):
    rng = np.random.default_rng(1)
    P = 256
    files = {}
    for arm, p_correct in (("a", 0.6), ("b", 0.4)):
        for s in range(3):
            f = f"{arm}{s}"
            files[f] = _eval(rng.binomial(16, p_correct + 0.01 * s, size=P))
    plan = [{"claim": "1", "where": "S-base", "metric": "avg@n", "direction": 1, "a": {"run": "rlrt"},
             "b": {"run": "grpo"}, "files_a": ["a0", "a1", "a2"], "files_b": ["b0", "b1", "b2"]},
            {"claim": "6", "metric": "pass@k", "files_a": [], "files_b": []},       # left out
            {"claim": "9", "metric": "flip_rate", "study": "x.csv"},                 # left out
            {"claim": "5", "metric": "avg@n", "missing": "not run at this scale"}]   # left out
    rows = cuts.cut_rows(plan, draws=5, load=files.__getitem__)
    assert len(rows) == 1
    r = rows[0]
    assert r["full"]["verdict"] == "reproduced" and r["full"]["diff"] == pytest.approx(20, abs=2)
    assert r["full"]["seeds"] == 3 and r["full"]["problems"] == 2 * P
    assert r["samples_half"]["n"] == 8 and r["samples_half"]["same_verdict"] == 1.0
    assert r["problems_half"]["problems"] == P and r["fewer_seeds"]["seeds"] == 2
    # same config, same numbers
    assert cuts.cut_rows(plan, draws=5, load=files.__getitem__) == rows


def test_savings_from_the_benchmark_files(cuts, tmp_path):
    b = tmp_path / "benchmarks"
    for rel, s in (("evaluate/S-base/grpo.tsv", 40), ("evaluate/S-base/grpo+seed=2.tsv", 50),
                   ("evaluate_passk/S-base/grpo.tsv", 70), ("rl/S-base/grpo+seed=2.tsv", 300),
                   ("rlt/eval/S-base/base/arithmetic.tsv", 20), ("rlt/students/S-base/x.tsv", 90),
                   ("rl/S-base/grpo+seed=21.tsv", 1000)):
        (b / rel).parent.mkdir(parents=True, exist_ok=True)
        (b / rel).write_text(f"s\th:m:s\tmax_rss\n{s}\t0:00:00\t1\n")
    assert cuts.savings(b, 3) == {"job_seconds": 1570.0, "eval_job_seconds": 110.0, "seeds": 3,
                                  "last_seed_job_seconds": 350.0}
    assert cuts.savings(b, 2)["last_seed_job_seconds"] == 0.0  # one seed fewer leaves no seed-level interval


def test_cuts_on_the_ci_run_reproduce_the_claims_table_unchanged(cuts, dag_run):
    """On the ci DAG's finished tree (2 seeds): the 'full' score of every avg@n row is the claims stage's own row
    (same difference, verdict), and both cuts that keep a seed-level interval are scored."""
    import pandas as pd

    from rlrt.claims import claims_plan
    from rlrt.config import load_overlay

    cfg = load_overlay(ROOT / "config" / "ci.yaml")
    results = dag_run / "results"
    rows = cuts.cut_rows(claims_plan(cfg, str(results)), draws=2)
    table = pd.read_csv(results / "tables" / "claims.csv", dtype={"claim": str})
    assert len(rows) >= 5
    for r in rows:
        mine = table[(table["claim"] == str(r["claim"])) & (table["where"] == r["where"]) & (table["a"] == r["a"])
                     & (table["b"] == r["b"])]
        assert len(mine) == 1, r
        assert r["full"]["diff"] == pytest.approx(mine["value"].iloc[0], abs=1e-3)
        assert r["full"]["verdict"] == mine["verdict"].iloc[0]
        assert {"samples_half", "problems_half"} <= set(r) and "fewer_seeds" not in r
    sav = cuts.savings(results / "benchmarks", 2)
    assert 0 < sav["eval_job_seconds"] < sav["job_seconds"]
