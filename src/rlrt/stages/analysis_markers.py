"""Stage: explore/exploit marker statistics (RLRT Appendix D, Table 2, Fig 3; Sec. 4.3).

A checkpoint samples ``n_rollouts`` responses for each of the first ``n_problems`` problems of a split; from every
problem with both outcomes the first correct and the first incorrect trajectory are kept. The teacher is the same
checkpoint with a correct solution in its prompt (``analysis.context``). At every position of the kept
trajectories ``argmax_v D̂_t(v)`` (over the whole vocabulary) joins the explore corpus and ``argmin_v D̂_t(v)`` the
exploit corpus; token types are scored with Monroe et al.'s smoothed log-odds z (α, Eq. 8), kept at
``|z| >= z_threshold``, and stop words (scikit-learn's English list + ``domain_stopwords``) are removed. With
``words_only`` a type must also be a whole word of the texts involved (rollouts, prompts, teacher contexts), so
BPE fragments of the tiny vocabulary (``wri`` of ``write``) are not read as markers.

Outputs: Table 2 (markers, CSV and Markdown), Fig 3 (volcano + per-marker polarization), every scored type (CSV)
and a JSON summary with the corpus sizes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from rlrt.analysis import plots
from rlrt.analysis.divergence import extreme_tokens
from rlrt.analysis.markers import markers_markdown, score_tokens, stop_words, text_words
from rlrt.analysis.views import (load_model, pair_position_stats, sample_groups, student_prompt, teacher_context,
                                 teacher_prompt)
from rlrt.backends.local.model import seed_everything
from rlrt.io import atomic_path, read_problems, write_json, write_text
from rlrt.stages.common import parse, parser
from rlrt.tasks.grading import Grader
from rlrt.tasks.prompts import user_message
from rlrt.teacher import REFERENCE_TEMPLATE, SIBLING_TEMPLATE

log = logging.getLogger("rlrt.analysis.markers")


def choose_pairs(correct: np.ndarray) -> list[tuple[int, int, int]]:
    """(problem, first correct rollout, first incorrect rollout) for every problem with both outcomes."""
    return [(g, int(np.argmax(row == 1)), int(np.argmax(row == 0)))
            for g, row in enumerate(correct) if row.any() and not row.all()]


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--model", required=True, help="checkpoint folder studied (student and teacher)")
    p.add_argument("--data", required=True, help="jsonl split the problems come from")
    p.add_argument("--out-csv", required=True, help="Table 2: the markers")
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-png", required=True, help="Fig 3")
    p.add_argument("--out-scores", required=True, help="every scored token type (CSV)")
    p.add_argument("--out-json", required=True)
    args, cfg = parse(p, argv)
    seed = int(cfg["seed"])
    seed_everything(seed)
    m = cfg["markers"]
    model, tok = load_model(args.model, cfg.get("device"))
    rows = read_problems(args.data)[: int(m["n_problems"])]
    with Grader(workers=int(cfg.get("grader_workers", 1))) as grader:
        groups = sample_groups(model, tok, rows, int(m["n_rollouts"]), int(cfg["max_new_tokens"]), cfg["sampling"],
                               seed, grader.grade_batch, batch_size=int(cfg["batch_size"]), progress=True,
                               template_kwargs=cfg.get("chat_template_kwargs"))
    pairs = choose_pairs(groups.correct)
    picks = [(g, i) for g, ic, iw in pairs for i in (ic, iw)]
    contexts = [teacher_context(groups, g, i, cfg["context"], Path(args.data).stem) for g, i in picks]
    kw = cfg.get("chat_template_kwargs")  # the backbone's chat-template variables (none by default)
    temperature = float(cfg["temperature"])

    def fn(ls: torch.Tensor, lt: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        explore, exploit = extreme_tokens(ls, lt, temperature)
        return {"explore": explore, "exploit": exploit}

    stats = pair_position_stats(
        model, [student_prompt(tok, rows[g]["question"], kw) for g, _ in picks],
        model, [teacher_prompt(tok, rows[g]["question"], c, kind, kw) for (g, _), (c, kind) in zip(picks, contexts)],
        [groups.response(g, i) for g, i in picks], fn, pad_id=tok.pad_token_id, chunk=int(cfg["position_chunk"]),
        micro_batch=int(cfg["micro_batch"]))
    ids = {int(v) for st in stats for key in ("explore", "exploit") for v in st[key]}
    text_of = {v: tok.decode([v], skip_special_tokens=False) for v in ids}  # only the ids that occur
    explore = [text_of[int(v)] for st in stats for v in st["explore"]]
    exploit = [text_of[int(v)] for st in stats for v in st["exploit"]]
    stop = stop_words(m["domain_stopwords"])
    # whole words of everything the model reads and writes here: rollouts, prompts, teacher contexts
    words = text_words(list(groups.rollouts.texts) + [user_message(r["question"]) for r in rows]
                       + [c for c, _ in contexts] + [SIBLING_TEMPLATE, REFERENCE_TEMPLATE])
    df = score_tokens(explore, exploit, alpha=float(m["alpha"]), min_count=int(m["min_count"]),
                      z_threshold=float(m["z_threshold"]), stopwords=stop, min_chars=int(m["min_chars"]),
                      max_chars=int(m["max_chars"]), words=words if m["words_only"] else None)
    markers = df[df["marker"]] if len(df) else df
    with atomic_path(args.out_scores) as tmp:
        df.to_csv(tmp, index=False)
    with atomic_path(args.out_csv) as tmp:
        markers.drop(columns=["stopword", "marker"]).to_csv(tmp, index=False)
    n_pos = len(explore)
    summary = (f"{cfg['backbone']} ({cfg['run']}), {len(pairs)} problems with a correct and an incorrect "
               f"trajectory of {len(rows)} ({int(m['n_rollouts'])} rollouts each), {n_pos} positions; "
               f"{len(df)} token types with >= {m['min_count']} occurrences, {len(markers)} markers "
               f"(|z| >= {m['z_threshold']}, stop words removed).")
    caption = ("Table 2 (embedded): explore/exploit markers, ranked by |z| within each category; z > 0 = "
               "teacher-suppressed (explore), z < 0 = teacher-favoured (exploit). " + summary)
    write_text(args.out_md, markers_markdown(df, caption))
    with atomic_path(args.out_png) as tmp:
        plots.markers_png(tmp, df, float(m["z_threshold"]), note=summary)
    kinds = [k for _, k in contexts]
    result = {
        "backbone": cfg["backbone"], "run": cfg["run"], "n_problems": len(rows), "n_pairs": len(pairs),
        "n_positions": n_pos, "n_scored": len(df), "n_markers": int(len(markers)),
        "n_explore_markers": int((markers["direction"] == "explore").sum()) if len(markers) else 0,
        "n_exploit_markers": int((markers["direction"] == "exploit").sum()) if len(markers) else 0,
        "context_kinds": {k: kinds.count(k) for k in sorted(set(kinds))}, "solve_rate": float(groups.correct.mean()),
        "n_stopwords": len(stop), "settings": m,
    }
    write_json(args.out_json, result)
    log.info(summary)
    from rlrt.tracking import log_run

    log_run(cfg.get("tracking"), f"analysis/markers/{cfg['backbone']}/{cfg['run']}",
            {"stage": "analysis", "analysis": "markers", "backbone": cfg["backbone"], "run": cfg["run"],
             "seed": str(seed), "method": cfg["run"]}, {k: v for k, v in cfg.items() if k != "tracking"}, [],
            {k: v for k, v in result.items() if isinstance(v, (int, float))},
            artifacts=[args.out_json, args.out_csv, args.out_png])


if __name__ == "__main__":
    main()
