"""Stage: the RLT teacher's SFT warm-up -- the teacher format, the loss on the explanation tokens only.

The teacher sees question + reference solution and learns to write the reference trace as the explanation
(RLT paper Sec. 3.4: a short SFT on the teacher format before RL). Starts from the ``rlt.teacher`` backbone.
"""

from __future__ import annotations

import logging

from rlrt.backends.local.lm import train_lm
from rlrt.backends.local.model import load_checkpoint, save_checkpoint, seed_everything
from rlrt.backends.local.resume import Resumable
from rlrt.backends.local.rlt import teacher_example
from rlrt.io import read_jsonl, write_json
from rlrt.stages.common import parse, parser

log = logging.getLogger("rlrt.rlt_teacher_sft")


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--model", required=True, help="the teacher's starting backbone")
    p.add_argument("--data", required=True, help="questions.jsonl (question, solution, reference explanation)")
    p.add_argument("--out", required=True)
    p.add_argument("--metrics", required=True)
    args, cfg = parse(p, argv)
    if cfg.get("backend", "local") == "verl":  # paper scale: verl's SFT trainer on the same examples
        from rlrt.backends.verl.rlt_sft import run_teacher_sft

        questions = read_jsonl(args.data)
        run_teacher_sft(cfg, args.model, questions, args.out, f"{args.out}.work")  # work dir: not an output
        write_json(args.metrics, {"summary": {"examples": len(questions), "steps": int(cfg["teacher_sft"]["steps"]),
                                              "backend": "verl"}, "history": []})  # step metrics: verl's MLflow run
        return
    seed_everything(int(cfg["seed"]))
    model, tok = load_checkpoint(args.model)
    examples = [teacher_example(tok, r["question"], r["solution"], r["explanation"]) for r in read_jsonl(args.data)]
    sft = cfg["teacher_sft"]
    steps = int(sft["steps"])
    resume = Resumable.beside(args.out, cfg, sft.get("resume_every"))
    history = train_lm(model, tok, lambda rng, b: rng.sample(examples, min(b, len(examples))), steps,
                       int(sft["batch_size"]), float(sft["lr"]), warmup_steps=min(10, steps // 10),
                       seed=int(cfg["seed"]), desc="rlt:teacher-sft",
                       resume=resume)
    save_checkpoint(model, tok, args.out)
    summary = {"examples": len(examples), "epochs": steps * int(sft["batch_size"]) / len(examples),
               "final_loss": history[-1]["loss"]}
    write_json(args.metrics, {"summary": summary, "history": history})
    resume.clear()
    log.info("teacher SFT: %s", summary)
    from rlrt.tracking import log_run

    log_run(cfg.get("tracking"), "rlt/teacher_sft",
            {"stage": "rlt_teacher_sft", "method": "sft", "backbone": cfg["teacher"], "seed": str(cfg["seed"])},
            {"teacher_sft": sft, "teacher": cfg["teacher"]}, history, summary, artifacts=[args.metrics])


if __name__ == "__main__":
    main()
