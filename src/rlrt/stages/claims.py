"""Stage: the claims table -- each headline claim of both papers over seeds, with a verdict.

Reads the evaluation of every seed of every arm that ``rlrt.claims.claim_rows`` plans (the rule hands the rows
and their files in ``--cfg``), turns each into per-problem scores (the test splits' problems one after another),
and per row computes what :mod:`rlrt.analysis.claims` defines: the paired difference a - b over seeds x problems
with a two-level bootstrap 95 % interval and a verdict; for the reward-rank row, Pearson r of (rank, accuracy)
with the same resampling. Writes ``claims.csv`` (every number), ``claims.md`` (the table people read, verdicts
spelled out) and ``claims.png`` (intervals against 0, coloured by verdict).

Scores are fractions in [0, 1]; the table and figure show them in percentage points.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
from tabulate import tabulate

from rlrt.analysis.claims import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, bootstrap_pearson, paired_bootstrap, verdict
from rlrt.io import atomic_path, read_json
from rlrt.metrics import pass_at_k
from rlrt.stages.common import parse, parser

log = logging.getLogger("rlrt.claims")

NOT_TESTED = "not tested"


def largest_k(result: dict) -> int:
    """The largest k an evaluation JSON reports pass@k for (Fig 8's n: pass@256)."""
    return max(int(key.split("@")[1]) for d in result["splits"].values() for key in d["metrics"]
               if key.startswith("pass@"))


def problem_scores(result: dict, metric: str, split: str | list[str] | tuple[str, ...] | None = None
                   ) -> tuple[np.ndarray, list[str]]:
    """Per-problem scores of one evaluation JSON, the splits' problems one after another (only ``split``'s when
    given: one split name, or several, taken in that order), and the split order.

    ``avg@n``: correct / n per problem; ``pass@k``: the unbiased pass@k at the largest k the file reports."""
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
            k = largest_k(result)
            out.append(np.array([pass_at_k(n, int(ci), k) for ci in c]))
        else:
            raise ValueError(f"unknown metric {metric!r}")
        splits.append(split_name)
    return np.concatenate(out), splits


def arm_matrix(files: list[str], metric: str, split: str | list[str] | tuple[str, ...] | None = None) -> np.ndarray:
    """(S, P) scores of one arm: one row per seed's evaluation file (checked to cover the same splits and
    problem counts)."""
    rows, layout = [], None
    for f in files:
        result = read_json(f)
        scores, splits = problem_scores(result, metric, split)
        shape = (splits, len(scores))
        if layout is not None and shape != layout:
            raise ValueError(f"{f}: splits / problem count {shape} differ from the arm's other seeds {layout}")
        layout = shape
        rows.append(scores)
    return np.stack(rows)


def compare_row(row: dict, n_boot: int, seed: int) -> dict:
    """One table row: the claim, the arms' means and seed std (percentage points) and the verdict."""
    out = {"claim": row["claim"], "text": row["text"], "source": row["source"], "where": row["where"],
           "metric": row["metric"]}
    if row.get("missing"):
        return {**out, "verdict": NOT_TESTED, "note": row["missing"]}
    if row["metric"] == "pearson_r":
        y = np.stack([arm_matrix(files, "avg@n") for files in row["files_arms"]], axis=1)  # (S, R, P)
        x = np.arange(1, y.shape[1] + 1, dtype=float)
        c = bootstrap_pearson(x, y, n_boot=n_boot, seed=seed)
        acc = 100 * y.mean(axis=(0, 2))
        return {**out, "a": "reward rank 1..%d" % len(x), "b": "student avg@n", "direction": 1,
                "seeds": c.n_seeds, "problems": c.n_problems, "value": c.diff, "lo": c.lo, "hi": c.hi,
                "verdict": verdict(c.lo, c.hi) if np.isfinite(c.lo) else INCONCLUSIVE,
                "note": "accuracy per rank: " + ", ".join(f"{v:.1f}" for v in acc)}
    which = row.get("split") or row.get("splits")  # one split (claim 0's per-split rows), several (claim 6), all
    a = arm_matrix(row["files_a"], row["metric"], which)
    b = arm_matrix(row["files_b"], row["metric"], which)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"claim {row['claim']} ({row['where']}): the arms cover {a.shape[1]} and {b.shape[1]} "
                         "problems")
    c = paired_bootstrap(a, b, n_boot=n_boot, seed=seed)
    if row["metric"] == "pass@k":
        out["metric"] = f"pass@{largest_k(read_json(row['files_a'][0]))}"
    pa, pb = 100 * a.mean(1), 100 * b.mean(1)  # per-seed means, points
    sd = lambda v: float(v.std(ddof=1)) if len(v) > 1 else float("nan")  # noqa: E731
    return {**out, "a": row["a"]["run"], "b": row["b"]["run"], "direction": row["direction"],
            "seeds": c.n_seeds, "problems": c.n_problems,
            "mean_a": float(pa.mean()), "std_a": sd(pa), "mean_b": float(pb.mean()), "std_b": sd(pb),
            "value": 100 * c.diff, "lo": 100 * c.lo, "hi": 100 * c.hi, "se": 100 * c.se,
            "verdict": verdict(c.lo, c.hi, row["direction"]), "note": ""}


def claims_frame(rows: list[dict], n_boot: int, seed: int) -> pd.DataFrame:
    cols = ["claim", "text", "source", "where", "metric", "a", "b", "direction", "seeds", "problems", "mean_a",
            "std_a", "mean_b", "std_b", "value", "lo", "hi", "se", "verdict", "note"]
    out = []
    for row in rows:
        r = compare_row(row, n_boot, seed)
        log.info("claim %s %s: %s", r["claim"], r["where"], r["verdict"])
        out.append(r)
    return pd.DataFrame(out).reindex(columns=cols)


def _fmt(v: float, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:+.1f}" if signed else f"{v:.1f}"


def to_markdown(df: pd.DataFrame, seeds: int) -> str:
    """The table people read: one line per row, the arms as mean ± std over seeds, the interval, the verdict."""
    lines = []
    for _, r in df.iterrows():
        if r["verdict"] == NOT_TESTED:
            lines.append([r["claim"], r["text"], r["where"], "", "", "", NOT_TESTED + f" ({r['note']})"])
            continue
        if r["metric"] == "pearson_r":
            arms = r["note"]
            est = f"r = {r['value']:+.2f} [{r['lo']:+.2f}, {r['hi']:+.2f}]" if np.isfinite(r["lo"]) else \
                f"r = {r['value']:+.2f} (no interval)"
        else:
            arms = (f"{r['a']} {_fmt(r['mean_a'])} ± {_fmt(r['std_a'])} vs "
                    f"{r['b']} {_fmt(r['mean_b'])} ± {_fmt(r['std_b'])}")
            est = f"{_fmt(r['value'], True)} [{_fmt(r['lo'], True)}, {_fmt(r['hi'], True)}]"
            if r["se"] > 0:
                est += f" ({r['value'] / r['se']:+.1f} SE)"
        lines.append([r["claim"], r["text"], r["where"], r["metric"], arms, est, r["verdict"]])
    head = ["#", "claim", "where", "metric", "arms (mean ± std over seeds, %)",
            "a − b, 95 % CI (points; in standard errors)",
            "verdict"]
    counts = df["verdict"].value_counts()
    summary = ", ".join(f"{counts.get(v, 0)} {v}" for v in (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_TESTED))
    return (f"# Claims over {seeds} seeds\n\nEach row: arm a vs arm b on the same test problems, paired by seed and "
            "problem; the interval is a bootstrap over seeds and problems (10,000 draws unless configured). "
            "Reproduced = the interval lies on the paper's side of 0; not reproduced = on the other side; "
            "inconclusive = it contains 0. Claim 0 is the learning check, not a paper's claim: GRPO against the "
            "untrained backbone over every test split's problems and on each split (the claims issue's target: more "
            f"than 3 standard errors).\n\nRows: {summary}.\n\n"
            + tabulate(lines, headers=head, tablefmt="github") + "\n")


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
        ax.plot([lo, hi], [i, i], color=colour[r["verdict"]], lw=3)
        ax.plot([v], [i], "o", color="black", ms=4)
    labels = [f"{r['claim']}. {r['where']}: " + (f"{r['a']} − {r['b']}" if r["direction"] == 1 else
                                               f"{r['b']} − {r['a']}") + f" ({r['metric']})"
              for _, r in diffs.iloc[::-1].iterrows()]
    ax.set_yticks(range(len(diffs)), labels, fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("paired difference, paper's claimed direction > 0 (points, 95 % bootstrap CI)")
    ax.set_title("Claims 0–7: does the paper's side of 0 hold? (0 = RL learns)")
    ax = axes[1]
    for i, (_, r) in enumerate(corr.iterrows()):
        if np.isfinite(r["lo"]):
            ax.plot([r["lo"], r["hi"]], [i, i], color=colour[r["verdict"]], lw=3)
        ax.plot([r["value"]], [i], "o", color="black", ms=4)
    ax.set_yticks(range(len(corr)), [f"{r['claim']}. {r['where']}" for _, r in corr.iterrows()], fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel("Pearson r (rank, accuracy)")
    ax.set_title("Claim 8")
    handles = [plt.Line2D([], [], color=c, lw=3, label=v) for v, c in colour.items()]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False)
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
    df = claims_frame(cfg["rows"], int(cfg.get("n_boot", 10_000)), int(cfg.get("seed", 0)))
    with atomic_path(args.out_csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.4f")
    claims_figure(df, args.out_png)
    with atomic_path(args.out_md) as tmp:
        tmp.write_text(to_markdown(df, int(cfg["seeds"])))


if __name__ == "__main__":
    main()
