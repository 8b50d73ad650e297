"""Stage: asymmetry heatmaps of chosen rollouts (RLRT Figs 2, 10, 12, 13; Sec. 4.1, App. E, H).

A checkpoint samples ``n_rollouts`` responses for each of the first ``n_problems`` problems of a split. The
chosen rollouts are the first correct rollout of the first ``n_examples`` problems that have one (then, if too
few problems were solved, the first rollout of the remaining problems). The teacher is the same checkpoint with a
correct solution in its prompt (``analysis.context``: another correct rollout of the problem, else the dataset's
reference solution). For every position: D̄_t = KL(P_S ‖ P_T) over the full vocabulary, D̂_t(y_t), P_S(y_t),
P_T(y_t); at the ``n_critical`` positions of largest D̄_t, the union of the two top-``candidates_top`` lists and
the ``candidates_show`` tokens with the largest P_S − P_T (explore) and P_T − P_S (exploit).

Outputs: one PNG and one self-contained HTML heatmap per chosen rollout, and a JSON with every value.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from rlrt.analysis import plots
from rlrt.analysis.divergence import explore_exploit_candidates, log_probs, position_asymmetry
from rlrt.analysis.views import (load_model, pair_position_stats, sample_groups, student_prompt, teacher_context,
                                 teacher_prompt)
from rlrt.backends.local.model import seed_everything
from rlrt.io import atomic_path, read_problems, write_json, write_text
from rlrt.stages.common import parse, parser
from rlrt.tasks.grading import Grader

log = logging.getLogger("rlrt.analysis.heatmaps")


def choose_rollouts(correct: np.ndarray, n_examples: int) -> list[tuple[int, int]]:
    """(problem, rollout) pairs: the first correct rollout of the first problems that have one, then rollout 0
    of the remaining problems, ``n_examples`` in all (fewer only if there are fewer problems)."""
    picks = [(g, int(np.argmax(row))) for g, row in enumerate(correct) if row.any()][:n_examples]
    used = {g for g, _ in picks}
    picks += [(g, 0) for g in range(len(correct)) if g not in used][: n_examples - len(picks)]
    return picks


def position_values(temperature: float, top: int, show: int):
    """The reduction handed to ``pair_position_stats``: student logits a, teacher logits b, sampled ids."""

    def fn(ls: torch.Tensor, lt: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        lp_s = log_probs(ls, temperature).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
        lp_t = log_probs(lt, temperature).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
        out = {"dbar": position_asymmetry(ls, lt, temperature), "dhat": lp_s - lp_t, "p_s": lp_s.exp(),
               "p_t": lp_t.exp()}
        out.update(explore_exploit_candidates(ls, lt, top=top, show=show, temperature=temperature))
        return out

    return fn


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--model", required=True, help="checkpoint folder studied (student and teacher)")
    p.add_argument("--data", required=True, help="jsonl split the problems come from")
    p.add_argument("--out-png", nargs="+", required=True)
    p.add_argument("--out-html", nargs="+", required=True)
    p.add_argument("--out-json", required=True)
    args, cfg = parse(p, argv)
    seed = int(cfg["seed"])
    seed_everything(seed)
    h = cfg["heatmaps"]
    if len(args.out_png) != len(args.out_html) or len(args.out_png) != int(h["n_examples"]):
        raise SystemExit("need one --out-png and one --out-html per example (analysis.heatmaps.n_examples)")
    model, tok = load_model(args.model, cfg.get("device"))
    rows = read_problems(args.data)[: int(h["n_problems"])]
    with Grader(workers=int(cfg.get("grader_workers", 1))) as grader:
        groups = sample_groups(model, tok, rows, int(h["n_rollouts"]), int(cfg["max_new_tokens"]), cfg["sampling"],
                               seed, grader.grade_batch, batch_size=int(cfg["batch_size"]),
                               template_kwargs=cfg.get("chat_template_kwargs"))
    picks = choose_rollouts(groups.correct, int(h["n_examples"]))
    if len(picks) < int(h["n_examples"]):
        raise SystemExit(f"only {len(picks)} problems for {h['n_examples']} examples: raise n_problems")
    contexts = [teacher_context(groups, g, i, cfg["context"], Path(args.data).stem) for g, i in picks]
    kw = cfg.get("chat_template_kwargs")  # the backbone's chat-template variables (none by default)
    responses = [groups.response(g, i) for g, i in picks]
    temperature = float(cfg["temperature"])
    stats = pair_position_stats(
        model, [student_prompt(tok, rows[g]["question"], kw) for g, _ in picks],
        model, [teacher_prompt(tok, rows[g]["question"], c, kind, kw) for (g, _), (c, kind) in zip(picks, contexts)],
        responses, position_values(temperature, int(h["candidates_top"]), int(h["candidates_show"])),
        pad_id=tok.pad_token_id, chunk=int(cfg["position_chunk"]), micro_batch=int(cfg["micro_batch"]))

    def token(i: int) -> str:
        return tok.decode([int(i)], skip_special_tokens=False)

    examples = []
    for k, ((g, i), (ctx, kind), resp, st) in enumerate(zip(picks, contexts, responses, stats)):
        order = np.argsort(-st["dbar"], kind="stable")[: int(h["n_critical"])]
        critical = []
        for rank, t in enumerate(order, start=1):
            cand = {side: [{"token": token(v), "id": int(v), "p_s": float(ps), "p_t": float(pt)}
                           for v, ps, pt in zip(st[f"{side}_ids"][t], st[f"{side}_ps"][t], st[f"{side}_pt"][t])
                           if v >= 0] for side in ("explore", "exploit")}
            critical.append({"rank": rank, "position": int(t), "token": token(resp[t]), "dbar": float(st["dbar"][t]),
                             **cand})
        tokens = [token(v) for v in resp]
        ex = {
            "problem": rows[g].get("id", g), "question": rows[g]["question"], "answer": rows[g]["answer"],
            "rollout": i, "correct": bool(groups.correct[g, i]), "context_kind": kind, "context": ctx,
            "tokens": tokens, "ids": resp,
            **{key: st[key].astype(float).tolist() for key in ("dbar", "dhat", "p_s", "p_t")},
            "critical": critical,
        }
        examples.append(ex)
        verdict = "correct" if ex["correct"] else "incorrect"
        title = (f"{cfg['backbone']} ({cfg['run']}): {rows[g]['question']}  rollout {i} ({verdict}); teacher "
                 f"context: {kind}  |  D̄_t mean {np.mean(st['dbar']):.3g}, max {np.max(st['dbar']):.3g}")
        with atomic_path(args.out_png[k]) as tmp:
            plots.heatmap_png(tmp, tokens, st["dbar"], critical, title)
        meta = {"backbone": cfg["backbone"], "run": cfg["run"], "question": rows[g]["question"],
                "answer": rows[g]["answer"], "rollout": f"{i} ({verdict})", "teacher context kind": kind,
                "teacher context": ctx, "temperature": temperature}
        write_text(args.out_html[k], plots.heatmap_html(tokens, ex, critical, title, meta))
        log.info("example %d: problem %s rollout %d (%s), %d tokens, D̄ max %.3g at t=%d", k + 1, ex["problem"], i,
                 verdict, len(tokens), float(np.max(st["dbar"])), int(order[0]))
    write_json(args.out_json, {"backbone": cfg["backbone"], "run": cfg["run"], "context": cfg["context"],
                               "temperature": temperature, "sampling": cfg["sampling"],
                               "solve_rate": float(groups.correct.mean()), "examples": examples})
    from rlrt.tracking import log_run

    all_dbar = np.concatenate([s["dbar"] for s in stats])
    final = {"dbar_mean": float(all_dbar.mean()), "dbar_max": float(all_dbar.max()),
             "dbar_top1pct_share": float(np.sort(all_dbar)[::-1][: max(1, len(all_dbar) // 100)].sum()
                                         / max(all_dbar.sum(), 1e-12)),
             "solve_rate": float(groups.correct.mean())}
    log_run(cfg.get("tracking"), f"analysis/heatmaps/{cfg['backbone']}/{cfg['run']}",
            {"stage": "analysis", "analysis": "heatmaps", "backbone": cfg["backbone"], "run": cfg["run"],
             "seed": str(seed), "method": cfg["run"]}, {k: v for k, v in cfg.items() if k != "tracking"}, [], final,
            artifacts=[args.out_json, *args.out_png])


if __name__ == "__main__":
    main()
