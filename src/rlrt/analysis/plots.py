"""Figures of the analyses (matplotlib, Agg backend) and the self-contained HTML token heatmap.

Every function draws from already computed values (no statistics here) and writes one file to ``path`` (the
stages pass a temporary path of :func:`rlrt.io.atomic_path`, so the format is given explicitly).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from rlrt.labels import run_color, run_label  # one naming and colouring of runs for every figure and table

EXPLORE_COLOR = "#1b9e4b"  # green: D̂ > 0 (student over teacher)
EXPLOIT_COLOR = "#d6287d"  # pink: D̂ < 0 (teacher over student)
POSITION_MARKERS = {"max_kl": "s", "random": "o", "min_kl": "^"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def run_styles(runs) -> dict[str, str]:
    """A line style per run: solid, then dashed / dash-dot / dotted for further runs of the same method colour."""
    seen: dict[str, int] = {}
    out = {}
    for run in runs:
        k = seen.get(run_color(run), 0)
        seen[run_color(run)] = k + 1
        out[run] = ["-", "--", "-.", ":"][k % 4]
    return out


def show_token(s: str) -> str:
    """A token as displayed in a figure: newlines as ↵, tabs as →, other control characters escaped (\\x05), the
    empty string as ∅."""
    out = "".join("↵" if c == "\n" else "→" if c == "\t" else c if c.isprintable() else f"\\x{ord(c):02x}"
                  for c in s)
    return out or "∅"


# ---- Fig 2 / 10 / 12 / 13: token heatmap of D̄_t -------------------------------------------------------------

def heat_norm(dbar: Sequence[float]):
    """Log colour scale for D̄_t: three decades below the rollout's maximum (values below saturate pink)."""
    from matplotlib.colors import LogNorm

    d = np.asarray(dbar, dtype=float)
    vmax = float(max(d.max(initial=0.0), 1e-8))
    return LogNorm(vmin=vmax * 1e-3, vmax=vmax, clip=True)


def heat_colors(dbar: Sequence[float]) -> list[tuple[float, float, float, float]]:
    """RGBA per position on the PiYG map (pink = routine, green = critical), as in the paper's heatmaps."""
    import matplotlib

    norm, cmap = heat_norm(dbar), matplotlib.colormaps["PiYG"]
    return [cmap(norm(max(float(v), norm.vmin))) for v in dbar]


def _layout(tokens: Sequence[str], cols: int) -> list[tuple[int, int, str]]:
    """(row, col, shown text) per token on a character grid of width ``cols``; newline tokens end a line."""
    out, row, col = [], 0, 0
    for tok in tokens:
        shown = show_token(tok)
        width = len(shown)
        if col > 0 and col + width > cols:
            row, col = row + 1, 0
        out.append((row, col, shown))
        col += width
        if "\n" in tok:
            row, col = row + 1, 0
    return out


def heatmap_png(path, tokens: Sequence[str], dbar: Sequence[float], critical: Sequence[dict[str, Any]],
                title: str) -> None:
    """Token heatmap of D̄_t (top) and, per critical position, the explore/exploit candidates (panels below).

    critical: dicts with ``rank``, ``position``, ``token``, ``dbar`` and ``explore`` / ``exploit`` lists of
    ``{"token", "p_s", "p_t"}`` (the union-of-top-100 candidates with the largest P_S - P_T resp. P_T - P_S).
    """
    plt = _plt()
    import matplotlib
    from matplotlib.patches import Rectangle

    W, margin, fs = 13.0, 0.3, 9.0
    char_w, line_h = 0.602 * fs / 72, 2.2 * fs / 72  # DejaVu Sans Mono advance width; line pitch (inches)
    cols = int((W - 2 * margin) / char_w)
    cells = _layout(tokens, cols)
    n_rows = (cells[-1][0] + 1) if cells else 1
    title_h, text_h, cbar_h = 0.5, n_rows * line_h + 0.15, 0.75
    panel_h = 2.5 if critical else 0.0
    H = title_h + text_h + cbar_h + panel_h + 0.15
    fig = plt.figure(figsize=(W, H))

    def box(x, y_top, w, h):  # inches from the top-left corner -> figure fraction [l, b, w, h]
        return [x / W, (H - y_top - h) / H, w / W, h / H]

    fig.text(margin / W, 1 - 0.12 / H, title, fontsize=9.5, ha="left", va="top", wrap=True)
    ax = fig.add_axes(box(margin, title_h, cols * char_w, text_h))
    ax.set_xlim(0, cols)
    ax.set_ylim(n_rows + 0.05, 0.0)
    ax.axis("off")
    colors = heat_colors(dbar)
    crit_rank = {c["position"]: c["rank"] for c in critical}
    for t, (row, col, shown) in enumerate(cells):
        is_crit = t in crit_rank
        ax.add_patch(Rectangle((col, row + 0.25), len(shown), 0.7, facecolor=colors[t],
                               edgecolor="black" if is_crit else "none", linewidth=1.3 if is_crit else 0))
        ax.text(col, row + 0.6, shown, family="DejaVu Sans Mono", fontsize=fs, va="center", ha="left")
        if is_crit:
            ax.text(col, row + 0.22, str(crit_rank[t]), fontsize=6, fontweight="bold", va="bottom",
                    ha="left", color="black")
    cax = fig.add_axes(box(margin, title_h + text_h + 0.1, 3.5, 0.14))
    cb = fig.colorbar(matplotlib.cm.ScalarMappable(norm=heat_norm(dbar), cmap="PiYG"), cax=cax,
                      orientation="horizontal")
    cb.set_label("D̄_t = KL(P_S ‖ P_T), log scale (green = critical, pink = routine)", fontsize=7)
    cb.ax.tick_params(labelsize=6)
    n = max(len(critical), 1)
    col_w = (W - 2 * margin) / n
    for k, c in enumerate(critical):
        bax = fig.add_axes(box(margin + k * col_w + 0.85, title_h + text_h + cbar_h + 0.5, col_w - 1.1,
                               panel_h - 0.95))
        cands = [(cand, EXPLOIT_COLOR) for cand in c["exploit"][::-1]] + \
                [(cand, EXPLORE_COLOR) for cand in c["explore"][::-1]]
        gaps = [cand["p_s"] - cand["p_t"] for cand, _ in cands]
        y = np.arange(len(cands))
        bax.barh(y, gaps, color=[col for _, col in cands], height=0.7)
        bax.axvline(0, color="black", linewidth=0.6)
        lim = 1.6 * max([abs(g) for g in gaps] + [1e-3])
        bax.set_xlim(-lim, lim)
        bax.set_yticks(y, [repr(show_token(cand["token"])) for cand, _ in cands], fontsize=6.5,
                       family="DejaVu Sans Mono")
        for yy, (cand, _), g in zip(y, cands, gaps):
            bax.text(g + (0.03 * lim if g >= 0 else -0.03 * lim), yy, f"{cand['p_s']:.2f}/{cand['p_t']:.2f}",
                     fontsize=5.5, va="center", ha="left" if g >= 0 else "right", color="#333333")
        bax.tick_params(axis="x", labelsize=6)
        bax.set_title(f"#{c['rank']}  t={c['position']}  sampled {show_token(c['token'])!r}  D̄_t={c['dbar']:.3g}",
                      fontsize=7.5, loc="left")
        bax.set_xlabel("P_S − P_T  (labels: P_S/P_T)", fontsize=6.5)
    if critical:
        fig.text(margin / W, 1 - (title_h + text_h + cbar_h + 0.05) / H,
                 "candidates: union of student and teacher top-100; green = explore (D̂ > 0), "
                 "pink = exploit (D̂ < 0)", fontsize=7, ha="left", va="top", color="#333333")
    fig.savefig(path, format="png", dpi=130)
    plt.close(fig)


def heatmap_html(tokens: Sequence[str], values: dict[str, Sequence[float]], critical: Sequence[dict[str, Any]],
                 title: str, meta: dict[str, Any]) -> str:
    """A self-contained HTML page: every token shaded by D̄_t, hover shows its values; candidate tables below.

    values: per-position arrays ``dbar`` (D̄_t), ``dhat`` (D̂_t(y_t)), ``p_s`` and ``p_t`` (of the sampled token).
    """
    colors = heat_colors(values["dbar"])
    crit_rank = {c["position"]: c["rank"] for c in critical}
    spans = []
    for t, tok in enumerate(tokens):
        r, g, b, _ = colors[t]
        tip = (f"t={t}  token={show_token(tok)!r}\nD̄_t = KL(P_S‖P_T) = {values['dbar'][t]:.4g}\n"
               f"D̂_t(y_t) = {values['dhat'][t]:.4g}\nP_S(y_t) = {values['p_s'][t]:.4g}\n"
               f"P_T(y_t) = {values['p_t'][t]:.4g}")
        style = f"background:rgb({int(r * 255)},{int(g * 255)},{int(b * 255)})"
        cls = ' class="crit"' if t in crit_rank else ""
        label = f"<sup>{crit_rank[t]}</sup>" if t in crit_rank else ""
        text = html.escape(show_token(tok)).replace("↵", "↵<br>")
        spans.append(f'<span{cls} style="{style}" title="{html.escape(tip)}">{label}{text}</span>')
    tables = []
    for c in critical:
        rows = []
        for side, color in (("explore", EXPLORE_COLOR), ("exploit", EXPLOIT_COLOR)):
            for cand in c[side]:
                rows.append(f'<tr style="color:{color}"><td>{side}</td><td><code>{html.escape(repr(cand["token"]))}'
                            f'</code></td><td>{cand["p_s"]:.4g}</td><td>{cand["p_t"]:.4g}</td>'
                            f'<td>{cand["p_s"] - cand["p_t"]:+.4g}</td></tr>')
        tables.append(f"<h3>#{c['rank']}: position {c['position']}, sampled <code>{html.escape(repr(c['token']))}"
                      f"</code>, D̄_t = {c['dbar']:.4g}</h3><table><tr><th>direction</th><th>token</th><th>P_S</th>"
                      f"<th>P_T</th><th>P_S − P_T</th></tr>{''.join(rows)}</table>")
    meta_rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
                        for k, v in meta.items())
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 1em auto; }}
.traj {{ font-family: monospace; font-size: 14px; line-height: 1.9; white-space: pre-wrap; }}
.traj span {{ padding: 1px 0; }}
.traj span.crit {{ outline: 2px solid black; }}
sup {{ font-size: 9px; font-weight: bold; }}
table {{ border-collapse: collapse; margin-bottom: 1em; }} td, th {{ padding: 2px 8px; border: 1px solid #ccc; }}
</style></head><body>
<h2>{html.escape(title)}</h2>
<p>Each token is shaded by the position-level information asymmetry D̄<sub>t</sub> = KL(P<sub>S</sub> ‖ P<sub>T</sub>)
(RLRT Eq. 3; PiYG log scale, three decades below the maximum: green = critical, pink = routine). Hover a token
for D̄<sub>t</sub>, D̂<sub>t</sub>(y<sub>t</sub>) = log P<sub>S</sub>(y<sub>t</sub>) − log P<sub>T</sub>(y<sub>t</sub>) and
both probabilities. Outlined tokens are the top critical positions; their candidates (union of the student's and
teacher's top-100) are listed below.</p>
<table>{meta_rows}</table>
<div class="traj">{''.join(spans)}</div>
{''.join(tables)}
</body></html>
"""


# ---- Fig 3: explore/exploit marker volcano -------------------------------------------------------------------

def markers_png(path, df, z_threshold: float, note: str = "") -> None:
    """(a) volcano: x = log2(n_explore / n_exploit) (α-smoothed), y = log10 total count, one point per scored
    type; markers coloured (green explore, pink exploit), labelled. (b) z of each marker, exploit -> explore."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [1.1, 1]})
    if len(df):
        other = df[~df["marker"]]
        a.scatter(other["log2_ratio"], np.log10(other["total"]), s=14, color="#aaaaaa", label="other scored types")
        for _, r in other.iterrows():
            a.annotate(r["token"], (r["log2_ratio"], math.log10(r["total"])), fontsize=6, color="#888888",
                       xytext=(3, 2), textcoords="offset points")
        for direction, color in (("explore", EXPLORE_COLOR), ("exploit", EXPLOIT_COLOR)):
            m = df[df["marker"] & (df["direction"] == direction)]
            a.scatter(m["log2_ratio"], np.log10(m["total"]), s=28, color=color,
                      label=f"{direction} markers (|z| ≥ {z_threshold:g})")
            for _, r in m.iterrows():
                a.annotate(r["token"], (r["log2_ratio"], math.log10(r["total"])), fontsize=7, color=color,
                           xytext=(3, 2), textcoords="offset points")
        a.axvline(0, color="black", linewidth=0.5)
        a.legend(fontsize=7, loc="best")
    else:
        a.text(0.5, 0.5, "no token type reached the minimum count", ha="center", va="center",
               transform=a.transAxes)
    a.set_xlabel("polarization  log2(n_explore / n_exploit)")
    a.set_ylabel("log10(n_explore + n_exploit)")
    a.set_title("(a) explore/exploit volcano of scored token types", fontsize=10)
    m = df[df["marker"]].sort_values("z", kind="stable") if len(df) else df
    if len(m):
        colors = [EXPLORE_COLOR if z > 0 else EXPLOIT_COLOR for z in m["z"]]
        b.bar(np.arange(len(m)), m["z"], color=colors, width=0.7)
        b.set_xlim(-0.7, max(len(m), 8) - 0.3)
        b.set_xticks(np.arange(len(m)), m["token"], rotation=60, ha="right", fontsize=7)
        for s in (z_threshold, -z_threshold):
            b.axhline(s, color="black", linestyle=":", linewidth=0.6)
    else:
        b.text(0.5, 0.5, f"no marker passed |z| ≥ {z_threshold:g} and the stop list", ha="center", va="center",
               transform=b.transAxes)
    b.set_ylabel("smoothed log-odds z (Monroe et al., α = 0.5)")
    b.set_title("(b) per-marker polarization (exploit ← → explore)", fontsize=10)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="#444444")
    fig.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
    fig.savefig(path, format="png", dpi=130)
    plt.close(fig)


# ---- Fig 6: reflection injection -----------------------------------------------------------------------------

def reflection_png(path, flips, note: str = "") -> None:
    """(a) flip->R on the hard bin, (b) flip->W on the easy bin, against the checkpoint's RL step; one colour per
    run, one marker per injection position (■ max_kl, ● random, ▲ min_kl); error bars = binomial s.e."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    steps = sorted(set(flips["step"])) if len(flips) else [0]
    span = max(steps[-1] - steps[0], 1)
    lines = sorted(set(zip(flips["run"], flips["position"]))) if len(flips) else []
    dodge = {key: (k - (len(lines) - 1) / 2) * 0.012 * span for k, key in enumerate(lines)}  # overlapping points
    for ax, (b, metric) in zip(axes, (("hard", "flip->R"), ("easy", "flip->W"))):
        sub = flips[flips["bin"] == b] if len(flips) else flips
        drawn = False
        for (run, pos), g in (sub.groupby(["run", "position"], sort=True) if len(sub) else []):
            g = g.sort_values("step").dropna(subset=["rate"])
            if not len(g):
                continue
            ax.errorbar(g["step"] + dodge[(run, pos)], 100 * g["rate"], yerr=100 * g["se"], color=run_color(run),
                        marker=POSITION_MARKERS.get(pos, "x"), linestyle="-" if pos == "max_kl" else ":",
                        capsize=2, markersize=6, label=f"{run_label(run)} {pos}")
            drawn = True
        if not drawn:
            ax.text(0.5, 0.5, f"no {b} problem with a {'wrong' if b == 'hard' else 'right'} rollout",
                    ha="center", va="center", transform=ax.transAxes)
        else:
            ax.legend(fontsize=7, ncol=2)
        ax.set_xlabel("RL step of the checkpoint")
        ax.set_xticks(steps)
        ax.set_ylim(-4, 104)
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(f"({'a' if b == 'hard' else 'b'}) {metric} on the {b} subset", fontsize=10)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="#444444")
    fig.tight_layout(rect=(0, 0.05 if note else 0, 1, 1))
    fig.savefig(path, format="png", dpi=130)
    plt.close(fig)


# ---- Fig 7: distribution shift -------------------------------------------------------------------------------

def shift_png(path, results: dict[str, dict[str, Any]], grid: Sequence[float], ks: Sequence[int],
              prob_thresholds: Sequence[float], js_threshold: float, note: str = "") -> None:
    """(a) CCDF of JS(π_ft ‖ π_base) over positions, (b) top-k overlap at JS > threshold, (c) fraction of those
    positions whose fine-tuned top-1 token had base probability below each threshold; one line per run."""
    plt = _plt()
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(14, 4.2))
    styles = run_styles(results)
    for run, r in results.items():
        color, ls = run_color(run), styles[run]
        label = f"{run_label(run)} ({r['n_high']}/{r['n_positions']} pos. > {js_threshold:g})"
        cc = np.asarray(r["ccdf"], dtype=float)
        a.step(grid, np.where(cc > 0, cc, np.nan), where="post", color=color, linestyle=ls, label=label)
        ov = np.asarray(r["overlap"], dtype=float)
        if np.isfinite(ov).any():
            b.plot(ks, ov, color=color, linestyle=ls, marker="o", markersize=3, label=run_label(run))
        tf = np.asarray(r["tail"], dtype=float)
        if np.isfinite(tf).any():
            c.plot(prob_thresholds, tf, color=color, linestyle=ls, marker="o", markersize=3, label=run_label(run))
    a.axvline(js_threshold, color="black", linestyle="--", linewidth=0.8)
    a.set_xscale("log")
    a.set_yscale("log")
    # explicit limits: a run whose fine-tuned policy never left the base has no positive CCDF value to autoscale on
    n_max = max([r["n_positions"] for r in results.values()] + [1])
    a.set_xlim(float(grid[0]), float(grid[-1]) * 1.05)
    a.set_ylim(0.5 / n_max, 1.5)
    a.set_xlabel("x")
    a.set_ylabel("fraction of positions with JS > x")
    a.set_title("(a) CCDF of JS(π_ft ‖ π_base)", fontsize=10)
    a.legend(fontsize=7)
    for ax, what in ((b, "overlap"), (c, "tail")):
        if not ax.lines:
            ax.text(0.5, 0.5, f"no position has JS > {js_threshold:g}", ha="center", va="center",
                    transform=ax.transAxes)
        else:
            ax.legend(fontsize=7)
    b.set_xlabel("k")
    b.set_ylabel("|top-k(ft) ∩ top-k(base)| / k")
    b.set_ylim(0, 1.05)
    b.set_xlim(0.5, max(ks) + 0.5)
    b.set_xticks([k for k in ks if k == 1 or k % 5 == 0])
    b.set_title(f"(b) top-k overlap at JS > {js_threshold:g}", fontsize=10)
    c.set_xscale("log")
    c.set_xlim(max(prob_thresholds) * 2, min(prob_thresholds) / 2)  # inverted: deeper into the tail to the right
    c.set_xlabel("threshold on π_base(new top-1 token)")
    c.set_ylabel("fraction of high-divergence positions")
    c.set_ylim(0, 1.05)
    c.set_title("(c) how deep in the base's tail the new top-1 was", fontsize=10)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="#444444")
    fig.tight_layout(rect=(0, 0.05 if note else 0, 1, 1))
    fig.savefig(path, format="png", dpi=130)
    plt.close(fig)
