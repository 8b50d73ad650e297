"""The ci DAG carries numbers, not only plumbing (issue 35 §7): its S-base solves some of its test problems, every
objective's RL on it moves the weights (no group of all-zero rewards throughout), runs of different methods end
with different weights, SDPO's distillation steps happen, and Table 1's cells are the evaluation JSONs they come
from. What must hold whatever the CPU: these are inequalities and an exact recomputation, no measured number.
"""

from __future__ import annotations

import hashlib
import json
import math

import pandas as pd
import pytest

from conftest import ROOT

# The backbones config/ci.yaml pre-trains far enough to solve some problems: S-base (every method of methods.run,
# the RLRT / RLSD sweeps, the claims seeds), S-instruct (its SFT child) and M-base (GRPO+EB and DIVER).
LEARNING = ("S-base", "S-instruct", "M-base")


def ci() -> dict:
    from rlrt.config import load_overlay

    return load_overlay(ROOT / "config" / "ci.yaml")


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weights(dag_run, backbone: str, run: str = "base") -> str:
    r = dag_run / "results"
    folder = r / "checkpoints" / backbone if run == "base" else r / "runs" / backbone / run / "model"
    return digest(folder / "model.safetensors")


def history(dag_run, backbone: str, run: str) -> list[dict]:
    return json.loads((dag_run / "results" / "runs" / backbone / run / "metrics.json").read_text())["history"]


def evaluation(dag_run, backbone: str, run: str) -> dict:
    return json.loads((dag_run / "results" / "eval" / backbone / f"{run}.json").read_text())


@pytest.mark.slow
def test_the_learning_backbones_solve_some_test_problems(dag_run):
    """Base accuracy > 0: some sampled answer of S-base (and of the other learning backbones) is correct, so every
    Table 1 row starts from a number that a sign error or a lost step can change."""
    cfg = ci()
    n = cfg["eval"]["n"]
    for b in LEARNING:
        e = evaluation(dag_run, b, "base")
        correct = sum(sum(e["splits"][s]["correct_counts"]) for s in cfg["data"]["test_splits"])
        assert correct > 0, (b, {s: e["splits"][s]["metrics"] for s in e["splits"]})
        assert max(e["splits"][s]["metrics"][f"avg@{n}"] for s in cfg["data"]["test_splits"]) > 0


@pytest.mark.slow
def test_every_objective_moves_the_weights_and_methods_end_apart(dag_run):
    """Every RL run on S-base and S-instruct (and every objective of the DAG on some learning backbone) has a step
    with a non-zero gradient (a group with mixed rewards; SDPO's a correct sibling to distil from) and ends with
    weights that differ from its backbone's; the plain runs of different methods on a learning backbone end with
    different weights (before: grpo, rlrt, rlsd and their sweeps ended byte-identical, grad_norm 0.0 everywhere,
    and SDPO byte-equal to the untrained checkpoint). DIVER's BLEU sweep point is not compared: its bonus needs an
    all-correct group in its first steps, which a base model that solves a fifth of its problems rarely has."""
    from rlrt.claims import planned_runs
    from rlrt.plan import parse_run_id, split_seed

    planned = planned_runs(ci())
    moved = set()
    for b in LEARNING:
        base = weights(dag_run, b)
        plain: dict[str, str] = {}
        for r in planned[b]:
            h = history(dag_run, b, r)
            w = weights(dag_run, b, r)
            learned = max(row["grad_norm"] for row in h) > 0 and w != base
            if b in ("S-base", "S-instruct"):
                assert learned, (b, r, [row["grad_norm"] for row in h], [row["reward_mean"] for row in h])
            if learned:
                moved.add(parse_run_id(r)[0])
            if split_seed(r)[1] == 0 and "@" not in r:
                plain[r] = w
        same = [(x, y) for x in plain for y in plain if x < y and plain[x] == plain[y]]
        assert not same, f"{b}: runs of different methods end with the same weights: {same}"
    assert moved == {parse_run_id(r)[0] for rs in planned.values() for r in rs}, "an objective never moved weights"


@pytest.mark.slow
def test_sdpo_distils_and_moves_the_weights(dag_run):
    """SDPO learns only from its distillation term, which needs a correct sibling (the teacher's context): on
    S-base some rollout rows get a context and are distilled, the distillation loss and the gradient are non-zero
    and the weights leave the backbone's (before: no correct rollout, no context, no optimizer step at all)."""
    h = history(dag_run, "S-base", "sdpo")
    assert max(row["distill_frac"] for row in h) > 0, h
    assert max(abs(row["distill_loss"]) for row in h) > 0 and max(row["grad_norm"] for row in h) > 0
    assert weights(dag_run, "S-base", "sdpo") != weights(dag_run, "S-base")


@pytest.mark.slow
def test_table1_cells_equal_the_evaluation_jsons(dag_run):
    """Every Table 1 cell recomputed from results/eval/<backbone>/<run>.json: the mean over the method's seeds of
    avg@n / pass@n per test split, its sample std, the Δ row from the means; and the table is not all zeros (a
    swapped column or a stale number would show)."""
    from rlrt.claims import planned_runs
    from rlrt.plan import split_seed, table1_methods

    cfg = ci()
    n, splits = cfg["eval"]["n"], cfg["data"]["test_splits"]
    planned = planned_runs(cfg)
    df = pd.read_csv(dag_run / "results" / "tables" / "table1.csv").set_index(["backbone", "method"])
    cols = [(s, m) for s in splits for m in ("avg", "pass")]
    checked = 0
    for b in cfg["rl_backbones"]:
        means = {}
        for m in ["base", *table1_methods(cfg, b)]:
            runs = ["base"] if m == "base" else [r for r in planned[b] if split_seed(r)[0] == m]
            per_seed = pd.DataFrame([[evaluation(dag_run, b, r)["splits"][s]["metrics"][f"{k}@{n}"] for s, k in cols]
                                     for r in runs])
            means[m] = per_seed.mean().tolist()
            row = df.loc[(b, m)]
            for i, (s, k) in enumerate(cols):
                col = f"{s}/{k.capitalize()}@{n}"
                assert row[col] == pytest.approx(means[m][i], abs=1e-4), (b, m, col)
                if len(runs) > 1:
                    assert row[f"{col} std"] == pytest.approx(per_seed[i].std(ddof=1), abs=1e-4), (b, m, col)
                elif f"{col} std" in row:
                    assert math.isnan(row[f"{col} std"]), (b, m, col)
                checked += 1
        others = [v for m, v in means.items() if m not in ("base", "rlrt")]
        if "rlrt" in means and others:
            for i, (s, k) in enumerate(cols):
                want = means["rlrt"][i] - max(o[i] for o in others)
                assert df.loc[(b, "delta")][f"{s}/{k.capitalize()}@{n}"] == pytest.approx(want, abs=2e-4)
    assert checked == sum(len(cols) * (1 + len(table1_methods(cfg, b))) for b in cfg["rl_backbones"])
    s_base = df.loc[("S-base", "base")][[f"{s}/Avg@{n}" for s in splits]].astype(float)
    assert (s_base > 0).any(), s_base
