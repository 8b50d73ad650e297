"""Stage: the RLT teacher's RL -- GRPO on the dense reward r = r_SS - lambda * r_KL (RLT paper Sec. 3.3).

The teacher (from its SFT warm-up) writes explanations for (question, solution) pairs; a separate frozen student
backbone (``rlt.reward_student``) scores each: how well it then predicts the solution (r_SS), and how natural
each explanation token is to it without the solution (r_KL). Advantage (r - mean) / (std + 1e-4) per question.
"""

from __future__ import annotations

import logging

from rlrt.backends.local.model import load_checkpoint, save_checkpoint, seed_everything
from rlrt.backends.local.resume import Resumable
from rlrt.backends.local.rlt import TeacherRLConfig, train_teacher
from rlrt.io import read_jsonl, write_json
from rlrt.stages.common import parse, parser

log = logging.getLogger("rlrt.rlt_teacher_rl")


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--teacher", required=True, help="the SFT'd teacher")
    p.add_argument("--student", required=True, help="the frozen reward student")
    p.add_argument("--data", required=True, help="questions.jsonl")
    p.add_argument("--out", required=True)
    p.add_argument("--metrics", required=True)
    args, cfg = parse(p, argv)
    if cfg.get("backend", "local") == "verl":  # paper scale: verl's trainer, our agent loop and reward manager
        from rlrt.backends.verl.rlt import run_teacher_rl

        rows = read_jsonl(args.data)
        run_teacher_rl({**cfg, "cpus": args.threads}, args.teacher, args.student, rows, args.out,
                       f"{args.out}.work")  # work dir: not an output
        write_json(args.metrics, {"summary": {"questions": len(rows), "steps": int(cfg["teacher_rl"]["steps"]),
                                              "backend": "verl"}, "history": [], "config": cfg["teacher_rl"]})
        return
    seed = int(cfg["seed"])
    seed_everything(seed)
    teacher, tok = load_checkpoint(args.teacher)
    student, _ = load_checkpoint(args.student)
    rl = TeacherRLConfig.from_dict({**cfg["teacher_rl"], "seed": seed})
    rows = read_jsonl(args.data)

    def log_step(m: dict) -> None:
        log.info("step %3d  r %.3f  r_SS %.3f  r_KL %.3f  format %.2f  len %.1f  %.1fs", m["step"], m["reward_mean"],
                 m["r_ss"], m["r_kl"], m["format_ok"], m["response_length"], m["step_time"])

    resume = Resumable.beside(args.out, cfg, cfg["teacher_rl"].get("resume_every"))
    history = train_teacher(teacher, student, tok, rows, rl, on_step=log_step, resume=resume)
    k = max(1, len(history) // 4)  # first / last quarter of the run
    summary = {f"{key}_{when}": sum(h[key] for h in hs) / len(hs)
               for key in ("reward_mean", "r_ss", "r_kl", "format_ok")
               for when, hs in (("first", history[:k]), ("last", history[-k:]))}
    summary["mean_step_time"] = sum(h["step_time"] for h in history) / len(history)
    save_checkpoint(model=teacher, tokenizer=tok, path=args.out)
    write_json(args.metrics, {"summary": summary, "history": history, "config": cfg["teacher_rl"]})
    resume.clear()
    log.info("teacher RL: %s", summary)
    from rlrt.tracking import log_run

    log_run(cfg.get("tracking"), "rlt/teacher_rl",
            {"stage": "rlt_teacher_rl", "method": "rlt", "backbone": str(cfg.get("teacher", "teacher")),
             "seed": str(seed)},
            {"teacher_rl": cfg["teacher_rl"], "reward_student": cfg["reward_student"]}, history, summary,
            artifacts=[args.metrics])


if __name__ == "__main__":
    main()
