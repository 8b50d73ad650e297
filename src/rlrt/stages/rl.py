"""Stage: one RL run -- (backbone, method) on the train split with the configured backend.

``backend: local`` (default): the CPU torch engine below. ``backend: verl`` (paper scale): the same method step
(``rlrt.methods.shaping.shape_advantages`` and the registered objectives) inside verl's trainer on ``gpus`` GPUs
(``rlrt.backends.verl.train``), writing the same outputs.

Config slice: ``rl`` (shared loop settings, Table 5), ``method`` (name) and ``method_cfg`` (that method's
hyper-parameters after per-backbone overrides), ``backbone`` (name, kind), ``seed``, ``tracking``; optional
``task`` (arithmetic | countdown: which grader scores the rollouts) and ``stage`` (MLflow tag; the RLT branch's
cold-start runs use this same stage).
``run`` names the run: the method, or ``<method>@<key>=<value>`` for a sweep point (see rules/common.smk).
Outputs: the trained checkpoint folder, a folder of intermediate checkpoints ``step_<k>`` (``rl.save_steps``)
and a JSON with the per-step history and the run's summary. Training state is saved next to the outputs every
``rl.resume_every`` steps, so a killed job resumes from there when rerun (removed once the run completes).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from rlrt.backends.local import rl as engine
from rlrt.backends.local.model import load_checkpoint, save_checkpoint, seed_everything
from rlrt.backends.local.resume import Resumable
from rlrt.io import read_problems, write_json
from rlrt.methods.registry import get_method
from rlrt.methods.settings import as_dict
from rlrt.stages.common import parse, parser
from rlrt.tasks.grading import make_grader
from rlrt.tasks.validate import check_prompt_lengths, prompt_lengths

log = logging.getLogger("rlrt.rl")


def log_step(m: dict) -> None:
    log.info("step %3d  acc %5.1f%%  len %5.1f  ent %.3f  clip %.3f  w %.3f/%.3f  dT %+.3f  lam %.2f  %.1fs",
             m["step"], m["accuracy"], m["response_length"], m["entropy"], m["clip_frac"], m["weight_mean"],
             m["weight_max"], m.get("teacher_logratio", 0.0), m["lambda"], m["step_time"])


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--model", required=True, help="initial checkpoint folder")
    p.add_argument("--data", required=True, help="train.jsonl")
    p.add_argument("--out", required=True, help="trained checkpoint folder")
    p.add_argument("--metrics", required=True, help="history + summary JSON")
    p.add_argument("--checkpoints", default=None, help="folder of intermediate checkpoints step_<k>")
    args, cfg = parse(p, argv)
    check_contexts(cfg, args.data)
    if cfg.get("backend", "local") == "verl":  # paper scale: the same method step inside verl's trainer
        from rlrt.backends.verl.train import run

        run(cfg, model=args.model, data=args.data, out=args.out, metrics=args.metrics,
            checkpoints=args.checkpoints, gpus=int(cfg.get("gpus") or 1))
        track(cfg, args.metrics)
        return
    seed = int(cfg["seed"])
    seed_everything(seed)
    spec = get_method(cfg["method"])
    settings = spec.make_settings(cfg.get("method_cfg") or {}, where="method_cfg")
    method_cfg = as_dict(settings)
    kw = cfg["backbone"].get("chat_template_kwargs")  # the backbone's chat-template variables (none by default)
    rl_cfg = engine.RLConfig.from_dict({**cfg["rl"], "seed": seed, "max_response_length": cfg["max_response_length"],
                                        "chat_template_kwargs": kw})
    model, tok = load_checkpoint(args.model)
    rows = read_problems(args.data)
    # a training prompt the context cannot hold next to a full response is a counted, logged skip
    fits = check_prompt_lengths(prompt_lengths(tok, [r["question"] for r in rows], kw),
                                int(model.config.max_position_embeddings) - rl_cfg.max_response_length, args.data,
                                policy="skip")
    rows = [rows[i] for i in fits]
    run = cfg.get("run", spec.name)
    log.info("rl %s on %s: %d train problems, %s", run, cfg["backbone"]["name"], len(rows), method_cfg)
    save_steps = sorted(int(k) for k in cfg["rl"].get("save_steps") or [] if 0 < int(k) < rl_cfg.steps)
    partial = Path(f"{args.checkpoints or args.out}.partial")  # survives a crash, renamed when the run completes
    partial.mkdir(parents=True, exist_ok=True)

    def save_intermediate(k: int) -> None:
        save_checkpoint(model, tok, partial / f"step_{k}", extra={"step": str(k)})
        log.info("saved intermediate checkpoint step_%d", k)

    resume = Resumable.for_stage(partial / "resume_state.pt", cfg, cfg["rl"].get("resume_every"))
    with make_grader(cfg.get("task", "arithmetic"), int(cfg.get("grader_workers", 1))) as grader:
        history = engine.train(model, tok, rows, spec, settings, rl_cfg, grader.grade_batch, on_step=log_step,
                               resume=resume, on_save=save_intermediate, save_steps=save_steps)
        counts = grader.counts()  # unparseable, errors (of which timeouts, crashes, oversized answers), ...
        skipped = {"unparseable": counts.pop("unparseable"), "grader_errors": counts.pop("errors"), **counts}
    log.info("grading: %s of %d responses", skipped, rl_cfg.steps * rl_cfg.question_batch * rl_cfg.n_rollouts)
    k = max(1, len(history) // 5)
    summary = {
        "method": spec.name, "run": run, "backbone": cfg["backbone"]["name"], "steps": len(history),
        "reward_first": sum(h["reward_mean"] for h in history[:k]) / k,
        "reward_last": sum(h["reward_mean"] for h in history[-k:]) / k,
        "mean_step_time": sum(h["step_time"] for h in history) / len(history),
        "mean_teacher_time": sum(h["time_teacher"] for h in history) / len(history),
        **{f"grading_{a}": b for a, b in skipped.items()},
    }
    save_checkpoint(model, tok, args.out)
    resume.clear()
    if args.checkpoints:
        shutil.rmtree(args.checkpoints, ignore_errors=True)
        os.replace(partial, args.checkpoints)
    else:
        shutil.rmtree(partial, ignore_errors=True)
    write_json(args.metrics, {"summary": summary, "method_cfg": method_cfg, "history": history, "run": run,
                              "seed": seed, "save_steps": save_steps})
    track(cfg, args.metrics)


def check_contexts(cfg: dict, data: str) -> None:
    """Before any training (either backend): every train row has the text its teacher context is made of
    (``reference``: a solution, ``answer``: a gold answer); an empty one raises naming the split and the row."""
    from rlrt.teacher import problem_contexts

    spec = get_method(cfg["method"])
    if spec.teacher == "none":
        return
    kind = str(getattr(spec.make_settings(cfg.get("method_cfg") or {}, where="method_cfg"), "context", "none"))
    problem_contexts(kind, read_problems(data), Path(data).stem)


def track(cfg: dict, metrics_path: str) -> None:
    """One MLflow run for the job, from its metrics JSON (the same on both backends)."""
    from rlrt.io import read_json
    from rlrt.tracking import log_run, sweep_parent

    m = read_json(metrics_path)
    stage = cfg.get("stage", "rl")  # "rlt_rl": the RLT branch's cold-start / countdown runs
    backbone, run = cfg["backbone"]["name"], m["run"]
    log_run(cfg.get("tracking"), f"{stage}/{backbone}/{run}",
            {"stage": stage, "task": cfg.get("task", "arithmetic"), "method": m["summary"]["method"], "run": run,
             "backbone": backbone, "seed": str(cfg["seed"]), "backend": cfg.get("backend", "local")},
            {"method_cfg": m["method_cfg"], "rl": cfg["rl"], "max_response_length": cfg["max_response_length"]},
            m["history"], m["summary"], artifacts=[metrics_path], parent=sweep_parent(stage, backbone, run))


if __name__ == "__main__":
    main()
