"""Issue 36: the claims table's new statistics on made-up data with known answers, its new rows (Fig 6 / Fig 7
studies, post-trained backbones, RLT cold start and countdown, Fig 8 at k = 1, 16, 256), the papers' numbers
file, and the same claims stage planned at paper scale (one seed: "1 seed" in the verdict)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from rlrt.analysis.claims import (INCONCLUSIVE, REPRODUCED, flip_checkpoints, flip_positions, mean_t,
                                  pearson_over_seeds, problem_t, seed_t, seeds_needed, shift_prompts, welch_t)

# ---- the t interval over seeds, the seeds needed, the 1-seed fallback ----


def test_seed_t_is_the_t_interval_of_the_per_seed_means_by_hand():
    # per-seed paired means 0.1, 0.2, 0.3 (each seed's problems differ by the same amount): mean 0.2, sd 0.1
    d = np.array([0.1, 0.2, 0.3])[:, None] * np.ones((3, 50))
    c = seed_t(d + 0.3, np.full_like(d, 0.3))
    h = stats.t.ppf(0.975, 2) * 0.1 / np.sqrt(3)  # 4.303 * 0.0577 = 0.248
    assert (c.diff, c.lo, c.hi) == pytest.approx((0.2, 0.2 - h, 0.2 + h))
    assert c.seed_sd == pytest.approx(0.1) and c.se == pytest.approx(0.1 / np.sqrt(3)) and c.n_seeds == 3
    assert c.method == "t over seeds" and c.lo < 0  # three seeds this spread cannot decide +0.2


def test_one_seed_falls_back_to_a_t_over_problems_labelled_so():
    d = np.tile([0.5, -0.3], 50)[None]  # one seed, 100 problems: mean +0.1, sd 0.402
    c = seed_t(d + 0.5, np.full_like(d, 0.5))
    sd = np.std(np.tile([0.5, -0.3], 50), ddof=1)
    h = stats.t.ppf(0.975, 99) * sd / 10
    assert (c.diff, c.lo, c.hi) == pytest.approx((0.1, 0.1 - h, 0.1 + h)) and c.n_seeds == 1
    assert c.method.startswith("1 seed") and np.isnan(c.seed_sd)
    assert problem_t(np.ones(3), np.zeros(3)).lo == pytest.approx(1.0)  # no spread: a zero-width interval
    with pytest.raises(ValueError, match="no values"):
        mean_t(np.zeros(0))


def test_seeds_needed_by_hand():
    # S with t_{S-1} / sqrt(S) < 1 at diff = sd: S = 6 gives 2.571 / 2.449 = 1.05, S = 7 gives 2.447 / 2.646 = 0.92
    assert seeds_needed(1.0, 1.0) == 7 and seeds_needed(-1.0, 1.0) == 7
    assert seeds_needed(10.0, 1.0) == 2  # 12.7 / 1.41 = 9.0 < 10
    assert np.isnan(seeds_needed(0.0, 1.0)) and np.isnan(seeds_needed(1.0, np.nan))
    assert seeds_needed(1e-4, 1.0) == np.inf


def test_the_change_of_interval_is_reported_where_the_bootstrap_was_too_sure(tmp_path):
    """Per-seed mean gains 6.25, 5 and 0.625 points (every seed above 0): the percentile bootstrap over three
    values calls it reproduced (its smallest resample, the third seed thrice, is > 0), the t over seeds (2 df:
    mean 3.96, sd 2.96, half-width 7.4) inconclusive -- and the table says which verdict changed."""
    from rlrt.stages import claims as stage

    P, n = 40, 16
    ref = np.full(P, 4)
    files = {"a": [], "b": []}
    for k, (n_up, up) in enumerate([(40, 1), (4, 8), (2, 2)]):  # n_up problems gain `up` of 16 samples
        a = ref.copy()
        a[:n_up] += up
        files["a"].append(_write(tmp_path / f"a{k}.json", a, n))
        files["b"].append(_write(tmp_path / f"b{k}.json", ref, n))
    row = {"claim": 1, "text": "t", "source": "-", "where": "x", "metric": "avg@n", "direction": 1,
           "a": {"run": "a"}, "b": {"run": "b"}, "files_a": files["a"], "files_b": files["b"]}
    df = stage.claims_frame([row], n_boot=2000, seed=0)
    r = df.iloc[0]
    assert r["verdict_bootstrap"] == REPRODUCED and r["verdict"] == INCONCLUSIVE
    assert r["seed_sd"] > 0 and r["seeds_needed"] > 3 and r["interval"] == "t over seeds"
    md = stage.to_markdown(df, 3)
    assert "claim 1 x: reproduced -> inconclusive" in md


def _write(path, counts, n=16, split="test"):
    path.write_text(json.dumps({"n": n, "splits": {split: {"metrics": {}, "correct_counts": [int(c) for c in
                                                                                             counts]}}}))
    return str(path)


def test_pearson_over_seeds_fisher_z_by_hand():
    ranks = np.arange(1.0, 5.0)
    # three seeds whose accuracy per rank has r = 0.8, 0.9, 0.6 with rank (constructed, then checked)
    acc = np.array([[0.1, 0.3, 0.2, 0.4], [0.1, 0.2, 0.3, 0.3], [0.2, 0.1, 0.4, 0.3]])
    r = np.array([np.corrcoef(ranks, a)[0, 1] for a in acc])
    y = np.repeat(acc[:, :, None], 5, axis=2)  # (S, R, P): every problem of a student scores its mean
    c = pearson_over_seeds(ranks, y)
    z = np.arctanh(r)
    h = stats.t.ppf(0.975, 2) * z.std(ddof=1) / np.sqrt(3)
    assert (c.diff, c.lo, c.hi) == pytest.approx((np.tanh(z.mean()), np.tanh(z.mean() - h), np.tanh(z.mean() + h)))
    assert c.seed_sd == pytest.approx(r.std(ddof=1)) and c.method == "Fisher z, t over seeds"
    one = pearson_over_seeds(ranks, y[:1] + np.random.default_rng(0).normal(0, 0.01, size=(1, 4, 5)), n_boot=200)
    assert one.method == "1 seed: bootstrap over problems" and one.n_seeds == 1


def test_welch_t_by_hand():
    a, b = np.array([1.0, 0.0, 1.0, 1.0]), np.array([0.0, 0.0, 1.0])
    c = welch_t(a, b)
    va, vb = a.var(ddof=1) / 4, b.var(ddof=1) / 3
    df = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 2)
    h = stats.t.ppf(0.975, df) * np.sqrt(va + vb)
    assert (c.diff, c.lo, c.hi) == pytest.approx((0.75 - 1 / 3, 0.75 - 1 / 3 - h, 0.75 - 1 / 3 + h))


# ---- claims 9, 10: flip rates from the reflection study's records ----

def _records():
    """Made-up reflection records: 4 hard problems x 2 wrong rollouts at step 0 (run base) and at rlrt's step 5.
    Step 0: max_kl flips 6 of 8 rollouts (per problem 1, 1, 0.5, 0.5), random 2 of 8 (0.5, 0, 0.5, 0) -> paired
    mean difference (0.5 + 1 + 0 + 0.5) / 4 = 0.5. rlrt step 5 (other problems): max_kl flips everything (1.0)."""
    rows = []
    flips = {("base", 0, "max_kl"): [1, 1, 1, 1, 1, 0, 0, 1], ("base", 0, "random"): [1, 0, 0, 0, 0, 1, 0, 0],
             ("rlrt", 5, "max_kl"): [1] * 8, ("rlrt", 5, "random"): [0] * 8}
    for (run, step, pos), after in flips.items():
        for i, a in enumerate(after):
            rows.append({"run": run, "step": step, "problem": f"{run}-p{i // 2}", "rollout": i % 2, "bin": "hard",
                         "position": pos, "before": 0, "after": a})
    # an easy-bin row and a right rollout in the hard bin: neither is a flip->R candidate
    rows.append({"run": "base", "step": 0, "problem": "base-p0", "rollout": 9, "bin": "hard", "position": "max_kl",
                 "before": 1, "after": 0})
    rows.append({"run": "base", "step": 0, "problem": "e", "rollout": 0, "bin": "easy", "position": "max_kl",
                 "before": 1, "after": 0})
    return pd.DataFrame(rows)


def test_flip_rate_max_kl_vs_random_by_hand():
    c = flip_positions(_records(), "base", "max_kl", "random")
    d = np.array([1 - 0.5, 1 - 0, 0.5 - 0, 0.5 - 0.5])
    h = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    assert (c.diff, c.lo, c.hi) == pytest.approx((0.5, 0.5 - h, 0.5 + h)) and c.n_problems == 4
    assert c.method == "1 seed: paired t over 4 problems"


def test_flip_rate_last_vs_first_checkpoint_by_hand():
    c, last = flip_checkpoints(_records(), "rlrt", "max_kl")
    assert last == 5
    # last: 1.0 on every problem; first: 1, 1, 0.5, 0.5 -> +0.25, Welch with no spread on one side
    first = np.array([1, 1, 0.5, 0.5])
    h = stats.t.ppf(0.975, 3) * first.std(ddof=1) / 2
    assert (c.diff, c.lo, c.hi) == pytest.approx((0.25, 0.25 - h, 0.25 + h))
    with pytest.raises(ValueError, match="no checkpoint"):
        flip_checkpoints(_records(), "grpo", "max_kl")


# ---- claims 11, 12: the distribution-shift study, per prompt ----

def _shift(per_prompt_rlrt, per_prompt_grpo):
    return {"ks": list(range(1, 21)), "js_threshold": 0.1, "tail_thresholds": [0.1, 0.01, 0.001, 0.0001],
            "results": {"rlrt": {"per_prompt": per_prompt_rlrt}, "grpo": {"per_prompt": per_prompt_grpo}}}


def test_shift_overlap_and_tail_by_hand():
    nan = float("nan")
    rlrt = {"overlap_k": [0.5, 0.4, nan, 0.6], "tail": [[1, 1, 0.5, 0], [1, 1, 0.3, 0], [nan] * 4, [1, 1, 0.4, 0]]}
    grpo = {"overlap_k": [0.8, 0.8, 0.9, 0.7], "tail": [[1, 1, 0.0, 0], [1, 1, 0.1, 0], [1, 1, 0, 0], [1, 1, 0, 0]]}
    c, note = shift_prompts(_shift(rlrt, grpo), "rlrt", "grpo", "overlap")
    d = np.array([-0.3, -0.4, -0.1])  # the prompt where rlrt has no high-divergence position is left out
    h = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert (c.diff, c.lo, c.hi) == pytest.approx((d.mean(), d.mean() - h, d.mean() + h)) and "top-20" in note
    t, note = shift_prompts(_shift(rlrt, grpo), "rlrt", "grpo", "tail", 1e-3)
    assert t.diff == pytest.approx(np.mean([0.5, 0.2, 0.4])) and "< 0.001" in note
    t4, note = shift_prompts(_shift(rlrt, grpo), "rlrt", "grpo", "tail", 2e-4)  # nearest in log: 1e-4
    assert t4.diff == 0 and "< 0.0001" in note
    with pytest.raises(ValueError, match="per-prompt"):
        shift_prompts({"results": {"rlrt": {}, "grpo": {}}}, "rlrt", "grpo", "overlap")


def test_the_shift_stage_writes_per_prompt_statistics():
    from rlrt.stages.analysis_shift import per_prompt_shift

    # two prompts, two rollouts each; prompt 1's positions never exceed the JS threshold
    stats_ = [{"js": np.array([0.5, 0.0]), "overlap": np.array([[1.0, 0.5], [1.0, 1.0]]),
               "top1_base_prob": np.array([1e-4, 0.9])},
              {"js": np.array([0.2]), "overlap": np.array([[0.0, 0.0]]), "top1_base_prob": np.array([0.5])},
              {"js": np.array([0.01]), "overlap": np.array([[1.0, 1.0]]), "top1_base_prob": np.array([0.5])},
              {"js": np.array([0.0]), "overlap": np.array([[1.0, 1.0]]), "top1_base_prob": np.array([0.5])}]
    out = per_prompt_shift(stats_, [0, 0, 1, 1], 2, 0.1, [1e-3, 1.0])
    assert out["n_high"] == [2, 0] and out["overlap_k"][0] == pytest.approx(0.25) and np.isnan(out["overlap_k"][1])
    assert out["tail"][0] == pytest.approx([0.5, 1.0]) and np.isnan(out["tail"][1]).all()


# ---- the papers' numbers ----

def test_paper_numbers_file_shape_and_numbers_by_hand(tmp_path):
    from rlrt.paper_numbers import load, lookup

    data = load()
    # RLRT Table 1, Qwen3-4B-Base, Avg@16 means over the six benchmarks: RLRT 37.40, GRPO 31.70
    v, src = lookup(data, "1/Qwen3-4B-Base/rlrt-grpo")
    assert v == pytest.approx(224.4 / 6 - 190.2 / 6) and "Table 1" in src
    assert lookup(data, "8/RLT/reward-rank")[0] == 0.89
    assert lookup(data, "13/Qwen3-4B-Instruct-2507/rlrt-grpo")[0] == pytest.approx(
        lookup(data, "13/Qwen3-4B-Instruct/rlrt-grpo")[0])  # paper.yaml's name, through the alias
    v, why = lookup(data, "6/Qwen3-8B-Base/rlrt-grpo/k16")
    assert np.isnan(v) and "Fig 8" in why
    for bad, msg in [("numbers: {x: {a: [1, 2], b: [1], source: s}}", "one length"),
                     ("numbers: {x: {value: null}}", "say why"),
                     ("numbers: {x: {value: 3}}", "text and a source"),
                     ("nums: {}", "numbers")]:
        (tmp_path / "p.yaml").write_text(bad)
        with pytest.raises(ValueError, match=msg):
            load(tmp_path / "p.yaml")


@pytest.mark.parametrize("overlay", [None, "config/ci.yaml", "config/paper.yaml"])
def test_every_planned_row_finds_the_papers_entry(overlay):
    from rlrt.claims import claim_rows
    from rlrt.config import BASE_CONFIG, load
    from rlrt.paper_numbers import load as load_numbers
    from rlrt.paper_numbers import lookup

    cfg = load(BASE_CONFIG, overlay) if overlay else load(BASE_CONFIG)
    data = load_numbers()
    for row in claim_rows(cfg):
        if row.paper:
            assert "no entry" not in lookup(data, row.paper)[1], row.paper


# ---- the same claims stage at paper scale (one seed) ----

def test_the_claims_stage_plans_at_paper_scale_with_its_inputs():
    from rlrt.claims import claims_inputs, claims_plan
    from rlrt.config import BASE_CONFIG, load

    cfg = load(BASE_CONFIG, "config/paper.yaml")
    plan = claims_plan(cfg, "results-paper")
    inputs = claims_inputs(plan)
    R = "results-paper"
    for f in [f"{R}/eval/Qwen3-4B-Base/rlrt.json", f"{R}/eval/Qwen3-8B/rlsd.json",
              f"{R}/eval/Qwen3-4B-Instruct-2507/grpo.json", f"{R}/eval_passk/Qwen3-8B-Base/diver.json",
              f"{R}/analysis/reflection_records.csv", f"{R}/analysis/shift.json",
              f"{R}/rlt/eval/Qwen2.5-7B-Instruct/grpo-sft-rlt/arithmetic.json",
              f"{R}/rlt/eval/Qwen2.5-7B-Instruct/sft-countdown/countdown.json",
              f"{R}/rlt/eval/Qwen2.5-7B-Instruct/sft-rank16/arithmetic.json"]:
        assert f in inputs, f
    assert not [f for f in inputs if "+seed=" in f]  # one seed: the plain runs only
    by = {}
    for row in plan:
        by.setdefault(row["claim"], []).append(row)
    assert set(by) == set(range(16))
    assert "not run at this scale" in by[5][0]["missing"]  # SDPO / SRPO are not trained on base models there
    assert {r["k"] for r in by[6]} == {1, 16, 256} and all("aime24 + aime26" in r["where"] for r in by[6])
    assert all(len(r.get("files_a", [0])) == 1 for r in plan)


def test_one_seed_writes_1_seed_in_the_verdict(tmp_path):
    from rlrt.stages import claims as stage

    a = [_write(tmp_path / "a.json", np.full(30, 12))]
    b = [_write(tmp_path / "b.json", np.r_[np.full(15, 4), np.full(15, 6)])]
    row = {"claim": 1, "text": "t", "source": "-", "where": "x", "metric": "avg@n", "direction": 1,
           "a": {"run": "a"}, "b": {"run": "b"}, "files_a": a, "files_b": b, "paper": "1/Qwen3-4B-Base/rlrt-grpo"}
    out = {k: tmp_path / f"claims.{k}" for k in ("csv", "md", "png")}
    from rlrt.paper_numbers import load

    stage.main(["--cfg", json.dumps({"rows": [row], "seeds": 1, "n_boot": 200, "paper": load()}),
                "--out-csv", str(out["csv"]), "--out-md", str(out["md"]), "--out-png", str(out["png"])])
    md = out["md"].read_text()
    assert "reproduced (1 seed)" in md and "# Claims over 1 seed\n" in md and "| +5.7 " in md
    df = pd.read_csv(out["csv"])
    assert df["interval"][0] == "1 seed: t over problems" and df["paper"][0] == pytest.approx(5.7)


def test_seeded_rlt_cold_start_and_countdown_replicates_are_planned(tmp_path):
    """Claims 14, 15 at 2 seeds (ci): grpo-sft-rlt+seed=1 is GRPO from the student sft-rlt+seed=1 with seed 1's
    derived seed; cdgrpo-base+seed=1 starts from the untrained backbone (a dry run, ~10 s)."""
    import os
    import subprocess
    import sys

    from conftest import ROOT
    from rlrt.plan import derive_seed

    targets = ["results/rlt/eval/S-base/grpo-sft-rlt+seed=1/arithmetic.json",
               "results/rlt/eval/S-base/cdgrpo-base+seed=1/countdown.json"]
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "-n", "-p", "--cores", "4", "--configfile", str(ROOT / "config" / "ci.yaml"), "--", *targets]
    env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    rl = [line for line in out.splitlines() if "rlrt.stages.rl " in line and "rlt_rl" in line]
    seed1 = f'"seed": {derive_seed(0, 1)}'
    cold = next(line for line in rl if "--out results/rlt/students/S-base/grpo-sft-rlt+seed=1/model" in line)
    assert "--model results/rlt/students/S-base/sft-rlt+seed=1/model" in cold and seed1 in cold
    cd = next(line for line in rl if "cdgrpo-base+seed=1/model" in line)
    assert "--model results/checkpoints/S-base " in cd and seed1 in cd


def test_a_study_output_that_cannot_answer_is_a_not_tested_row(tmp_path):
    from rlrt.stages import claims as stage

    old = tmp_path / "shift.json"  # an earlier code version's output: no per-prompt statistics
    old.write_text(json.dumps({"ks": [1, 2], "js_threshold": 0.1, "tail_thresholds": [1e-3],
                               "results": {"rlrt": {"overlap": [1.0, 0.5]}, "grpo": {"overlap": [1.0, 0.9]}}}))
    row = {"claim": 11, "text": "t", "source": "-", "where": "x", "metric": "overlap", "direction": -1,
           "study": "analysis/shift.json", "file": str(old),
           "spec": [["a", "rlrt"], ["b", "grpo"], ["stat", "overlap"]]}
    r = stage.claims_frame([row], n_boot=100, seed=0).iloc[0]
    assert r["verdict"] == stage.NOT_TESTED and "per-prompt" in r["note"]
