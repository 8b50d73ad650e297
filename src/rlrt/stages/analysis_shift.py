"""Stage: token-level distribution shift of fine-tuned policies against the base (RLRT Sec. 6.3, Fig 7).

Hard prompts, as in the paper: the base checkpoint samples ``n_base_rollouts`` responses for each of the first
``n_candidates`` problems of a split, and the problems it solves at most ``max_correct`` times are kept (the first
``n_prompts`` of them). Each fine-tuned run (``analysis.shift.runs``, final models) samples ``n_rollouts``
responses per hard prompt; at every position of those rollouts both policies see the same prefix and the stage
records JS(π_ft ‖ π_base) (nats), the top-k overlap for k = 1..``max_k`` and the base probability of π_ft's
top-1 token. Fig 7: (a) CCDF of JS over all positions, (b) mean top-k overlap and (c) the fraction whose new
top-1 had base probability below each of ``tail_thresholds``, both over positions with JS > ``js_threshold``.
"""

from __future__ import annotations

import logging

import numpy as np

from rlrt.analysis import plots
from rlrt.analysis.shift import ccdf, overlap_curve, position_stats, tail_fractions
from rlrt.analysis.views import load_model, pair_position_stats, sample_groups, student_prompt
from rlrt.backends.local.model import seed_everything
from rlrt.io import atomic_path, read_problems, write_json
from rlrt.progress import progress
from rlrt.stages.common import parse, parser
from rlrt.tasks.grading import Grader

log = logging.getLogger("rlrt.analysis.shift")


def js_grid(points: int = 81) -> np.ndarray:
    """x values of the CCDF: log-spaced from 1e-5 to ln 2 (the largest JS in nats)."""
    return np.logspace(-5, np.log10(np.log(2.0)), points)


def per_prompt_shift(stats: list[dict], prompt_of: list[int], n_prompts: int, threshold: float,
                     probs: list[float]) -> dict:
    """Per prompt, over its rollouts' positions with JS > ``threshold``: ``overlap_k`` (the mean top-K overlap at
    the largest k), ``tail`` (per threshold of ``probs``, the fraction whose new top-1 had base probability below
    it) and ``n_high``; NaN where a prompt has no such position. ``stats[i]`` is pick i's per-position arrays,
    ``prompt_of[i]`` its prompt."""
    out = {"overlap_k": [], "tail": [], "n_high": []}
    for g in range(n_prompts):
        mine = [st for st, p in zip(stats, prompt_of) if p == g]
        js = np.concatenate([st["js"] for st in mine]) if mine else np.zeros(0)
        ov = np.concatenate([st["overlap"] for st in mine]) if mine else np.zeros((0, 1))
        top1 = np.concatenate([st["top1_base_prob"] for st in mine]) if mine else np.zeros(0)
        out["overlap_k"].append(float(overlap_curve(ov, js, threshold)[-1]) if len(js) else float("nan"))
        out["tail"].append(tail_fractions(top1, js, threshold, probs).tolist())
        out["n_high"].append(int((js > threshold).sum()))
    return out


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--base", required=True, help="base checkpoint (π_base)")
    p.add_argument("--models", nargs="+", required=True, help="final model of each run (analysis.shift.runs)")
    p.add_argument("--data", required=True, help="jsonl split the candidate problems come from")
    p.add_argument("--out-png", required=True, help="Fig 7")
    p.add_argument("--out-json", required=True)
    args, cfg = parse(p, argv)
    seed = int(cfg["seed"])
    seed_everything(seed)
    s = cfg["shift"]
    runs = list(s["runs"])
    if len(runs) != len(args.models):
        raise SystemExit("need one --models folder per run of analysis.shift.runs")
    base, tok = load_model(args.base, cfg.get("device"))
    rows = read_problems(args.data)[: int(s["n_candidates"])]
    threshold, max_k = float(s["js_threshold"]), int(s["max_k"])
    probs = [float(x) for x in s["tail_thresholds"]]
    grid = js_grid()
    temperature = float(cfg["temperature"])
    results = {}
    with Grader(workers=int(cfg.get("grader_workers", 1))) as grader:
        screen = sample_groups(base, tok, rows, int(s["n_base_rollouts"]), int(cfg["max_new_tokens"]),
                               cfg["sampling"], seed, grader.grade_batch, batch_size=int(cfg["batch_size"]),
                               template_kwargs=cfg.get("chat_template_kwargs"))
        hard = [rows[g] for g in range(len(rows)) if screen.correct[g].sum() <= int(s["max_correct"])]
        hard = hard[: int(s["n_prompts"])]
        log.info("%d of %d candidate problems are hard for the base (<= %d of %d correct); using %d", len(
            [1 for g in range(len(rows)) if screen.correct[g].sum() <= int(s["max_correct"])]), len(rows),
            s["max_correct"], s["n_base_rollouts"], len(hard))
        if not hard:
            raise SystemExit("no hard prompt: raise analysis.shift.n_candidates or max_correct")
        prompts = [student_prompt(tok, r["question"], cfg.get("chat_template_kwargs")) for r in hard]
        for run, folder in zip(progress(runs, desc="runs", unit="run"), args.models):
            ft, _ = load_model(folder, cfg.get("device"))
            groups = sample_groups(ft, tok, hard, int(s["n_rollouts"]), int(cfg["max_new_tokens"]), cfg["sampling"],
                                   seed, grader.grade_batch, batch_size=int(cfg["batch_size"]),
                                   template_kwargs=cfg.get("chat_template_kwargs"))
            picks = [(g, i) for g in range(len(hard)) for i in range(groups.n)]
            stats = pair_position_stats(
                ft, [prompts[g] for g, _ in picks], base, [prompts[g] for g, _ in picks],
                [groups.response(g, i) for g, i in picks],
                lambda la, lb, ids: position_stats(la, lb, max_k=max_k, temperature=temperature),
                pad_id=tok.pad_token_id, chunk=int(cfg["position_chunk"]), micro_batch=int(cfg["micro_batch"]))
            js = np.concatenate([st["js"] for st in stats])
            overlap = np.concatenate([st["overlap"] for st in stats])
            top1 = np.concatenate([st["top1_base_prob"] for st in stats])
            results[run] = {
                "n_positions": int(len(js)), "n_high": int((js > threshold).sum()),
                "frac_high": float((js > threshold).mean()), "js_mean": float(js.mean()),
                "js_quantiles": {str(q): float(np.quantile(js, q)) for q in (0.5, 0.9, 0.99)},
                "ccdf": ccdf(js, grid).tolist(), "overlap": overlap_curve(overlap, js, threshold).tolist(),
                "tail": tail_fractions(top1, js, threshold, probs).tolist(),
                "accuracy_on_hard": float(groups.correct.mean()),
                # per hard prompt (its rollouts' positions pooled): what the claims table compares between runs
                "per_prompt": per_prompt_shift(stats, [g for g, _ in picks], len(hard), threshold, probs),
            }
            log.info("%s: %d positions, %d with JS > %g, mean JS %.4f, accuracy on hard prompts %.3f", run,
                     len(js), results[run]["n_high"], threshold, js.mean(), results[run]["accuracy_on_hard"])
    ks = list(range(1, max_k + 1))
    note = (f"{cfg['backbone']}: {len(hard)} hard prompts (base solves <= {s['max_correct']} of "
            f"{s['n_base_rollouts']}), {s['n_rollouts']} fine-tuned rollouts each; JS in nats")
    with atomic_path(args.out_png) as tmp:
        plots.shift_png(tmp, results, grid, ks, probs, threshold, note=note)
    write_json(args.out_json, {"backbone": cfg["backbone"], "runs": runs, "n_hard_prompts": len(hard),
                               "hard_problems": [r.get("id", r["question"]) for r in hard], "grid": grid.tolist(),
                               "ks": ks, "tail_thresholds": probs, "js_threshold": threshold, "results": results,
                               "settings": s})
    from rlrt.tracking import log_run

    final = {f"{run}/{k}": v for run, r in results.items()
             for k, v in r.items() if isinstance(v, (int, float)) and np.isfinite(v)}
    log_run(cfg.get("tracking"), f"analysis/shift/{cfg['backbone']}",
            {"stage": "analysis", "analysis": "shift", "backbone": cfg["backbone"], "seed": str(seed),
             "method": ",".join(runs)},
            {k: v for k, v in cfg.items() if k != "tracking"}, [], final, artifacts=[args.out_json, args.out_png])


if __name__ == "__main__":
    main()
