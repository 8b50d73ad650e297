"""Stage: the RLRT paper's figures from run metrics and evaluations, one ``--figure`` per rule.

* ``fig5``: training reward vs step, one panel per backbone, one line per method.
* ``fig8``: pass@k for k = 1..n (unbiased estimator, n samples per problem) per test set, one line per run.
* ``fig9``: (a) the gate ablation -- RLRT vs RLRT-all: training score, response length, entropy;
            (b) the eps_w sweeps of RLRT and RLSD on the base backbones with GRPO as reference.
* ``rlt_countdown``: the RLT paper's Fig. 5 left -- countdown accuracy of each student (transfer of the
  arithmetic students, direct GRPO on countdown, distillation from the teacher's zero-shot countdown traces).
* ``rlt_reward_rank``: its Fig. 5 right -- student accuracy per reward-rank dataset, Pearson r (also written to
  ``--out-json`` as ``pearson_r``).
"""

from __future__ import annotations

import logging

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rlrt.io import atomic_path, read_json  # noqa: E402
from rlrt.io import write_json  # noqa: E402
from rlrt.metrics import passk_curve, pearson_r  # noqa: E402
from rlrt.stages.common import parse, parser  # noqa: E402
from rlrt.labels import run_color, run_label  # noqa: E402
from rlrt.stages.tables import rlt_label  # noqa: E402

log = logging.getLogger("rlrt.figures")


def run_key(r: dict) -> tuple[str, str]:
    return r["summary"]["backbone"], r.get("run", r["summary"]["method"])


def curve(ax, r: dict, metric: str, label: str, color=None, ls="-") -> None:
    """Raw curve (faint) and its trailing moving average."""
    steps = np.array([h["step"] for h in r["history"]])
    y = np.array([h[metric] for h in r["history"]], dtype=float)
    w = max(1, len(y) // 10)
    ax.plot(steps, y, color=color, alpha=0.2, lw=1, ls=ls)
    ax.plot(steps, smooth(y, w), color=color, lw=2, ls=ls, label=label)


def save(fig, out: str, rect: tuple[float, float, float, float] | None = None) -> None:
    """``rect``: the area tight_layout may fill (leaves room for a figure legend)."""
    fig.tight_layout(rect=rect) if rect else fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (window clipped at the start), same length as y."""
    c = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def fig5(runs: list[dict], backbones: list[str], methods: list[str], out: str, metric: str = "reward_mean") -> None:
    ncols = min(2, len(backbones))
    nrows = -(-len(backbones) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.6 * nrows), squeeze=False)
    by_key = {run_key(r): r for r in runs}
    for ax in axes.flat[len(backbones):]:
        ax.set_visible(False)
    for ax, b in zip(axes.flat, backbones):
        for m in methods:
            r = by_key.get((b, m))
            if r is None:
                continue
            curve(ax, r, metric, run_label(m), run_color(m))
        ax.set_title(b)
        ax.set_xlabel("training step")
        ax.set_ylabel("training reward")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(loc="best")
    fig.suptitle("Training score curves (embedded analogue of RLRT Fig. 5)")
    save(fig, out)


def passk_labels(by_run: dict[str, dict], runs: list[str], splits: list[str]) -> dict[str, str]:
    """Legend label per run; a run whose per-problem correct counts equal an earlier run's on every split draws
    the very same curve under it, so its label says so (e.g. DIVER's BLEU variant on a model that never has an
    all-correct group in its bonus window trains exactly as GRPO)."""
    labels: dict[str, str] = {}
    for i, run in enumerate(runs):
        labels[run] = run_label(run)
        counts = [by_run[run]["splits"][s]["correct_counts"] for s in splits]
        same = next((r for r in runs[:i] if [by_run[r]["splits"][s]["correct_counts"] for s in splits] == counts), None)
        if same is not None:
            labels[run] += f" (= {run_label(same)}: identical counts)"
    return labels


def fig8(evals: list[dict], runs: list[str], splits: list[str], out: str) -> None:
    by_run = {e["method"]: e for e in evals}
    labels = passk_labels(by_run, runs, splits)
    fig, axes = plt.subplots(1, len(splits), figsize=(5.4 * len(splits), 3.9), squeeze=False)
    for ax, split in zip(axes.flat, splits):
        for i, run in enumerate(runs):  # line styles differ so that identical runs stay visible when they overlap
            e = by_run[run]
            n = int(e["n"])
            ks = np.arange(1, n + 1)
            ax.plot(ks, passk_curve(e["splits"][split]["correct_counts"], n), lw=2.4 - 0.3 * i,
                    ls=["-", "--", "-.", ":"][i % 4], color=run_color(run), label=labels[run])
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k")
        ax.set_ylabel("pass@k (%)")
        ax.set_title(f"{split} ({e['splits'][split]['n_problems']} problems, n={n})")
        ax.grid(alpha=0.3, which="both")
    handles, names = axes.flat[0].get_legend_handles_labels()  # below the panels: labels can be long
    fig.legend(handles, names, loc="lower center", ncol=min(2, len(names)), frameon=False)
    backbone = evals[0]["backbone"] if evals else ""
    fig.suptitle(f"pass@k of exploration methods on {backbone} (embedded analogue of RLRT Fig. 8)")
    save(fig, out, rect=(0, 0.055 * ((len(names) + 1) // 2), 1, 1))


def fig9(runs: list[dict], gate: dict, eps: list[dict], out: str) -> None:
    """gate: {"backbone", "runs"}; eps: [{"backbone", "method", "values", "runs", "reference"}]."""
    by_key = {run_key(r): r for r in runs}
    ncols_b = max(1, len(eps))
    fig = plt.figure(figsize=(max(14, 3.6 * ncols_b), 7.4))
    gs = fig.add_gridspec(2, 3 * ncols_b)
    span = ncols_b  # panel (a): three panels over the same width
    for i, (metric, ylabel) in enumerate([("reward_mean", "training score"), ("response_length", "response length"),
                                          ("entropy", "actor entropy")]):
        ax = fig.add_subplot(gs[0, i * span:(i + 1) * span])
        for run in gate["runs"]:
            curve(ax, by_key[(gate["backbone"], run)], metric, run_label(run), run_color(run))
        ax.set_title(f"(a) {ylabel}, {gate['backbone']}")
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(loc="best")
    cmap = plt.get_cmap("viridis")
    for j, sw in enumerate(eps):
        ax = fig.add_subplot(gs[1, 3 * j:3 * (j + 1)])
        ref = sw.get("reference")
        if ref and (sw["backbone"], ref) in by_key:
            curve(ax, by_key[(sw["backbone"], ref)], "reward_mean", run_label(ref), "black", ls="--")
        for k, (value, run) in enumerate(zip(sw["values"], sw["runs"])):
            color = cmap(0.15 + 0.7 * k / max(1, len(sw["values"]) - 1))
            curve(ax, by_key[(sw["backbone"], run)], "reward_mean", f"ε_w={value}", color)
        ax.set_title(f"(b) {run_label(sw['method'])} ε_w sweep, {sw['backbone']}")
        ax.set_xlabel("training step")
        ax.set_ylabel("training score")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle("RLRT ablations (embedded analogue of Fig. 9): (a) reward gate, (b) clipping range ε_w")
    save(fig, out)


def rlt_countdown(evals: list[dict], n: int, out: str) -> None:
    """Bars: avg@n and pass@n (%) on the countdown test set, one pair per student model."""
    labels = [rlt_label(e["method"]) + (" (arithmetic student, zero-shot)" if e["method"] in ("sft-rlt", "sft-reference")
                                        else "") for e in evals]
    split = "countdown_test"
    avg = [e["splits"][split]["metrics"][f"avg@{n}"] for e in evals]
    pas = [e["splits"][split]["metrics"][f"pass@{n}"] for e in evals]
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(evals)), 4.8))
    x = np.arange(len(evals))
    b1 = ax.bar(x - 0.2, avg, 0.4, label=f"avg@{n}", color="tab:red")
    b2 = ax.bar(x + 0.2, pas, 0.4, label=f"pass@{n}", color="tab:red", alpha=0.4)
    ax.bar_label(b1, fmt="%.1f", fontsize=8)
    ax.bar_label(b2, fmt="%.1f", fontsize=8)
    ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=9)
    ax.set_ylabel("countdown test accuracy (%)")
    ax.set_ylim(0, max(5.0, 1.15 * max(avg + pas)))
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    n_test = evals[0]["splits"][split]["n_problems"] if evals else 0
    ax.set_title(f"Countdown transfer on {evals[0]['backbone'] if evals else ''} ({n_test} test problems; "
                 f"embedded analogue of RLT Fig. 5 left)")
    save(fig, out)


def rlt_reward_rank(evals: list[dict], ranks: dict, n: int, splits: list[str], out: str, out_json: str) -> dict:
    """Bars: each rank's student accuracy (avg@n, mean over the test sets) with the dataset's mean reward; the
    Pearson r of (rank, accuracy), rank 1 = the lowest-reward explanation of every question, K = the highest."""
    per_rank = {d["rank"]: d for d in ranks["per_rank"]}
    rank_of = {f"sft-rank{r}": r for r in per_rank}
    rows = sorted((rank_of[e["method"]], e) for e in evals)
    x = [r for r, _ in rows]
    acc = [float(np.mean([e["splits"][s]["metrics"][f"avg@{n}"] for s in splits])) for _, e in rows]
    r = pearson_r(x, acc)
    result = {"pearson_r": r, "x": "reward rank (1 = lowest RLT reward of a question's explanations)",
              "y": f"student avg@{n} (%), mean over {splits}", "ranks": x, "accuracy": acc,
              "per_split": {s: [e["splits"][s]["metrics"][f"avg@{n}"] for _, e in rows] for s in splits},
              "mean_reward": [per_rank[k]["mean_reward"] for k in x],
              "examples": [per_rank[k]["examples"] for k in x], "questions": ranks["questions"],
              "note": None if r is not None else "undefined: every rank's student has the same accuracy"}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    bars = ax.bar(x, acc, color=plt.get_cmap("viridis")(np.linspace(0.15, 0.85, len(x))))
    ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xlabel("dataset reward rank (1 = lowest)")
    ax.set_ylabel(f"student avg@{n} (%)")
    ax.set_xticks(x)
    ax.grid(axis="y", alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(x, result["mean_reward"], "k--o", lw=1, ms=4, label="mean RLT reward of the dataset")
    ax2.set_ylabel("mean RLT reward")
    ax2.legend(loc="upper left", fontsize=8)
    rs = "undefined" if r is None else f"{r:.2f}"
    ax.set_title(f"Reward rank vs student accuracy, Pearson r = {rs} ({ranks['questions']} questions per dataset)")
    save(fig, out)
    write_json(out_json, result)
    return result


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--figure", choices=["fig5", "fig8", "fig9", "rlt_countdown", "rlt_reward_rank"], default="fig5")
    p.add_argument("--ranks", help="reward-rank datasets' summary (rlt_reward_rank)")
    p.add_argument("--out-json", help="reward_rank.json (rlt_reward_rank)")
    p.add_argument("--runs", nargs="*", default=[])
    p.add_argument("--evals", nargs="*", default=[])
    p.add_argument("--out", required=True)
    args, cfg = parse(p, argv)
    if args.figure == "fig5":
        fig5([read_json(f) for f in args.runs], cfg["backbones"], cfg["methods"], args.out)
    elif args.figure == "fig8":
        fig8([read_json(f) for f in args.evals], cfg["runs"], cfg["splits"], args.out)
    elif args.figure == "fig9":
        fig9([read_json(f) for f in args.runs], cfg["gate"], cfg["eps"], args.out)
    elif args.figure == "rlt_countdown":
        rlt_countdown([read_json(f) for f in args.evals], int(cfg["n"]), args.out)
    else:
        res = rlt_reward_rank([read_json(f) for f in args.evals], read_json(args.ranks), int(cfg["n"]),
                              cfg["splits"], args.out, args.out_json)
        log.info("reward rank: Pearson r = %s, accuracy %s", res["pearson_r"], res["accuracy"])


if __name__ == "__main__":
    main()
