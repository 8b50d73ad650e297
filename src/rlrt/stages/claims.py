"""Stage: the claims table -- each headline claim of both papers over seeds, with a verdict.

Reads the evaluation of every seed of every arm that ``rlrt.claims.claim_rows`` plans (the rule hands the rows
and their files in ``--cfg``), turns each into per-problem scores (the test splits' problems one after another),
and per row computes what :mod:`rlrt.analysis.claims` defines: the paired difference a - b over seeds x problems
with a 95 % t interval over the per-seed means (over problems with one seed), the seed-level sd, the seeds a
decision would take, and a verdict; for the reward-rank row, Pearson r of (rank, accuracy) per seed, Fisher z, t
over seeds; for claims 9-12 the reflection-injection and distribution-shift studies' outputs (flip rates per
problem, overlap / tail promotions per prompt). Beside each row the paper's own number (``paper`` in --cfg:
the cited numbers, as :func:`rlrt.paper_numbers.load` reads them). Writes ``claims.csv`` (every number, and the
verdict the earlier percentile bootstrap gave), ``claims.md`` (the table people read, verdicts spelled out,
which verdicts the change of interval moved, the paper numbers' sources) and ``claims.png`` (intervals against 0, coloured by verdict, the paper's number as ◇).

Scores are fractions in [0, 1]; the table and figure show them in percentage points.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
from tabulate import tabulate

from rlrt.analysis.claims import (INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Comparison, bootstrap_pearson,
                                  flip_checkpoints, flip_positions, paired_bootstrap, pearson_over_seeds, seed_t,
                                  seeds_needed, shift_prompts, verdict)
from rlrt.io import atomic_path, read_json
from rlrt.metrics import pass_at_k
from rlrt.paper_numbers import lookup
from rlrt.stages.common import parse, parser

log = logging.getLogger("rlrt.claims")

NOT_TESTED = "not tested"


def largest_k(result: dict) -> int:
    """The largest k an evaluation JSON reports pass@k for (Fig 8's n: pass@256)."""
    return max(int(key.split("@")[1]) for d in result["splits"].values() for key in d["metrics"]
               if key.startswith("pass@"))


def problem_scores(result: dict, metric: str, split: str | list[str] | tuple[str, ...] | None = None,
                   k: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Per-problem scores of one evaluation JSON, the splits' problems one after another (only ``split``'s when
    given: one split name, or several, taken in that order), and the split order.

    ``avg@n``: correct / n per problem; ``pass@k``: the unbiased pass@k at ``k`` (default: the largest k the file
    reports; a k above n is refused)."""
    n = int(result["n"])
    wanted = None if split is None else [split] if isinstance(split, str) else list(split)
    for name in wanted or []:
        if name not in result["splits"]:
            raise ValueError(f"no split {name!r} in the evaluation (it has {sorted(result['splits'])})")
    chosen = result["splits"] if wanted is None else {name: result["splits"][name] for name in wanted}
    out, splits = [], []
    for split_name, d in chosen.items():
        c = np.asarray(d["correct_counts"], dtype=float)
        if metric == "avg@n":
            out.append(c / n)
        elif metric == "pass@k":
            kk = largest_k(result) if k is None else int(k)
            if kk > n:
                raise ValueError(f"pass@{kk} needs at least {kk} samples per problem; the evaluation has {n}")
            out.append(np.array([pass_at_k(n, int(ci), kk) for ci in c]))
        else:
            raise ValueError(f"unknown metric {metric!r}")
        splits.append(split_name)
    return np.concatenate(out), splits


def arm_matrix(files: list[str], metric: str, split: str | list[str] | tuple[str, ...] | None = None,
               k: int | None = None) -> np.ndarray:
    """(S, P) scores of one arm: one row per seed's evaluation file (checked to cover the same splits and
    problem counts)."""
    rows, layout = [], None
    for f in files:
        result = read_json(f)
        scores, splits = problem_scores(result, metric, split, k)
        shape = (splits, len(scores))
        if layout is not None and shape != layout:
            raise ValueError(f"{f}: splits / problem count {shape} differ from the arm's other seeds {layout}")
        layout = shape
        rows.append(scores)
    return np.stack(rows)


def _interval_cols(c: Comparison, direction: int, scale: float) -> dict:
    """The interval columns of a row: value, bounds and se in the table's units (``scale``: 100 for points), the
    seed-level sd, the seeds a decision would take, how the interval was made and the verdict."""
    return {"seeds": c.n_seeds, "problems": c.n_problems, "value": scale * c.diff, "lo": scale * c.lo,
            "hi": scale * c.hi, "se": scale * c.se, "seed_sd": scale * c.seed_sd,
            "seeds_needed": seeds_needed(c.diff, c.seed_sd), "interval": c.method,
            "verdict": verdict(c.lo, c.hi, direction) if np.isfinite(c.lo) else INCONCLUSIVE}


def _study_row(row: dict, out: dict) -> dict:
    """Claims 9-12: the reflection-injection (Fig 6) and distribution-shift (Fig 7) studies' outputs. A study
    output that cannot answer (no wrong rollout in a bin, a shift output of an earlier code version without
    per-prompt statistics) makes the row "not tested" with the reason."""
    try:
        return _study_compare(row, out)
    except ValueError as e:
        return {**out, "verdict": NOT_TESTED, "note": str(e)}


def _study_compare(row: dict, out: dict) -> dict:
    spec, f = dict(row["spec"]), row["file"]
    if row["metric"] == "flip_rate":
        rec = pd.read_csv(f)
        if spec["compare"] == "position":
            c = flip_positions(rec, spec["run"], spec["a"], spec["b"])
            a, b = spec["a"], spec["b"]
        else:
            c, last = flip_checkpoints(rec, spec["run"], spec["position"])
            a, b = f"{spec['run']} step {last}", "step 0"
        note = "flip->R on the hard bin, per problem; " + c.method
    else:
        shift = read_json(f)
        c, used = shift_prompts(shift, spec["a"], spec["b"], spec["stat"], spec.get("threshold"))
        a, b = spec["a"], spec["b"]
        note = f"{used}; " + c.method
    return {**out, "a": a, "b": b, "direction": row["direction"], **_interval_cols(c, row["direction"], 100),
            "note": note}


def compare_row(row: dict, n_boot: int, seed: int) -> dict:
    """One table row: the claim, the arms' means and seed sd (percentage points), the interval and the verdict,
    and the verdict the earlier percentile bootstrap gave (``verdict_bootstrap``)."""
    out = {"claim": row["claim"], "text": row["text"], "source": row["source"], "where": row["where"],
           "metric": row["metric"]}
    if row.get("missing"):
        return {**out, "verdict": NOT_TESTED, "note": row["missing"]}
    if row.get("study"):
        return _study_row(row, out)
    if row["metric"] == "pearson_r":
        y = np.stack([arm_matrix(files, "avg@n") for files in row["files_arms"]], axis=1)  # (S, R, P)
        x = np.arange(1, y.shape[1] + 1, dtype=float)
        c = pearson_over_seeds(x, y, n_boot=n_boot, seed=seed)
        old = bootstrap_pearson(x, y, n_boot=n_boot, seed=seed)  # the earlier interval, to say what changed
        acc = 100 * y.mean(axis=(0, 2))
        return {**out, "a": "reward rank 1..%d" % len(x), "b": "student avg@n", "direction": 1,
                # seeds to decide, on Fisher's z scale (where the interval is made): z = atanh(r), sd(z) over seeds
                **_interval_cols(c, 1, 1), "seeds_needed": seeds_needed(
                    float(np.arctanh(np.clip(c.diff, -0.999999, 0.999999))), c.se * np.sqrt(c.n_seeds)),
                "verdict_bootstrap": verdict(old.lo, old.hi) if np.isfinite(old.lo) else INCONCLUSIVE,
                "note": "accuracy per rank: " + ", ".join(f"{v:.1f}" for v in acc)}
    which = row.get("split") or row.get("splits")  # one split (claim 0's per-split rows), several (claim 6), all
    a = arm_matrix(row["files_a"], row["metric"], which, row.get("k"))
    b = arm_matrix(row["files_b"], row["metric"], which, row.get("k"))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"claim {row['claim']} ({row['where']}): the arms cover {a.shape[1]} and {b.shape[1]} "
                         "problems")
    c = seed_t(a, b)
    old = paired_bootstrap(a, b, n_boot=n_boot, seed=seed)
    if row["metric"] == "pass@k":
        out["metric"] = f"pass@{row.get('k') or largest_k(read_json(row['files_a'][0]))}"
    pa, pb = 100 * a.mean(1), 100 * b.mean(1)  # per-seed means, points
    sd = lambda v: float(v.std(ddof=1)) if len(v) > 1 else float("nan")  # noqa: E731
    return {**out, "a": row["a"]["run"], "b": row["b"]["run"], "direction": row["direction"],
            "mean_a": float(pa.mean()), "std_a": sd(pa), "mean_b": float(pb.mean()), "std_b": sd(pb),
            **_interval_cols(c, row["direction"], 100),
            "verdict_bootstrap": verdict(old.lo, old.hi, row["direction"]), "note": ""}


def claims_frame(rows: list[dict], n_boot: int, seed: int, paper: dict | None = None) -> pd.DataFrame:
    """Every row scored (:func:`compare_row`), with the paper's own number (``paper``: the cited numbers file
    as :func:`rlrt.paper_numbers.load` reads it) in ``paper`` / ``paper_source``."""
    cols = ["claim", "text", "source", "where", "metric", "a", "b", "direction", "seeds", "problems", "mean_a",
            "std_a", "mean_b", "std_b", "value", "lo", "hi", "se", "seed_sd", "seeds_needed", "interval", "paper",
            "paper_source", "verdict", "verdict_bootstrap", "note"]
    out = []
    for row in rows:
        r = compare_row(row, n_boot, seed)
        if paper is not None:
            r["paper"], r["paper_source"] = lookup(paper, row.get("paper"))
        log.info("claim %s %s: %s", r["claim"], r["where"], r["verdict"])
        out.append(r)
    return pd.DataFrame(out).reindex(columns=cols)


def _fmt(v: float, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:+.1f}" if signed else f"{v:.1f}"


def _num(r, key: str) -> float:
    v = r.get(key) if hasattr(r, "get") else r[key]
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def to_markdown(df: pd.DataFrame, seeds: int) -> str:
    """The table people read: one line per row, the arms as mean ± sd over seeds, our interval, the paper's own
    number, the seed-level sd and the seeds a decision would take, the verdict ("1 seed" beside it when the
    interval is over problems only), then the rows whose verdict the change from the percentile bootstrap
    changed."""
    lines = []
    for _, r in df.iterrows():
        paper = _num(r, "paper")
        ptxt = "" if not np.isfinite(paper) else (f"{paper:+.2f}" if r["metric"] == "pearson_r" else f"{paper:+.1f}")
        if r["verdict"] == NOT_TESTED:
            lines.append([r["claim"], r["text"], r["where"], "", "", "", ptxt, "", NOT_TESTED + f" ({r['note']})"])
            continue
        if r["metric"] == "pearson_r":
            arms = r["note"]
            est = f"r = {r['value']:+.2f} [{r['lo']:+.2f}, {r['hi']:+.2f}]" if np.isfinite(r["lo"]) else \
                f"r = {r['value']:+.2f} (no interval)"
            sd = f"{r['seed_sd']:.2f}" if np.isfinite(_num(r, "seed_sd")) else ""
        else:
            if np.isfinite(_num(r, "mean_a")):
                arms = (f"{r['a']} {_fmt(r['mean_a'])} ± {_fmt(r['std_a'])} vs "
                        f"{r['b']} {_fmt(r['mean_b'])} ± {_fmt(r['std_b'])}")
            else:
                arms = f"{r['a']} vs {r['b']}: {r['note']}"
            est = f"{_fmt(r['value'], True)} [{_fmt(r['lo'], True)}, {_fmt(r['hi'], True)}]"
            if _num(r, "se") > 0:
                est += f" ({r['value'] / r['se']:+.1f} SE)"
            sd = _fmt(_num(r, "seed_sd"))
        need = _num(r, "seeds_needed")
        if need == np.inf:
            sd += " / > 1000"
        elif np.isfinite(need):
            sd += f" / {need:.0f}"
        one = int(r["seeds"]) == 1 if np.isfinite(_num(r, "seeds")) else False
        lines.append([r["claim"], r["text"], r["where"], r["metric"], arms, est, ptxt, sd,
                      r["verdict"] + (" (1 seed)" if one else "")])
    head = ["#", "claim", "where", "metric", "arms (mean ± sd over seeds, %)",
            "a − b, 95 % CI (points; in standard errors)", "paper", "seed sd / seeds needed", "verdict"]
    counts = df["verdict"].value_counts()
    summary = ", ".join(f"{counts.get(v, 0)} {v}" for v in (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_TESTED))
    changed = df[df["verdict_bootstrap"].notna() & (df["verdict_bootstrap"] != df["verdict"])] \
        if "verdict_bootstrap" in df else df.iloc[:0]
    change = ("Verdicts the change of interval changed (percentile bootstrap -> t over seeds): " + "; ".join(
        f"claim {r['claim']} {r['where']}: {r['verdict_bootstrap']} -> {r['verdict']}" for _, r in changed.iterrows())
              if len(changed) else "The change of interval (percentile bootstrap -> t over seeds) changed no verdict.")
    cited: dict[tuple, list[str]] = {}  # (claim, source) -> the rows citing it
    for _, r in df.iterrows():
        if isinstance(r.get("paper_source"), str) and r["paper_source"]:
            cited.setdefault((r["claim"], r["paper_source"]), []).append(str(r["where"]))
    sources = [f"- claim {c} ({'; '.join(dict.fromkeys(w))}): {src}" for (c, src), w in cited.items()]
    return (f"# Claims over {seeds} seed{'s' if seeds != 1 else ''}\n\nEach row: arm a vs arm b on the same test "
            "problems, paired by seed and problem. The interval is a t interval over the per-seed paired means "
            "(seeds - 1 degrees of freedom; rlrt.analysis.claims says why); with one seed, or for the analysis "
            "studies of claims 9-12 (seed 0's checkpoints only), a t over problems that holds the sampling noise "
            "within one run only, marked \"1 seed\" in the verdict. Reproduced = the interval lies on the paper's "
            "side of 0; not reproduced = on the other side; inconclusive = it contains 0. \"paper\" is the paper's "
            "own number for the same comparison (sources below; empty: the paper gives none). \"seed sd\" is the sd of the per-seed differences (points), \"seeds needed\" how many seeds "
            "would exclude 0 at the measured difference and that sd. Claim 0 is the learning check, not a paper's "
            "claim: GRPO against the untrained backbone over every test split's problems and on each split (the "
            f"claims issue's target: more than 3 standard errors).\n\nRows: {summary}.\n\n{change}\n\n"
            + tabulate(lines, headers=head, tablefmt="github", disable_numparse=True) + "\n"
            + ("\nThe paper's numbers:\n\n" + "\n".join(sources) + "\n" if sources else ""))


def claims_figure(df: pd.DataFrame, out: str) -> None:
    """Forest plot: each comparison's paired difference and interval against 0 (left), the reward-rank Pearson r
    (right); colour = verdict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colour = {REPRODUCED: "tab:green", NOT_REPRODUCED: "tab:red", INCONCLUSIVE: "tab:gray"}
    tested = df[df["verdict"] != NOT_TESTED]
    diffs = tested[tested["metric"] != "pearson_r"]  # avg@n, pass@<k>
    corr = tested[tested["metric"] == "pearson_r"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * max(len(diffs), 4) + 1.6),
                             gridspec_kw={"width_ratios": [3, 1]})
    ax = axes[0]
    for i, (_, r) in enumerate(diffs.iloc[::-1].iterrows()):
        # the paper's side of 0 is drawn to the right: a claim "a < b" is shown as b - a
        s = r["direction"]
        lo, hi, v = (r["lo"], r["hi"], r["value"]) if s == 1 else (-r["hi"], -r["lo"], -r["value"])
        if np.isfinite(lo):
            ax.plot([lo, hi], [i, i], color=colour[r["verdict"]], lw=3)
        ax.plot([v], [i], "o", color="black", ms=4)
        paper = _num(r, "paper")
        if np.isfinite(paper):  # the paper's own number, on the same side convention
            ax.plot([paper * s], [i], "D", mfc="none", mec="tab:blue", ms=6, mew=1.5)
    labels = [f"{r['claim']}. {r['where']}: " + (f"{r['a']} − {r['b']}" if r["direction"] == 1 else
                                               f"{r['b']} − {r['a']}") + f" ({r['metric']})"
              for _, r in diffs.iloc[::-1].iterrows()]
    ax.set_yticks(range(len(diffs)), labels, fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("paired difference, the paper's side > 0 (points)\n95 % CI: t over seeds; 1-seed rows: over "
                  "problems")
    ax.set_title("Does the paper's side of 0 hold? (claim 0 = RL learns; ◇ = the paper's number)")
    ax = axes[1]
    for i, (_, r) in enumerate(corr.iterrows()):
        if np.isfinite(r["lo"]):
            ax.plot([r["lo"], r["hi"]], [i, i], color=colour[r["verdict"]], lw=3)
        ax.plot([r["value"]], [i], "o", color="black", ms=4)
        if np.isfinite(_num(r, "paper")):
            ax.plot([r["paper"]], [i], "D", mfc="none", mec="tab:blue", ms=6, mew=1.5)
    ax.set_yticks(range(len(corr)), [f"{r['claim']}. {r['where']}" for _, r in corr.iterrows()], fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel("Pearson r (rank, accuracy)")
    ax.set_title("Claim 8")
    handles = [plt.Line2D([], [], color=c, lw=3, label=v) for v, c in colour.items()]
    handles += [plt.Line2D([], [], ls="none", marker="o", color="black", ms=4, label="ours"),
                plt.Line2D([], [], ls="none", marker="D", mfc="none", mec="tab:blue", ms=6, label="the paper's")]
    fig.legend(handles=handles, loc="lower center", ncol=5, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-png", required=True)
    args, cfg = parse(p, argv)
    paper = cfg.get("paper")
    df = claims_frame(cfg["rows"], int(cfg.get("n_boot", 10_000)), int(cfg.get("seed", 0)), paper)
    with atomic_path(args.out_csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.4f")
    claims_figure(df, args.out_png)
    with atomic_path(args.out_md) as tmp:
        tmp.write_text(to_markdown(df, int(cfg["seeds"])))


if __name__ == "__main__":
    main()
