"""Stage: distillation data -- the teacher's raw explanations for every question, in the student format.

One sample per (question, solution) row at the configured temperature; no filtering and no post-processing
(RLT paper Sec. 4.1): the explanation goes into the student's think block byte for byte. A completion without
the closing tag (it ran out of tokens, or opened another block) is kept as its raw text up to the first tag,
counted and logged (``format_failures`` in the summary): every question gets its trace.
Works for any question file: the main task's distillation set, or countdown (the zero-shot transfer, Sec. 4.4).
"""

from __future__ import annotations

import logging

from rlrt.backends.local.model import load_checkpoint, seed_everything
from rlrt.backends.local.rlt import write_explanations
from rlrt.io import read_jsonl, write_json, write_jsonl
from rlrt.stages.common import parse, parser
from rlrt.tasks.rlt_format import raw_explanation, student_text

log = logging.getLogger("rlrt.rlt_distill")


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--teacher", required=True)
    p.add_argument("--data", required=True, help="jsonl of question / solution / answer rows")
    p.add_argument("--out", required=True, help="traces jsonl")
    p.add_argument("--summary", required=True)
    args, cfg = parse(p, argv)
    seed = int(cfg["seed"])
    seed_everything(seed)
    rows = read_jsonl(args.data)
    if cfg.get("backend", "local") == "verl":  # paper scale: vLLM, the same prompt ids
        from transformers import AutoTokenizer

        from rlrt.backends.verl.rlt_generate import teacher_completions

        tok = AutoTokenizer.from_pretrained(args.teacher)
        expl = teacher_completions(args.teacher, rows, 1, int(cfg["max_new_tokens"]), float(cfg["temperature"]),
                                   seed, int(cfg.get("gpus") or 1), tokenizer=tok)
    else:
        teacher, tok = load_checkpoint(args.teacher)
        expl = write_explanations(teacher, tok, rows, 1, int(cfg["max_new_tokens"]), float(cfg["temperature"]),
                                  seed, int(cfg.get("batch_size", 256)))
    out, failed = [], 0
    for row, (completion,) in zip(rows, expl):
        e, ok = raw_explanation(completion)
        failed += not ok
        out.append({"id": row["id"], "question": row["question"], "answer": row["answer"],
                    "solution": row["solution"], "explanation": e, "format_ok": ok,
                    "text": student_text(e, row["solution"])})
    if failed:
        log.warning("%d of %d teacher completions lack the closing tag: kept as raw text up to the first tag",
                    failed, len(rows))
    write_jsonl(args.out, out)
    lengths = [len(tok(r["explanation"], add_special_tokens=False)["input_ids"]) for r in out] or [0]
    summary = {"questions": len(rows), "traces": len(out), "format_failures": failed,
               "mean_explanation_tokens": sum(lengths) / len(lengths)}
    write_json(args.summary, {"summary": summary, "examples": out[:5]})
    log.info("distillation data: %s", summary)
    from rlrt.tracking import log_run

    log_run(cfg.get("tracking"), f"rlt/distill/{cfg['name']}",
            {"stage": "rlt_distill", "method": "rlt", "backbone": str(cfg.get("teacher", "teacher")),
             "data": cfg["name"], "seed": str(seed)},
            {k: v for k, v in cfg.items() if k != "tracking"}, [], summary, artifacts=[args.summary])


if __name__ == "__main__":
    main()
