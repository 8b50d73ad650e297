"""Benchmark: per-step cost of RLRT's teacher pass, measured side by side with GRPO in one run.

Alternates GRPO and RLRT steps (same model weights, same prompts, same sampling seed) so that both see the same
machine state, and reports mean step time per method, the RLRT/GRPO ratio and where a step's time goes (sampling,
grading, old log-probs, the method's shaping with its teacher pass, the update). Two more GRPO arms measure two
levers in the same run: ``grpo_recompute`` (``old_logp: recompute``, a separate no-grad pass for θ_old's
log-probs instead of the sampler's own) and ``grpo_every_row`` (the update runs every row, also those whose
advantages are all 0, which ``rows_with_loss`` leaves out). Uses the pipeline's S-base
checkpoint when it exists (``results/checkpoints/S-base``), else a freshly built model of the same size.

    python bench/bench_step_time.py [--checkpoint DIR] [--steps 6] [--out results/bench/step_time.json]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

from rlrt.backends.local import rl as engine
from rlrt.backends.local.model import build_model, load_checkpoint, set_threads
from rlrt.config import load_overlay
from rlrt.plan import method_config
from rlrt.methods import objectives
from rlrt.methods.registry import get_method
from rlrt.tasks.arithmetic import generate_splits
from rlrt.tasks.grading import Grader

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default=str(ROOT / "config" / "config.yaml"),
                   help="config.yaml, or an overlay such as config/ci.yaml (merged over config.yaml)")
    p.add_argument("--checkpoint", default=str(ROOT / "results" / "checkpoints" / "S-base"))
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--out", default=str(ROOT / "results" / "bench" / "step_time.json"))
    args = p.parse_args()
    set_threads(1)
    cfg = load_overlay(args.config)
    if Path(args.checkpoint).exists():
        model, tok = load_checkpoint(args.checkpoint)
        source = args.checkpoint
    else:
        from rlrt.stages.tokenizer import corpus
        from rlrt.tasks.tokenizer import train_tokenizer

        rows = generate_splits(0, {"train": cfg["data"]["splits"]["train"]})["train"]
        tok = train_tokenizer(corpus(rows, 0), cfg["tokenizer"]["vocab_size"])
        torch.manual_seed(0)
        model = build_model(cfg["backbones"]["S-base"]["arch"], tok)
        source = "fresh S-base architecture (no checkpoint found)"
    rows = generate_splits(cfg["data"]["seed"], {"train": cfg["data"]["splits"]["train"]})["train"]
    rl_cfg = engine.RLConfig.from_dict({**cfg["rl"], "max_response_length":
                                        cfg["backbones"]["S-base"]["max_response_length"]})
    init = copy.deepcopy(model.state_dict())
    # RLSD: every row teacher-scored; grpo_recompute: GRPO with θ_old's log-probs recomputed (rl.old_logp);
    # grpo_every_row: GRPO whose update runs the rows that add nothing too (the objective marked not sparse)
    times: dict[str, list[float]] = {"grpo": [], "rlrt": [], "rlsd": [], "grpo_recompute": [], "grpo_every_row": []}
    sparse_pg = objectives.OBJECTIVES["pg"]
    arm_cfg = {m: rl_cfg for m in times}
    arm_cfg["grpo_recompute"] = dataclasses.replace(rl_cfg, old_logp="recompute")
    rl_cfg = dataclasses.replace(rl_cfg, old_logp="rollout")
    arm_cfg.update({m: rl_cfg for m in ("grpo", "rlrt", "rlsd")})
    phases = ("time_gen", "time_grade", "time_old_logp", "time_teacher", "time_update")
    parts: dict[str, dict[str, list[float]]] = {m: {k: [] for k in phases + ("teacher_rows",)} for m in times}
    with Grader(workers=1) as grader:
        for step in range(args.steps + 1):  # step 0 warms up both paths and is not counted
            batch = rows[step * rl_cfg.question_batch:(step + 1) * rl_cfg.question_batch]
            for arm in times:
                model.load_state_dict(init)
                method = arm.split("_")[0]
                objectives.OBJECTIVES["pg"] = (dataclasses.replace(sparse_pg, sparse=False)
                                               if arm == "grpo_every_row" else sparse_pg)
                spec = get_method(method)
                opt = torch.optim.AdamW(model.parameters(), lr=rl_cfg.lr)
                t0 = time.perf_counter()
                m = engine.rl_step(model, tok, opt, spec, spec.make_settings(method_config(cfg, "S-base", method)),
                                   arm_cfg[arm], batch, step, grader.grade_batch)
                if step:
                    times[arm].append(time.perf_counter() - t0)
                    for k in parts[arm]:
                        parts[arm][k].append(m[k])
    res = {
        "source": source,
        "question_batch": rl_cfg.question_batch, "n_rollouts": rl_cfg.n_rollouts, "steps": args.steps,
        "grpo_step_s": statistics.mean(times["grpo"]), "rlrt_step_s": statistics.mean(times["rlrt"]),
        "rlsd_step_s": statistics.mean(times["rlsd"]),
        "rlrt_teacher_pass_s": statistics.mean(parts["rlrt"]["time_teacher"]),
        "breakdown_s": {m: {k: statistics.mean(v) for k, v in parts[m].items()} for m in parts},
    }
    objectives.OBJECTIVES["pg"] = sparse_pg
    res["grpo_every_row_step_s"] = statistics.mean(times["grpo_every_row"])
    # > 1: leaving out the rows that add nothing makes a GRPO step this much faster
    res["idle_rows_speedup"] = res["grpo_every_row_step_s"] / res["grpo_step_s"]
    res["grpo_recompute_step_s"] = statistics.mean(times["grpo_recompute"])
    # > 1: the sampler's log-probs make a GRPO step this much faster than a recompute of θ_old's
    res["rollout_logp_speedup"] = res["grpo_recompute_step_s"] / res["grpo_step_s"]
    res["rlrt_over_grpo"] = res["rlrt_step_s"] / res["grpo_step_s"]
    res["rlsd_over_grpo"] = res["rlsd_step_s"] / res["grpo_step_s"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
