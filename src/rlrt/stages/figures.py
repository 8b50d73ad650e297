"""Stage: Figure 5 -- training reward vs step, one panel per backbone, one line per method."""

from __future__ import annotations

import logging

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rlrt.io import atomic_path, read_json  # noqa: E402
from rlrt.stages.common import parse, parser  # noqa: E402

log = logging.getLogger("rlrt.figures")
COLORS = {"grpo": "tab:blue", "rlsd": "tab:orange", "rlrt": "tab:red", "sdpo": "tab:green", "srpo": "tab:purple"}


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
    by_key = {(r["summary"]["backbone"], r["summary"]["method"]): r for r in runs}
    for ax in axes.flat[len(backbones):]:
        ax.set_visible(False)
    for ax, b in zip(axes.flat, backbones):
        for m in methods:
            r = by_key.get((b, m))
            if r is None:
                continue
            steps = np.array([h["step"] for h in r["history"]])
            y = np.array([h[metric] for h in r["history"]])
            w = max(1, len(y) // 10)
            ax.plot(steps, y, color=COLORS.get(m), alpha=0.25, lw=1)
            ax.plot(steps, smooth(y, w), color=COLORS.get(m), lw=2, label=m.upper())
        ax.set_title(b)
        ax.set_xlabel("training step")
        ax.set_ylabel("training reward")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(loc="best")
    fig.suptitle("Training score curves (embedded analogue of RLRT Fig. 5)")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--runs", nargs="+", required=True)
    p.add_argument("--out", required=True)
    args, cfg = parse(p, argv)
    fig5([read_json(f) for f in args.runs], cfg["backbones"], cfg["methods"], args.out)


if __name__ == "__main__":
    main()
