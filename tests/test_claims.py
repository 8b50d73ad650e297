"""The claims' statistics on made-up numbers: a clear win, a clear loss, an interval around zero, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from rlrt.analysis.claims import (INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, bootstrap_pearson, paired_bootstrap,
                                  verdict)


def arms(delta: float, noise: float, S: int = 3, P: int = 64, seed: int = 0):
    """Two (S, P) score matrices in [0, 1]: b random per problem, a = b + delta + independent noise."""
    rng = np.random.default_rng(seed)
    b = rng.uniform(0.1, 0.6, size=(S, P))
    a = np.clip(b + delta + rng.normal(0, noise, size=(S, P)), 0, 1)
    return a, b


def test_a_clear_win_is_reproduced():
    a, b = arms(0.15, 0.05)
    c = paired_bootstrap(a, b)
    assert c.lo > 0.1 and c.hi < 0.2 and c.lo < c.diff < c.hi
    assert verdict(c.lo, c.hi) == REPRODUCED
    assert verdict(c.lo, c.hi, direction=-1) == NOT_REPRODUCED  # "a is worse" is refuted by the same interval


def test_a_clear_loss_is_not_reproduced():
    a, b = arms(-0.15, 0.05)
    c = paired_bootstrap(a, b)
    assert c.hi < 0
    assert verdict(c.lo, c.hi) == NOT_REPRODUCED
    assert verdict(c.lo, c.hi, direction=-1) == REPRODUCED


def test_noise_around_zero_is_inconclusive():
    a, b = arms(0.0, 0.3, seed=1)
    c = paired_bootstrap(a, b)
    assert c.lo < 0 < c.hi
    assert verdict(c.lo, c.hi) == INCONCLUSIVE and verdict(c.lo, c.hi, -1) == INCONCLUSIVE


def test_the_point_estimate_and_degenerate_interval_by_hand():
    a = np.array([[1.0, 0.5], [0.0, 0.5]])
    b = np.array([[0.5, 0.5], [0.5, 0.0]])
    c = paired_bootstrap(a, b)
    assert c.diff == pytest.approx((0.5 + 0.0 - 0.5 + 0.5) / 4) and (c.n_seeds, c.n_problems) == (2, 2)
    one = paired_bootstrap(np.array([[0.7]]), np.array([[0.2]]))
    assert (one.diff, one.lo, one.hi) == pytest.approx((0.5, 0.5, 0.5))  # nothing to resample


def test_the_standard_error_is_the_spread_of_the_bootstrap_by_hand():
    # one seed, P problems with a difference of +-0.5 in equal numbers: the mean's standard error over problems is
    # sd / sqrt(P) = 0.5 / sqrt(P) (the bootstrap's plug-in standard deviation, ddof 0, is 0.5 exactly)
    P = 400
    d = np.tile([0.5, -0.5], P // 2)[None]
    c = paired_bootstrap(d + 0.5, np.full_like(d, 0.5), n_boot=4000)
    assert c.diff == pytest.approx(0.0) and c.se == pytest.approx(0.5 / np.sqrt(P), rel=0.05)
    # seeds add their own spread: two seeds whose mean differences are 0 and 0.2 and no problem variance
    two = np.array([[0.0] * 50, [0.2] * 50])
    c2 = paired_bootstrap(two + 0.3, np.full_like(two, 0.3), n_boot=4000)
    # resampling 2 seeds: the mean is 0, 0.1 or 0.2 with probability 1/4, 1/2, 1/4 -> sd 0.1 / sqrt(2)
    assert c2.se == pytest.approx(0.1 / np.sqrt(2), rel=0.05)


def test_more_seeds_and_problems_narrow_the_interval():
    small = paired_bootstrap(*arms(0.05, 0.2, S=3, P=32, seed=2))
    large = paired_bootstrap(*arms(0.05, 0.2, S=6, P=256, seed=2))
    assert (large.hi - large.lo) < 0.6 * (small.hi - small.lo)


def test_the_bootstrap_is_deterministic_and_refuses_bad_input():
    a, b = arms(0.05, 0.1)
    assert paired_bootstrap(a, b) == paired_bootstrap(a, b)
    with pytest.raises(ValueError, match="one shape"):
        paired_bootstrap(a, b[:, :-1])
    bad = a.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap(bad, b)
    with pytest.raises(ValueError, match="direction"):
        verdict(0.1, 0.2, direction=0)


def test_pearson_over_ranks():
    rng = np.random.default_rng(0)
    ranks = np.arange(4)
    rising = np.clip(0.2 + 0.1 * ranks[:, None] + rng.normal(0, 0.05, size=(4, 200)), 0, 1)
    c = bootstrap_pearson(ranks, rising)
    assert c.diff > 0.9 and c.lo > 0.5 and verdict(c.lo, c.hi) == REPRODUCED
    flat = rng.uniform(0, 1, size=(4, 50))
    f = bootstrap_pearson(ranks, flat)
    assert f.lo < 0 < f.hi and verdict(f.lo, f.hi) == INCONCLUSIVE
    same = np.full((4, 10), 0.5)  # r undefined: no interval, inconclusive
    s = bootstrap_pearson(ranks, same)
    assert np.isnan(s.diff) and verdict(s.lo, s.hi) == INCONCLUSIVE


def test_pearson_resamples_seeds_too():
    rng = np.random.default_rng(1)
    ranks = np.arange(1, 5)
    # three seeds, four ranks, 100 problems: accuracy rises with the rank in every seed
    y = np.clip(0.2 + 0.08 * ranks[None, :, None] + rng.normal(0, 0.05, size=(3, 4, 100)), 0, 1)
    c = bootstrap_pearson(ranks, y, n_boot=500)
    assert c.n_seeds == 3 and c.n_problems == 100 and c.lo > 0.5 and verdict(c.lo, c.hi) == REPRODUCED
    # one seed says the opposite of the other two: the seed resampling widens the interval across 0
    y[0] = y[0, ::-1]
    y[1] = y[1, ::-1]
    w = bootstrap_pearson(ranks, y, n_boot=500)
    assert w.lo < 0 < w.hi
    with pytest.raises(ValueError, match="ranks"):
        bootstrap_pearson(ranks, y[:, :2])


# ---- the seeds grammar and the claims plan (rlrt.config, rlrt.claims) ----

def test_seed_grammar_and_derived_seeds():
    from rlrt.plan import derive_seed, parse_run_id, seeded, split_seed

    assert seeded("grpo", 0) == "grpo" and seeded("rlrt@eps_w=0.2", 2) == "rlrt@eps_w=0.2+seed=2"
    assert split_seed("rlrt@eps_w=0.2+seed=2") == ("rlrt@eps_w=0.2", 2) and split_seed("grpo") == ("grpo", 0)
    assert parse_run_id("rlrt@eps_w=0.2+seed=2") == ("rlrt", {"eps_w": 0.2})
    assert parse_run_id("sdpo+seed=1") == ("sdpo", {})
    with pytest.raises(ValueError, match="seed index"):
        split_seed("grpo+seed=x")
    # seed 0 is the root itself (the plain runs keep their numbers); others are a function of (root, k) only
    assert derive_seed(7, 0) == 7
    seeds = [derive_seed(0, k) for k in range(1, 6)]
    assert len(set(seeds)) == 5 and all(0 <= s < 2**31 for s in seeds)
    assert seeds[:3] == [derive_seed(0, k) for k in range(1, 4)]  # adding seed 4, 5 changes none of 1..3
    assert derive_seed(1, 1) != derive_seed(0, 1)


def _cfg(**claims):
    from rlrt.config import BASE_CONFIG, load

    cfg = load(BASE_CONFIG)
    if claims:
        cfg["claims"] = {**cfg["claims"], **claims}
    return cfg


def test_claims_plan_of_the_default_config():
    from rlrt.claims import claim_rlt_models, claim_rows, claim_runs

    cfg = _cfg()
    rows = claim_rows(cfg)
    assert sorted({r.claim for r in rows}) == list(range(0, 16)) and not [r for r in rows if r.missing]
    by = {(r.claim, r.where): r for r in rows}
    # 0, the learning check: GRPO vs the untrained backbone on each claims backbone, pooled then one row per split
    learn = [r for r in rows if r.claim == 0]
    assert [(r.where, r.a.run, r.b.run, r.split) for r in learn] == [
        (w, "grpo", "base", s) for b in ("S-base", "M-base", "S-instruct", "M-thinking")
        for w, s in ((f"{b}, test + test_hard", None), (f"{b}, test", "test"), (f"{b}, test_hard", "test_hard"))]
    assert (by[1, "S-base"].a.run, by[1, "S-base"].b.run, by[1, "S-base"].direction) == ("rlrt", "grpo", 1)
    assert (by[2, "M-base"].a.run, by[2, "M-base"].b.run) == ("rlrt", "rlsd")
    g = by[3, "S-instruct"]
    assert (g.a.run, g.b.run, g.direction) == ("rlrt_all", "rlrt", -1)  # RLRT-all loses to gated RLRT
    eps = [r for r in rows if r.claim == 4]
    # base models: eps_w 1.0 is the configured value (the plain run) vs the sweep's smallest, 0.2
    assert {(r.a.run, r.b.run) for r in eps} == {("rlrt", "rlrt@eps_w=0.2")}
    collapse = [r for r in rows if r.claim == 5]
    assert {(r.a.run, r.b.run, r.direction) for r in collapse} == {("sdpo", "base", -1), ("srpo", "base", -1)}
    # claim 6 at k = 1, 16, 256 (Fig 8's n is 256), against each of the three
    assert {(r.a.kind, r.b.run, r.k) for r in rows if r.claim == 6} == {
        ("passk", m, k) for m in ("grpo", "grpo_eb", "diver") for k in (1, 16, 256)}
    # claims 1, 2 (and 4, 5) stay on the base models; 13 takes the post-trained ones
    assert {r.a.backbone for r in rows if r.claim in (1, 2, 4, 5)} == {"S-base", "M-base"}
    assert {(r.a.backbone, r.b.run) for r in rows if r.claim == 13} == {
        (b, m) for b in ("S-instruct", "M-thinking") for m in ("grpo", "rlsd")}
    assert [a.run for a in by[8, "S-base (4 ranks)"].arms] == ["sft-rank1", "sft-rank2", "sft-rank3", "sft-rank4"]
    runs = claim_runs(cfg)
    assert "grpo+seed=1" in runs["S-base"] and "grpo+seed=2" in runs["S-base"]
    assert "grpo+seed=3" not in runs["S-base"] and not [r for r in runs["S-base"] if r.startswith("base")]
    assert "rlrt_all+seed=2" in runs["S-instruct"] and "diver+seed=1" in runs["M-base"]
    assert "sft-rank4+seed=2" in claim_rlt_models(cfg)["S-base"]
    # one seed: the plain runs only
    assert claim_runs(_cfg(seeds=1)) == {} and claim_rlt_models(_cfg(seeds=1)) == {}


def test_a_claim_the_config_does_not_plan_is_a_row_that_says_so():
    from rlrt.claims import claim_rows

    cfg = _cfg()
    del cfg["experiments"]["fig8"]
    cfg["rlt"] = None
    rows = {r.claim: r for r in claim_rows(cfg) if r.missing}
    assert set(rows) == {6, 7, 8, 14, 15} and "fig8" in rows[6].missing and "rlt" in rows[7].missing


def test_claims_backbones_must_be_rl_backbones():
    from rlrt.config import ConfigError, validate

    cfg = _cfg(backbones=["S-base", "nope"])
    with pytest.raises(ConfigError, match=r"claims\.backbones"):
        validate(cfg)
    cfg = _cfg(seeds=0)
    with pytest.raises(ConfigError, match=r"claims\.seeds"):
        validate(cfg)


# ---- the stage on written evaluation files: a clear win, a clear loss, an interval around zero ----

def _write_eval(path, counts_by_split, n=16):
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"n": n, "splits": {s: {"metrics": {f"avg@{n}": 0.0, f"pass@{n}": 0.0},
                                                       "correct_counts": [int(x) for x in c]}
                                                   for s, c in counts_by_split.items()}}))
    return str(path)


def test_the_stage_gives_each_verdict_and_writes_table_and_figure(tmp_path):
    from rlrt.stages import claims as stage

    rng = np.random.default_rng(0)
    S, P, n = 3, 40, 16
    base = rng.integers(2, 8, size=P)

    def arm(name, shift):
        files = []
        for k in range(S):
            c = np.clip(base + shift + rng.integers(-1, 2, size=P), 0, n)
            files.append(_write_eval(tmp_path / f"{name}_{k}.json", {"test": c[: P // 2], "test_hard": c[P // 2:]}))
        return files

    good, bad, same = arm("good", 4), arm("bad", -4), arm("same", 0)
    ref = arm("ref", 0)
    rows = [
        {"claim": 1, "text": "win", "source": "-", "where": "x", "metric": "avg@n", "direction": 1,
         "a": {"run": "good"}, "b": {"run": "ref"}, "files_a": good, "files_b": ref},
        {"claim": 2, "text": "loss", "source": "-", "where": "x", "metric": "avg@n", "direction": 1,
         "a": {"run": "bad"}, "b": {"run": "ref"}, "files_a": bad, "files_b": ref},
        {"claim": 3, "text": "zero", "source": "-", "where": "x", "metric": "avg@n", "direction": 1,
         "a": {"run": "same"}, "b": {"run": "ref"}, "files_a": same, "files_b": ref},
        {"claim": 4, "text": "a loses, as claimed", "source": "-", "where": "x", "metric": "pass@k",
         "direction": -1, "a": {"run": "bad"}, "b": {"run": "good"}, "files_a": bad, "files_b": good},
        {"claim": 8, "text": "rank", "source": "-", "where": "x", "metric": "pearson_r",
         "files_arms": [bad, ref, good]},
        {"claim": 6, "text": "absent", "source": "-", "where": "-", "metric": "pass@k", "missing": "no fig8"},
        {"claim": 0, "text": "learns on test_hard", "source": "-", "where": "x, test_hard", "metric": "avg@n",
         "direction": 1, "a": {"run": "good"}, "b": {"run": "ref"}, "files_a": good, "files_b": ref,
         "split": "test_hard"},
    ]
    df = stage.claims_frame(rows, n_boot=500, seed=0)
    v = dict(zip(df["claim"], df["verdict"]))
    assert v == {1: stage.REPRODUCED, 2: stage.NOT_REPRODUCED, 3: stage.INCONCLUSIVE, 4: stage.REPRODUCED,
                 8: stage.REPRODUCED, 6: stage.NOT_TESTED, 0: stage.REPRODUCED}
    # the split row scores test_hard's problems only: by hand, the mean per-problem difference over them
    import json as _json

    hard = lambda files: np.mean([_json.load(open(f))["splits"]["test_hard"]["correct_counts"]  # noqa: E731
                                  for f in files]) / n
    learn = df[df.claim == 0].iloc[0]
    assert learn["problems"] == P // 2 and learn["value"] == pytest.approx(100 * (hard(good) - hard(ref)))
    assert 0 < learn["se"] < learn["value"] and learn["value"] / learn["se"] > 3
    win = df[df.claim == 1].iloc[0]
    # hand check of the point estimate: 4 correct of 16 more per problem = +25 points (noise averages out)
    assert abs(win["value"] - 25.0) < 3 and win["lo"] < win["value"] < win["hi"] and win["seeds"] == S
    assert win["problems"] == P and win["std_a"] > 0
    # pass@16 from 16 samples is 1 for a problem with any correct sample: by hand, the share of unsolved problems
    import json

    solved = lambda files: np.mean([[c > 0 for s in json.load(open(f))["splits"].values()  # noqa: E731
                                     for c in s["correct_counts"]] for f in files])
    row4 = df[df.claim == 4].iloc[0]
    assert row4["metric"] == "pass@16" and abs(row4["value"] - 100 * (solved(bad) - solved(good))) < 1e-9
    out = {k: tmp_path / f"claims.{k}" for k in ("csv", "md", "png")}
    stage.main(["--cfg", __import__("json").dumps({"rows": rows, "seeds": S, "n_boot": 300}),
                "--out-csv", str(out["csv"]), "--out-md", str(out["md"]), "--out-png", str(out["png"])])
    md = out["md"].read_text()
    assert "not reproduced" in md and "inconclusive" in md and "not tested (no fig8)" in md and " SE)" in md
    assert "Rows: 4 reproduced, 1 not reproduced, 1 inconclusive, 1 not tested." in md
    assert out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import pandas as pd

    assert list(pd.read_csv(out["csv"])["verdict"]) == list(df["verdict"])


def test_arms_must_cover_the_same_problems(tmp_path):
    from rlrt.stages import claims as stage

    a = [_write_eval(tmp_path / "a.json", {"test": [1, 2, 3]})]
    b = [_write_eval(tmp_path / "b.json", {"test": [1, 2]})]
    row = {"claim": 1, "text": "t", "source": "-", "where": "x", "metric": "avg@n", "direction": 1,
           "a": {"run": "a"}, "b": {"run": "b"}, "files_a": a, "files_b": b}
    with pytest.raises(ValueError, match="problems"):
        stage.claims_frame([row], n_boot=100, seed=0)
    with pytest.raises(ValueError, match="no split 'test_hard'"):
        stage.claims_frame([{**row, "files_b": a, "split": "test_hard"}], n_boot=100, seed=0)
