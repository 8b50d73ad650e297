"""Benchmark: the lean sampler (``rlrt.backends.local.sampler``) against ``transformers``' ``generate``.

Same model, prompts, batch, lengths and seed, alternated in one process (so both see the same machine state);
reports generated tokens per second of each and their ratio, per batch size, and checks on every repeat that the
two produced the very same tokens (sampling with the same seed, and greedy).

The batches are the pipeline's: an RL step's (``rl.question_batch`` x ``rl.n_rollouts`` rows, temperature 1.0,
``max_response_length`` new tokens) and an evaluation chunk's (``eval.n`` samples per problem up to
``rl.gen_batch_size`` rows, the evaluation's temperature / top-p / top-k).

    python bench/bench_sampler.py [--checkpoint results/checkpoints/S-base] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from rlrt.backends.local.model import load_checkpoint, set_threads
from rlrt.backends.local.rollout import sample
from rlrt.config import load_overlay
from rlrt.io import read_jsonl
from rlrt.tasks.prompts import chat_prompt, user_message

ROOT = Path(__file__).resolve().parents[1]


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def compare(model, tok, prompts: list[str], n: int, max_new: int, repeats: int, **kw) -> dict:
    """Alternate ``generate`` and the lean loop ``repeats`` times (after one warm-up each); best-of timings."""
    best = {"generate": float("inf"), "lean": float("inf")}
    same, tokens = True, 0
    for rep in range(repeats + 1):
        runs = {}
        for engine in ("generate", "lean"):
            dt, ro = timed(lambda: sample(model, tok, prompts, n, max_new, seed=rep, batch_size=len(prompts) * n,
                                          engine=engine, **kw))
            runs[engine] = ro
            if rep:
                best[engine] = min(best[engine], dt)
        same &= torch.equal(runs["generate"].response_ids, runs["lean"].response_ids)
        tokens = int(runs["lean"].response_mask.sum())
    return {"rows": len(prompts) * n, "max_new_tokens": max_new, "generated_tokens": tokens,
            "generate_s": best["generate"], "lean_s": best["lean"],
            "generate_tok_per_s": tokens / best["generate"], "lean_tok_per_s": tokens / best["lean"],
            "speedup": best["generate"] / best["lean"], "same_tokens": bool(same)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    p.add_argument("--checkpoint", default=str(ROOT / "results" / "checkpoints" / "S-base"))
    p.add_argument("--data", default=None, help="test JSONL (default: <checkpoint>/../../data/test.jsonl)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "results" / "bench" / "sampler.json"))
    args = p.parse_args()
    set_threads(1)
    cfg = load_overlay(args.config)
    model, tok = load_checkpoint(args.checkpoint)
    data = Path(args.data or Path(args.checkpoint).parents[1] / "data" / "test.jsonl")
    questions = [row["question"] for row in read_jsonl(data)]
    prompts = [chat_prompt(tok, user_message(q)) for q in questions]
    backbone = Path(args.checkpoint).name
    max_new = int(cfg["backbones"].get(backbone, {}).get("max_response_length", 64))
    rl, ev = cfg["rl"], cfg["eval"]
    eval_prompts = max(1, int(rl["gen_batch_size"]) // int(ev["n"]))
    res = {"checkpoint": args.checkpoint, "threads": 1, "results": {
        "rl_step": compare(model, tok, prompts[: int(rl["question_batch"])], int(rl["n_rollouts"]), max_new,
                           args.repeats, temperature=float(rl["temperature"])),
        "eval_chunk": compare(model, tok, prompts[:eval_prompts], int(ev["n"]), max_new, args.repeats,
                              temperature=float(ev["temperature"]), top_p=float(ev["top_p"]), top_k=int(ev["top_k"])),
        "greedy": compare(model, tok, prompts[: int(rl["question_batch"])], 1, max_new, args.repeats,
                          temperature=0.0),
    }}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
