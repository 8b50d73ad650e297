"""Stage: the RLRT paper's tables, one ``--table`` per rule.

* ``table1`` / ``table3``: per backbone a block {backbone, method rows, Δ vs best}, columns = test sets x
  {Avg@n, Pass@n}. Δ vs best is RLRT minus the best *other trained method* in each column (the paper's
  definition); it is left out when RLRT or no other method is in the block. Table 3 is the same block for the
  instruct backbone with the paper's Table 3 methods.
* ``table4``: the unified view of every method, generated from ``rlrt.methods.registry`` (not typed by hand).
* ``sweeps``: every sweep point's training outcome (first/last training reward, entropy, length).
* ``rlt_table1``: the RLT paper's Table 1 analogue -- per student, the untrained backbone and students distilled
  from RLT vs reference traces on the full question set and on the small subset, with RLT - reference rows.
* ``rlt_table2``: its cold-start table -- GRPO from the untrained student vs from the RLT / reference students.
"""

from __future__ import annotations

import logging
import math

import pandas as pd
from tabulate import tabulate

from rlrt.io import atomic_path, read_json
from rlrt.labels import run_label
from rlrt.rlt_models import rlt_models
from rlrt.stages.common import parse, parser

log = logging.getLogger("rlrt.tables")


def table1(evals: list[dict], backbones: list[str], methods: list[str], splits: list[str], n: int,
           labels: dict[str, str] | None = None, skipped: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """Long-form eval records -> the Table 1 frame (rows: backbone blocks; columns: split x metric).
    ``skipped[b]``: methods not trained on ``b`` (config methods.skip): their cells are empty (NaN), as the
    paper's Table 1 has no SDPO / SRPO rows on the base models, and they do not enter the delta row.

    Seeds: the evaluations of a method's claims replicates (``grpo+seed=1``, ...) are pooled with its plain run:
    a cell is the mean over the seeds, and when any row has more than one seed every column gets a companion
    ``<metric> std`` column (sample std over seeds; NaN for a single seed) and the row's label says how many seeds.
    The Δ row compares the means."""
    from rlrt.plan import split_seed

    by_key: dict[tuple[str, str], list[dict]] = {}
    for e in evals:
        by_key.setdefault((e["backbone"], split_seed(e["method"])[0]), []).append(e)
    cols = [(s, m) for s in splits for m in (f"Avg@{n}", f"Pass@{n}")]
    rows, stds, index = [], [], []
    for b in backbones:
        block = {}
        for m in ["base"] + methods:
            label = (labels or {}).get(b, b) if m == "base" else "  " + run_label(m)
            if m in ((skipped or {}).get(b) or []):
                rows.append([float("nan")] * len(cols))
                stds.append([float("nan")] * len(cols))
                index.append((b, m, label))
                continue
            es = by_key.get((b, m))
            if not es:
                raise ValueError(f"missing evaluation for backbone {b!r}, method {m!r}")
            per_seed = []
            for e in es:
                vals = []
                for s in splits:
                    mt = e["splits"][s]["metrics"]
                    vals += [mt[f"avg@{n}"], mt[f"pass@{n}"]]
                per_seed.append(vals)
            arr = pd.DataFrame(per_seed)
            vals = arr.mean().tolist()
            block[m] = vals
            rows.append(vals)
            stds.append(arr.std(ddof=1).tolist() if len(es) > 1 else [float("nan")] * len(cols))
            index.append((b, m, label + (f" ({len(es)} seeds)" if len(es) > 1 else "")))
        others = [block[m] for m in methods if m != "rlrt" and m in block]
        if "rlrt" in block and others:
            rows.append([block["rlrt"][i] - max(o[i] for o in others) for i in range(len(cols))])
            stds.append([float("nan")] * len(cols))
            index.append((b, "delta", "  Δ vs best"))
    df = pd.DataFrame(rows, columns=pd.MultiIndex.from_tuples(cols, names=["test set", "metric"]))
    if any(len(v) > 1 for v in by_key.values()):
        sd = pd.DataFrame(stds, columns=pd.MultiIndex.from_tuples([(s, f"{m} std") for s, m in cols],
                                                                  names=["test set", "metric"]))
        df = pd.concat([df, sd], axis=1)[[c for pair in zip(cols, sd.columns) for c in pair]]
    df.index = pd.MultiIndex.from_tuples(index, names=["backbone", "method", "row"])
    return df


def to_markdown(df: pd.DataFrame, title: str) -> str:
    """Paper layout: the backbone's own row names the block, method rows follow; numbers to one decimal, and
    ``mean ± std`` where the frame has a std column for that cell (seeds)."""
    value_cols = [c for c in df.columns if not str(c[1]).endswith(" std")]
    lines = []
    for (backbone, method, label), (_, row) in zip(df.index, df.iterrows()):
        fmt = "{:+.1f}" if method == "delta" else "{:.1f}"
        cells = []
        for c in value_cols:
            v = row[c]
            cell = "" if isinstance(v, float) and math.isnan(v) else fmt.format(v)
            sd = row.get((c[0], f"{c[1]} std"), float("nan"))
            if cell and not math.isnan(sd):
                cell += f" ± {sd:.1f}"
            cells.append(cell)
        lines.append([label.strip() if method == "base" else "", "" if method == "base" else label.strip(), *cells])
    headers = ["Backbone", "Method", *[f"{s} {m}" for s, m in value_cols]]
    return f"{title}\n\n" + tabulate(lines, headers=headers, tablefmt="github", disable_numparse=True,
                                     colalign=["left", "left"] + ["right"] * len(value_cols)) + "\n"


def write_table(df: pd.DataFrame, csv: str, md: str, title: str) -> None:
    out = df.copy()
    out.columns = [f"{s}/{m}" for s, m in out.columns]
    out = out.reset_index()
    out["row"] = out["row"].str.strip()
    with atomic_path(csv) as tmp:
        out.round(4).to_csv(tmp, index=False)
    with atomic_path(md) as tmp:
        tmp.write_text(to_markdown(df, title))


def table4() -> pd.DataFrame:
    """Table 4 from the registry (``registry.table4_rows``): cells read off each method's wired functions."""
    from rlrt.methods.registry import table4_rows

    return pd.DataFrame(table4_rows())


def sweeps_table(runs: list[dict], sweeps: list[dict]) -> pd.DataFrame:
    """One row per sweep point: backbone, method, key, value, run id and its training outcome.

    ``sweeps``: [{"method", "key", "backbone", "values", "runs"}] with the resolved run ids (``sweep_runs``).
    """
    by_key = {(r["summary"]["backbone"], r.get("run", r["summary"]["method"])): r for r in runs}
    rows = []
    for sw in sweeps:
        for value, run in zip(sw["values"], sw["runs"]):
            r = by_key.get((sw["backbone"], run))
            if r is None:
                raise ValueError(f"missing run {run!r} on {sw['backbone']!r} for the {sw['key']} sweep")
            h = r["history"]
            k = max(1, len(h) // 5)
            rows.append({"backbone": sw["backbone"], "method": sw["method"], "key": sw["key"], "value": value,
                         "run": run, "reward_first": 100 * sum(x["reward_mean"] for x in h[:k]) / k,
                         "reward_last": 100 * sum(x["reward_mean"] for x in h[-k:]) / k,
                         "entropy_last": h[-1]["entropy"], "length_last": h[-1]["response_length"]})
    return pd.DataFrame(rows)


def write_frame(df: pd.DataFrame, csv: str, md: str, title: str) -> None:
    with atomic_path(csv) as tmp:
        df.round(4).to_csv(tmp, index=False)
    with atomic_path(md) as tmp:
        tmp.write_text(f"{title}\n\n" + tabulate(df.round(2), headers="keys", tablefmt="github", showindex=False)
                       + "\n")


def rlt_label(model: str, n_questions: int | None = None, n_small: int | None = None) -> str:
    """Display name of an RLT-branch student model (see rules/rlt.smk for the naming)."""
    if model == "base":
        return "untrained"
    if model.startswith("cdgrpo-"):
        init = model[len("cdgrpo-"):]
        return "countdown GRPO" + ("" if init == "base" else f" from {rlt_label(init, n_questions, n_small)}")
    if model.startswith("grpo-"):
        init = model[len("grpo-"):]
        return "GRPO, no cold start" if init == "base" else f"{rlt_label(init, n_questions, n_small)} + GRPO"
    data = model[len("sft-"):]
    if data.startswith("rank"):
        return f"reward rank {data[4:]}"
    if data == "countdown":
        return "RLT countdown traces (zero-shot teacher)"
    source, _, size = data.partition("_")
    name = {"rlt": "RLT traces", "reference": "reference traces"}[source]
    n = n_small if size == "small" else n_questions
    return name + (f" ({n} q)" if n else "")


RLT_OVERALL = "Overall"
"""The RLT tables' last column pair: the mean over the test splits (RLT Tables 1-2's "Overall")."""


def rlt_table(evals: list[dict], models: list[str], splits: list[str], n: int, deltas: list[tuple[str, str, str]],
              n_questions: int | None = None, n_small: int | None = None) -> pd.DataFrame:
    """Student evaluations -> a frame in the Table 1 layout: per student a block {untrained, models, deltas}.

    Columns: each split's (Avg@n, Pass@n), then ("Overall", Avg@n / Pass@n) = the unweighted mean of that metric
    over the splits (the RLT paper's "Overall": the mean of AIME24, MATH500 and GPQA-Diamond, whatever their
    problem counts). ``deltas``: (label, model_a, model_b) rows holding a - b in every column (Overall included).
    """
    by_key = {(e["backbone"], e["method"]): e for e in evals}
    students = list(dict.fromkeys(e["backbone"] for e in evals))
    if RLT_OVERALL in splits:
        raise ValueError(f"a test split named {RLT_OVERALL!r} would collide with the mean column")
    metrics = (f"Avg@{n}", f"Pass@{n}")
    cols = [(s, m) for s in splits for m in metrics] + [(RLT_OVERALL, m) for m in metrics]
    rows, index = [], []
    for st in students:
        block = {}
        for m in models:
            e = by_key.get((st, m))
            if e is None:
                raise ValueError(f"missing RLT evaluation for student {st!r}, model {m!r}")
            missing = [s for s in splits if s not in e["splits"]]
            if missing:
                raise ValueError(f"RLT evaluation of student {st!r}, model {m!r} has no split(s) {missing}")
            cells = [e["splits"][s]["metrics"][k] for s in splits for k in (f"avg@{n}", f"pass@{n}")]
            block[m] = cells + [sum(cells[j::2]) / len(splits) for j in range(2)]
            rows.append(block[m])
            index.append((st, m, f"{st} (untrained)" if m == "base" else "  " + rlt_label(m, n_questions, n_small)))
        for label, a, b in deltas:
            rows.append([x - y for x, y in zip(block[a], block[b])])
            index.append((st, "delta", "  " + label))
    df = pd.DataFrame(rows, columns=pd.MultiIndex.from_tuples(cols, names=["test set", "metric"]))
    df.index = pd.MultiIndex.from_tuples(index, names=["backbone", "method", "row"])
    return df


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--table", choices=["table1", "table3", "table4", "sweeps", "rlt_table1", "rlt_table2"],
                   default="table1")
    p.add_argument("--evals", nargs="*", default=[])
    p.add_argument("--runs", nargs="*", default=[])
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    args, cfg = parse(p, argv)
    if args.table == "table4":
        title = ("Table 4 (generated from rlrt.methods.registry): every method is GRPO's surrogate with "
                 "A_t = A [(1 - λ) + λ clip(w_t, 1 - ε_w, 1 + ε_w)] or a distillation objective; they differ in "
                 "the context c, the per-token weight w_t and the gate.")
        write_frame(table4(), args.out_csv, args.out_md, title)
        return
    if args.table == "sweeps":
        df = sweeps_table([read_json(f) for f in args.runs], cfg["sweeps"])
        title = ("Sweeps (RLRT Table 5 / Fig. 9b): training reward (%) over the first and last fifth of the steps, "
                 "last-step entropy and response length, per sweep point.")
        write_frame(df, args.out_csv, args.out_md, title)
        log.info("\n%s", df)
        return
    evals = [read_json(f) for f in args.evals]
    if args.table in ("rlt_table1", "rlt_table2"):
        n, nq, ns = int(cfg["n"]), cfg.get("n_questions"), cfg.get("n_small")
        if args.table == "rlt_table1":
            models = rlt_models()["table1"]
            deltas = [("Δ RLT − reference (full)", "sft-rlt", "sft-reference"),
                      ("Δ RLT − reference (small)", "sft-rlt_small", "sft-reference_small")]
            title = (f"RLT Table 1 (embedded analogue): students distilled from the RL teacher's raw explanations vs "
                     f"the reference traces, on {nq} questions and on a {ns}-question subset, "
                     + ("the subset with its own SFT recipe (rlt.student_sft_small); " if cfg.get("small_recipe")
                        else "same SFT budget; ") +
                     f"avg@{n} and pass@{n} (%) on the held-out test sets; Overall = their mean over the test sets.")
        else:
            models = rlt_models()["table2"]
            deltas = [("Δ RLT − reference cold start, after GRPO", "grpo-sft-rlt", "grpo-sft-reference")]
            title = (f"RLT Table 2 (embedded analogue): GRPO with the correctness reward from the untrained student "
                     f"vs cold-started from RLT / reference traces; avg@{n} and pass@{n} (%); Overall = the mean over "
                     f"the test sets.")
        df = rlt_table(evals, models, cfg["splits"], n, deltas, nq, ns)
        write_table(df, args.out_csv, args.out_md, title)
        log.info("\n%s", to_markdown(df, title))
        return
    labels = {b: f"{b} (≈ {s})" if s else b for b, s in cfg.get("stand_in_for", {}).items()}
    df = table1(evals, cfg["backbones"], cfg["methods"], cfg["splits"], int(cfg["n"]), labels, cfg.get("skipped"))
    n = cfg["n"]
    name = "Table 1" if args.table == "table1" else "Table 3"
    title = (f"{name} (embedded analogue): avg@{n} and pass@{n} (%) on the held-out test sets. "
             "Δ = RLRT minus the best other trained method.")
    write_table(df, args.out_csv, args.out_md, title)
    log.info("\n%s", to_markdown(df, title))


if __name__ == "__main__":
    main()
