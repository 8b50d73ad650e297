"""Stage: evaluate one checkpoint on the test splits -- n samples per problem, avg@n and unbiased pass@k.

Sampling follows the RLRT paper's evaluation settings (temperature 0.7, top-p 0.8, top-k 20, n = 16). ``task``
(arithmetic | countdown) picks the grader; the RLT branch evaluates its students with this same stage.
Output: one JSON with, per split, the metrics and every problem's number of correct samples (so pass@k for any
k <= n can be recomputed later without sampling again).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from rlrt.backends.local.model import load_checkpoint, seed_everything
from rlrt.backends.local.rollout import sample
from rlrt.plan import eval_engine
from rlrt.io import read_problems, write_json
from rlrt.metrics import summarize
from rlrt.stages.common import parse, parser
from rlrt.tasks.grading import make_grader
from rlrt.tasks.prompts import chat_prompt, user_message
from rlrt.tasks.validate import check_prompt_lengths, prompt_lengths

log = logging.getLogger("rlrt.evaluate")


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--data", nargs="+", required=True, help="one jsonl per test split (split = file stem)")
    p.add_argument("--out", required=True)
    args, cfg = parse(p, argv)
    # vLLM sampling (eval.engine; always under backend: verl), the same prompts, grader and JSON
    if eval_engine(cfg, cfg.get("backend", "local")) == "vllm":
        from rlrt.backends.verl.evaluate import evaluate

        evaluate(cfg, model=args.model, data_paths=args.data, out=args.out)
        track(cfg, args.out)
        return
    seed = int(cfg["seed"])
    seed_everything(seed)
    model, tok = load_checkpoint(args.model)
    n, ks = int(cfg["n"]), [k for k in cfg["ks"] if k <= int(cfg["n"])]
    result = {"backbone": cfg["backbone"], "method": cfg["method"], "task": cfg.get("task", "arithmetic"), "n": n,
              "splits": {}}
    with make_grader(cfg.get("task", "arithmetic"), int(cfg.get("grader_workers", 1))) as grader:
        for path in args.data:
            split = Path(path).stem
            rows = read_problems(path)[: cfg.get("max_problems") or None]
            # a benchmark never loses problems silently: a prompt too long for the context is an error
            kw = cfg.get("chat_template_kwargs")  # the backbone's chat-template variables (none by default)
            check_prompt_lengths(prompt_lengths(tok, [r["question"] for r in rows], kw),
                                 int(model.config.max_position_embeddings) - int(cfg["max_new_tokens"]), path)
            prompts = [chat_prompt(tok, user_message(r["question"]), kw) for r in rows]
            ro = sample(model, tok, prompts, n, int(cfg["max_new_tokens"]), temperature=float(cfg["temperature"]),
                        top_p=float(cfg["top_p"]), top_k=int(cfg["top_k"]), seed=seed,
                        batch_size=int(cfg.get("batch_size", 256)), progress=True)
            scores = grader.grade_batch(ro.texts, [r["answer"] for r in rows for _ in range(n)])
            correct = np.asarray(scores, dtype=np.int64).reshape(len(rows), n)
            metrics = summarize(correct, ks)
            metrics[f"avg@{n}"] = metrics.pop("avg@n")
            metrics["mean_response_length"] = float(ro.lengths.float().mean())
            result["splits"][split] = {
                "metrics": metrics,
                "n_problems": len(rows),
                "correct_counts": correct.sum(1).tolist(),
                "example": {"prompt": prompts[0], "response": ro.texts[0], "answer": rows[0]["answer"]},
            }
            log.info("%s/%s %s: %s", cfg["backbone"], cfg["method"], split, metrics)
        result["grading"] = grader.counts()  # unparseable, errors (timeouts, crashes, oversized answers among them)
    write_json(args.out, result)
    track(cfg, args.out)


def track(cfg: dict, out: str) -> None:
    """One MLflow run for the job, from its result JSON (the same on both backends)."""
    from rlrt.io import read_json
    from rlrt.tracking import log_run

    result = read_json(out)
    final = {f"{s}/{k}": v for s, d in result["splits"].items() for k, v in d["metrics"].items()}
    stage = cfg.get("stage", "eval")
    task = cfg.get("task", "arithmetic")
    log_run(cfg.get("tracking"), f"{stage}/{cfg['backbone']}/{cfg['method']}" + ("" if task == "arithmetic" else f"/{task}"),
            {"stage": stage, "task": task, "method": cfg["method"], "backbone": cfg["backbone"],
             "seed": str(cfg["seed"]), "backend": cfg.get("backend", "local")},
            {k: v for k, v in cfg.items() if k != "tracking"}, [], final, artifacts=[out])


if __name__ == "__main__":
    main()
