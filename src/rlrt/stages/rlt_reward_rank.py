"""Stage: the reward-rank study's datasets (RLT paper Sec. 4.5).

The teacher *before RL* (its SFT warm-up) writes ``ranks`` explanations per (question, solution); the frozen
reward student scores each with the RLT reward; within each question they are sorted, and dataset ``r`` takes the
rank-r explanation of every question (r = 1 the lowest reward, r = ranks the highest). One student is then
distilled per dataset (rules/rlt.smk) and the figure correlates rank with student accuracy.
A question with any completion lacking the format tags (reward -1, no explanation to distil) is left out of
every dataset and counted (``dropped_questions``), so all K datasets hold the same questions.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from rlrt.backends.local.model import load_checkpoint, seed_everything
from rlrt.backends.local.rlt import score_explanations, write_explanations
from rlrt.io import read_jsonl, write_json, write_jsonl
from rlrt.stages.common import parse, parser
from rlrt.tasks.rlt_format import parse_explanation, student_text

log = logging.getLogger("rlrt.rlt_reward_rank")


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--teacher", required=True, help="the pre-RL (SFT) teacher")
    p.add_argument("--student", required=True, help="the frozen reward student")
    p.add_argument("--data", required=True, help="questions.jsonl")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--summary", required=True)
    args, cfg = parse(p, argv)
    seed = int(cfg["seed"])
    seed_everything(seed)
    rr = cfg["reward_rank"]
    K = int(rr["ranks"])
    rows = read_jsonl(args.data)[: int(rr["n_questions"])]
    rep = [r for r in rows for _ in range(K)]
    if cfg.get("backend", "local") == "verl":  # paper scale: vLLM candidates, the same reward on the GPU
        from rlrt.backends.verl.rlt_generate import completions_in_subprocess
        from rlrt.backends.verl.rlt_scorer import RLTRewardSettings, RLTScorer

        # vLLM in a process of its own that has exited (freeing the GPU) before the two HF models load here
        completions = completions_in_subprocess(args.teacher, rows, K, int(cfg["max_new_tokens"]),
                                                float(cfg["temperature"]), seed, int(cfg.get("gpus") or 1),
                                                work_dir=f"{args.out_dir}.work")
        settings = RLTRewardSettings(alpha=float(cfg["alpha"]), lam=float(cfg["lam"]),
                                     temperature=float(cfg["reward_temperature"]))
        scorer = RLTScorer.from_paths(args.teacher, args.student, settings)
        expl = [[parse_explanation(c) for c in group] for group in completions]
        sc = scorer.score([r["question"] for r in rep], [r["solution"] for r in rep],
                          [c for group in completions for c in group])
    else:
        teacher, tok = load_checkpoint(args.teacher)
        student, _ = load_checkpoint(args.student)
        completions = write_explanations(teacher, tok, rows, K, int(cfg["max_new_tokens"]),
                                         float(cfg["temperature"]), seed)
        expl = [[parse_explanation(c) for c in group] for group in completions]
        flat = [e for group in expl for e in group]
        sc = score_explanations(teacher, student, tok, [r["question"] for r in rep], [r["solution"] for r in rep],
                                flat, float(cfg["alpha"]), float(cfg["lam"]), float(cfg["reward_temperature"]))
    reward = sc["reward"].view(len(rows), K)
    order = torch.argsort(reward, dim=1, stable=True)  # ascending: column r-1 is rank r
    datasets: list[list[dict]] = [[] for _ in range(K)]
    dropped = 0
    for i, row in enumerate(rows):
        if any(e is None for e in expl[i]):
            dropped += 1  # ranks would mix format failures (reward -1) with explanations: keep whole questions only
            continue
        for r in range(K):
            j = int(order[i, r])
            e = expl[i][j]
            datasets[r].append({"id": row["id"], "question": row["question"], "answer": row["answer"],
                                "solution": row["solution"], "explanation": e, "reward": float(reward[i, j]),
                                "text": student_text(e, row["solution"])})
    if dropped:
        log.warning("%d of %d questions have a completion without the format tags: left out of every rank",
                    dropped, len(rows))
    if not datasets[0]:
        raise SystemExit(f"reward rank: no question has {K} well-formatted explanations; nothing to rank")
    out = Path(args.out_dir)
    for r in range(K):
        write_jsonl(out / f"rank_{r + 1}.jsonl", datasets[r])
    summary = {"ranks": K, "questions": len(datasets[0]), "dropped_questions": dropped,
               "per_rank": [{"rank": r + 1, "mean_reward": sum(d["reward"] for d in datasets[r]) / len(datasets[r]),
                             "examples": len(datasets[r])} for r in range(K)]}
    write_json(args.summary, summary)
    log.info("reward-rank datasets: %s", summary)
    from rlrt.tracking import log_run

    log_run(cfg.get("tracking"), "rlt/reward_rank_data",
            {"stage": "rlt_reward_rank", "method": "rlt", "backbone": str(cfg.get("teacher", "teacher")),
             "seed": str(seed)},
            {"reward_rank": rr}, [], {f"rank_{d['rank']}/mean_reward": d["mean_reward"] for d in summary["per_rank"]},
            artifacts=[args.summary])


if __name__ == "__main__":
    main()
