"""Stage: reflection injection across RL checkpoints (RLRT Sec. 6.2, Fig 6).

Checkpoints: step 0 (the untrained backbone), the intermediate ``step_<k>`` folders the ``rl`` rule saved
(``rl.save_steps``) and the final model (step ``rl.steps``), for every run in ``analysis.reflection.runs``.
For each checkpoint: sample ``n_rollouts`` responses for each of the first ``n_problems`` problems of a split and
bin the problems by the checkpoint's own success count before injection (``hard`` / ``easy`` inclusive ranges;
paper: 0-2 and 5-7 of 8). From each hard problem up to ``rollouts_per_problem`` wrong rollouts, from each easy one
up to ``rollouts_per_problem`` right rollouts are injected. The teacher is the same checkpoint with a correct
solution in its prompt (``analysis.context``; a hard problem with no correct rollout gets the dataset solution);
D̄_t = KL(P_S ‖ P_T) picks ``max_kl`` / ``min_kl``, ``random`` is uniform. The reflection string
(``analysis.reflection.text``; paper: "Wait, let me reconsider.") is inserted before the chosen token, the
checkpoint continues (up to the backbone's ``max_response_length`` new tokens, same sampling settings) and the
new response is graded. flip->R (hard) and flip->W (easy) per (run, step, position) go to a CSV and Fig 6.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rlrt.analysis import plots
from rlrt.analysis.divergence import position_asymmetry
from rlrt.analysis.injection import POSITIONS, bin_problem, choose_positions, flip_table, inject
from rlrt.analysis.views import (generate_from_ids, load_model, pair_position_stats, sample_groups, student_prompt,
                                 teacher_context, teacher_prompt)
from rlrt.backends.local.model import seed_everything
from rlrt.io import atomic_path, read_problems, write_json
from rlrt.progress import progress
from rlrt.stages.common import parse, parser
from rlrt.tasks.grading import Grader

log = logging.getLogger("rlrt.analysis.reflection")


def checkpoint_list(base: str, runs: list[str], models: list[str], ckpt_dirs: list[str],
                    final_step: int) -> list[tuple[str, int, str]]:
    """``(run, step, folder)``: step 0 once (run ``base``), then each run's ``step_<k>`` folders and final model."""
    out = [("base", 0, base)]
    for run, model, ckpts in zip(runs, models, ckpt_dirs):
        steps = sorted(int(d.name.split("_", 1)[1]) for d in Path(ckpts).glob("step_*")
                       if d.is_dir() and d.name.split("_", 1)[1].isdigit())
        out += [(run, k, str(Path(ckpts) / f"step_{k}")) for k in steps if 0 < k < final_step]
        out.append((run, final_step, model))
    return out


def inject_checkpoint(model, tok, rows, cfg: dict, grade_fn, seed: int, rng: np.random.Generator) -> tuple[list[dict], dict]:
    """Sample, bin, inject at the three positions and grade the continuations for one checkpoint.

    Returns one record per injected continuation (bin, position, t, D̄_t, before, after, text) and a summary.
    """
    r = cfg["reflection"]
    kw = cfg.get("chat_template_kwargs")  # the backbone's chat-template variables (none by default)
    groups = sample_groups(model, tok, rows, int(r["n_rollouts"]), int(cfg["max_new_tokens"]), cfg["sampling"], seed,
                           grade_fn, batch_size=int(cfg["batch_size"]), template_kwargs=kw)
    targets = []
    bins = {"hard": 0, "easy": 0}
    for g, row in enumerate(groups.correct):
        b = bin_problem(int(row.sum()), r["hard"], r["easy"])
        if b is None:
            continue
        bins[b] += 1
        want = 0 if b == "hard" else 1
        for i in [i for i in range(groups.n) if row[i] == want][: int(r["rollouts_per_problem"])]:
            targets.append((g, i, b))
    summary = {"accuracy": float(groups.correct.mean()), "n_hard": bins["hard"], "n_easy": bins["easy"],
               "n_targets": len(targets)}
    if not targets:
        return [], summary
    contexts = [teacher_context(groups, g, i, cfg["context"], r.get("split", "train")) for g, i, _ in targets]
    responses = [groups.response(g, i) for g, i, _ in targets]
    prompts = [student_prompt(tok, rows[g]["question"], kw) for g, _, _ in targets]
    temperature = float(cfg["temperature"])
    dbars = pair_position_stats(
        model, prompts, model,
        [teacher_prompt(tok, rows[g]["question"], c, kind, kw) for (g, _, _), (c, kind) in zip(targets, contexts)],
        responses, lambda ls, lt, ids: {"dbar": position_asymmetry(ls, lt, temperature)}, pad_id=tok.pad_token_id,
        chunk=int(cfg["position_chunk"]), micro_batch=int(cfg["micro_batch"]))
    reflection = tok(r["text"], add_special_tokens=False)["input_ids"]
    records, seqs = [], []
    for (g, i, b), resp, prompt, st in zip(targets, responses, prompts, dbars):
        for name, t in choose_positions(st["dbar"], rng).items():
            injected = inject(resp, t, reflection)
            seqs.append(prompt + injected)
            records.append({"problem": rows[g].get("id", g), "rollout": i, "bin": b, "position": name, "t": t,
                            "length": len(resp), "dbar_t": float(st["dbar"][t]), "before": int(groups.correct[g, i]),
                            "answer": rows[g]["answer"], "_injected": injected})
    conts = generate_from_ids(model, tok, seqs, int(cfg["max_new_tokens"]), cfg["sampling"], seed,
                              batch_size=int(cfg["batch_size"]))
    texts = [tok.decode(rec.pop("_injected") + cont, skip_special_tokens=True) for rec, cont in zip(records, conts)]
    after = grade_fn(texts, [rec["answer"] for rec in records])
    for rec, text, a in zip(records, texts, after):
        rec["after"] = int(a > 0.5)
        rec["text"] = text
    return records, summary


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--base", required=True, help="step-0 checkpoint (the untrained backbone)")
    p.add_argument("--models", nargs="+", required=True, help="final model of each run (analysis.reflection.runs)")
    p.add_argument("--checkpoints", nargs="+", required=True, help="intermediate-checkpoint folder of each run")
    p.add_argument("--data", required=True, help="jsonl split the problems come from")
    p.add_argument("--out-png", required=True, help="Fig 6")
    p.add_argument("--out-flips", required=True, help="flip rates (CSV)")
    p.add_argument("--out-records", required=True, help="one row per injected continuation (CSV)")
    p.add_argument("--out-json", required=True)
    args, cfg = parse(p, argv)
    seed = int(cfg["seed"])
    seed_everything(seed)
    r = cfg["reflection"]
    runs = list(r["runs"])
    if not len(runs) == len(args.models) == len(args.checkpoints):
        raise SystemExit("need one --models and one --checkpoints folder per run of analysis.reflection.runs")
    rows = read_problems(args.data)[: int(r["n_problems"])]
    ckpts = checkpoint_list(args.base, runs, args.models, args.checkpoints, int(cfg["rl_steps"]))
    all_records, summaries = [], []
    with Grader(workers=int(cfg.get("grader_workers", 1))) as grader:
        for k, (run, step, folder) in enumerate(progress(ckpts, desc="checkpoints", unit="ckpt")):
            model, tok = load_model(folder, cfg.get("device"))
            torch.manual_seed(seed)
            rng = np.random.default_rng([seed, k])
            records, summary = inject_checkpoint(model, tok, rows, cfg, grader.grade_batch, seed, rng)
            for rec in records:
                rec.update(run=run, step=step)
            all_records += records
            summaries.append({"run": run, "step": step, **summary})
            log.info("%s step %d: accuracy %.3f, %d hard / %d easy problems, %d injected rollouts", run, step,
                     summary["accuracy"], summary["n_hard"], summary["n_easy"], summary["n_targets"])
    cols = ["run", "step", "problem", "rollout", "bin", "position", "t", "length", "dbar_t", "before", "after",
            "answer", "text"]
    rec_df = pd.DataFrame(all_records, columns=cols)
    # step 0 is shared: every run's curve starts from the untrained backbone
    per_run = pd.concat([rec_df[rec_df["run"] != "base"]]
                        + [rec_df[rec_df["run"] == "base"].assign(run=run) for run in runs], ignore_index=True)
    flips = flip_table(per_run)
    with atomic_path(args.out_records) as tmp:
        rec_df.to_csv(tmp, index=False)
    with atomic_path(args.out_flips) as tmp:
        flips.to_csv(tmp, index=False)
    note = (f"{cfg['backbone']}: {len(rows)} problems x {r['n_rollouts']} rollouts per checkpoint; hard = "
            f"{r['hard'][0]}-{r['hard'][1]}, easy = {r['easy'][0]}-{r['easy'][1]} correct; up to "
            f"{r['rollouts_per_problem']} rollouts per problem injected with {r['text']!r}; "
            f"solid = max_kl, dotted = random / min_kl")
    with atomic_path(args.out_png) as tmp:
        plots.reflection_png(tmp, flips, note=note)
    write_json(args.out_json, {"backbone": cfg["backbone"], "runs": runs, "positions": list(POSITIONS),
                               "checkpoints": summaries, "flips": flips.to_dict(orient="records"), "settings": r})
    from rlrt.tracking import log_run

    final = {f"{row.run}/step{row.step}/{row.metric}/{row.position}": row.rate
             for row in flips.itertuples() if np.isfinite(row.rate)}
    log_run(cfg.get("tracking"), f"analysis/reflection/{cfg['backbone']}",
            {"stage": "analysis", "analysis": "reflection", "backbone": cfg["backbone"], "seed": str(seed),
             "method": ",".join(runs)},
            {k: v for k, v in cfg.items() if k != "tracking"}, [], final,
            artifacts=[args.out_json, args.out_flips, args.out_png])


if __name__ == "__main__":
    main()
