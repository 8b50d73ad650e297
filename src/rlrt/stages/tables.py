"""Stage: Table 1 of the RLRT paper -- per backbone a block {backbone, GRPO, RLSD, RLRT, Δ vs best},
columns = test sets x {Avg@n, Pass@n}.

Δ vs best is RLRT minus the best *other trained method* in each column (the paper's definition); it is left
empty when RLRT or no other method is in the run.
"""

from __future__ import annotations

import logging
import math

import pandas as pd
from tabulate import tabulate

from rlrt.io import atomic_path, read_json
from rlrt.stages.common import parse, parser

log = logging.getLogger("rlrt.tables")

DISPLAY = {"base": None, "grpo": "GRPO", "rlsd": "RLSD", "rlrt": "RLRT", "sdpo": "SDPO", "srpo": "SRPO"}


def table1(evals: list[dict], backbones: list[str], methods: list[str], splits: list[str], n: int,
           labels: dict[str, str] | None = None) -> pd.DataFrame:
    """Long-form eval records -> the Table 1 frame (rows: backbone blocks; columns: split x metric)."""
    by_key = {(e["backbone"], e["method"]): e for e in evals}
    cols = [(s, m) for s in splits for m in (f"Avg@{n}", f"Pass@{n}")]
    rows, index = [], []
    for b in backbones:
        block = {}
        for m in ["base"] + methods:
            e = by_key.get((b, m))
            if e is None:
                raise ValueError(f"missing evaluation for backbone {b!r}, method {m!r}")
            vals = []
            for s in splits:
                mt = e["splits"][s]["metrics"]
                vals += [mt[f"avg@{n}"], mt[f"pass@{n}"]]
            block[m] = vals
            label = (labels or {}).get(b, b) if m == "base" else "  " + DISPLAY.get(m, m.upper())
            rows.append(vals)
            index.append((b, m, label))
        others = [block[m] for m in methods if m != "rlrt"]
        if "rlrt" in block and others:
            rows.append([block["rlrt"][i] - max(o[i] for o in others) for i in range(len(cols))])
            index.append((b, "delta", "  Δ vs best"))
    df = pd.DataFrame(rows, columns=pd.MultiIndex.from_tuples(cols, names=["test set", "metric"]))
    df.index = pd.MultiIndex.from_tuples(index, names=["backbone", "method", "row"])
    return df


def to_markdown(df: pd.DataFrame, title: str) -> str:
    """Paper layout: the backbone's own row names the block, method rows follow; numbers to one decimal."""
    lines = []
    for (backbone, method, label), vals in zip(df.index, df.to_numpy()):
        fmt = "{:+.1f}" if method == "delta" else "{:.1f}"
        cells = ["" if isinstance(v, float) and math.isnan(v) else fmt.format(v) for v in vals]
        lines.append([label.strip() if method == "base" else "", "" if method == "base" else label.strip(), *cells])
    headers = ["Backbone", "Method", *[f"{s} {m}" for s, m in df.columns]]
    return f"{title}\n\n" + tabulate(lines, headers=headers, tablefmt="github", disable_numparse=True,
                                     colalign=["left", "left"] + ["right"] * len(df.columns)) + "\n"


def write_table(df: pd.DataFrame, csv: str, md: str, title: str) -> None:
    out = df.copy()
    out.columns = [f"{s}/{m}" for s, m in out.columns]
    out = out.reset_index()
    out["row"] = out["row"].str.strip()
    with atomic_path(csv) as tmp:
        out.round(4).to_csv(tmp, index=False)
    with atomic_path(md) as tmp:
        tmp.write_text(to_markdown(df, title))


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--evals", nargs="+", required=True)
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    args, cfg = parse(p, argv)
    evals = [read_json(f) for f in args.evals]
    labels = {b: f"{b} (≈ {s})" if s else b for b, s in cfg.get("stand_in_for", {}).items()}
    df = table1(evals, cfg["backbones"], cfg["methods"], cfg["splits"], int(cfg["n"]), labels)
    n = cfg["n"]
    title = (f"Table 1 (embedded analogue): avg@{n} and pass@{n} (%) on the held-out test sets. "
             "Δ = RLRT minus the best other trained method.")
    write_table(df, args.out_csv, args.out_md, title)
    log.info("\n%s", to_markdown(df, title))


if __name__ == "__main__":
    main()
