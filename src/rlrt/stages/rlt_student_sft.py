"""Stage: student SFT on distillation traces (RLT traces, reference traces, a reward-rank dataset, countdown).

The student backbone learns the whole student-format answer (think block = the trace's explanation, then the
solution) given the plain question prompt. With ``n`` set, only the traces of the first ``n`` questions of
``--questions`` are used (the small subset: a random one, the question file being a seeded shuffle; the RLT and
the reference subsets cover the same questions). Every data source and size gets the same budget of
``student_sft.steps`` optimizer steps (the paper equates the distillation budget across sizes).
"""

from __future__ import annotations

import logging

from rlrt.backends.local.lm import train_lm
from rlrt.backends.local.model import load_checkpoint, save_checkpoint, seed_everything
from rlrt.backends.local.resume import Resumable
from rlrt.backends.local.rlt import student_example
from rlrt.io import read_jsonl, write_json
from rlrt.stages.common import parse, parser

log = logging.getLogger("rlrt.rlt_student_sft")


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--model", required=True, help="the student backbone")
    p.add_argument("--traces", required=True, help="jsonl with question / explanation / solution")
    p.add_argument("--questions", help="questions.jsonl: with cfg n, the subset is its first n ids")
    p.add_argument("--out", required=True)
    p.add_argument("--metrics", required=True)
    args, cfg = parse(p, argv)
    seed = int(cfg["seed"])
    seed_everything(seed)
    rows = read_jsonl(args.traces)
    if cfg.get("n"):
        keep = {q["id"] for q in read_jsonl(args.questions)[: int(cfg["n"])]}
        rows = [r for r in rows if r["id"] in keep]
    if not rows:
        raise SystemExit(f"no traces to train on in {args.traces}" + (f" for the first {cfg['n']} questions"
                                                                      if cfg.get("n") else ""))
    sft = cfg["student_sft"]
    if cfg.get("backend", "local") == "verl":  # paper scale: verl's SFT trainer, same budget and schedule
        from rlrt.backends.verl.rlt_sft import run_student_sft

        run_student_sft(cfg, args.model, rows, args.out, work_dir=f"{args.out}.work")  # work dir: not an output
        summary = {"data": cfg["data"], "examples": len(rows), "steps": int(sft["steps"]), "backend": "verl"}
        write_json(args.metrics, {"summary": summary, "history": []})
        return
    model, tok = load_checkpoint(args.model)
    examples = [student_example(tok, r["question"], r["explanation"], r["solution"]) for r in rows]
    bs = int(sft["batch_size"])
    steps = int(sft["steps"])
    resume = Resumable.beside(args.out, cfg, sft.get("resume_every"))
    history = train_lm(model, tok, lambda rng, b: rng.sample(examples, min(b, len(examples))), steps, bs,
                       float(sft["lr"]), warmup_steps=min(10, max(1, steps // 10)), seed=seed,
                       desc=f"rlt:sft-{cfg['data']}", resume=resume)
    save_checkpoint(model, tok, args.out)
    summary = {"data": cfg["data"], "examples": len(examples), "steps": steps, "epochs": steps * bs / len(examples),
               "final_loss": history[-1]["loss"]}
    write_json(args.metrics, {"summary": summary, "history": history})
    resume.clear()
    log.info("student SFT: %s", summary)
    from rlrt.tracking import log_run

    log_run(cfg.get("tracking"), f"rlt/sft/{cfg['student']}/{cfg['data']}",
            {"stage": "rlt_student_sft", "backbone": cfg["student"], "method": f"sft-{cfg['data']}",
             "data": cfg["data"], "seed": str(seed)},
            {"student_sft": sft, "n": cfg.get("n")}, history, summary, artifacts=[args.metrics])


if __name__ == "__main__":
    main()
