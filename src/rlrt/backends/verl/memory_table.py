"""docs/paper-scale.md's GPU-memory table: each planned SDPO / SRPO run's estimate (:mod:`rlrt.backends.verl.memory`)
for a validated config. Apart from the estimate because it reads the whole plan and the config loader, which
validates with the estimate: so the import graph stays a ladder (``memory`` <- ``rlrt.config`` <- this)."""

from __future__ import annotations

from typing import Any, Mapping, Optional

from rlrt.backends.verl.memory import run_memory
from rlrt.plan import parse_run_id, rl_settings, run_config


TABLE_TERMS = ("actor_params", "actor_grads", "optimizer", "teacher", "student_logits", "chunk_working_set",
               "student_activations", "teacher_forward", "log_prob_logits", "vllm", "overhead")


def sdpo_memory_table(cfg: Mapping[str, Any]) -> str:
    """The Markdown table of docs/paper-scale.md: every RL backbone that a planned SDPO / SRPO run trains on (and
    whose architecture is known), its estimate's terms, phases and peak (GB per GPU) against ``gpu_mem_gb``.
    ``cfg`` is a validated config (``rlrt.config.load``); the doc's table is this function's output (a test checks)."""
    from rlrt.claims import planned_runs
    from rlrt.methods.objectives import get_objective
    from rlrt.methods.registry import get_method, objective_name
    from rlrt.resources import merged

    head = ["backbone", "GPUs", *TABLE_TERMS, "update", "log-prob", "rollout", "**peak**", "gpu_mem_gb"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for backbone, runs in planned_runs(cfg).items():
        distils = []
        for run in runs:
            spec = get_method(parse_run_id(run)[0])
            objective = objective_name(spec, spec.make_settings(run_config(cfg, backbone, run)))
            if get_objective(objective).uses_teacher_logits:
                distils.append(run)
        r = merged(cfg, "rl", backbone)
        if not distils or r.get("gpu_mem_gb") is None:
            continue
        est = run_memory(cfg["verl"], rl_settings(cfg, backbone), cfg["backbones"][backbone],
                         int(r.get("gpus") or 1), float(r["gpu_mem_gb"]))
        if est is None:
            continue
        cells = [backbone, str(int(r.get("gpus") or 1)), *(f"{est.terms[k]:.1f}" for k in TABLE_TERMS),
                 f"{est.update:.1f}", f"{est.log_prob:.1f}", f"{est.rollout:.1f}", f"**{est.peak:.1f}**",
                 f"{float(r['gpu_mem_gb']):g}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m rlrt.backends.verl.memory_table CONFIG...``: print :func:`sdpo_memory_table` for the merged configs."""
    import sys

    from rlrt.config import load

    print(sdpo_memory_table(load(*(argv if argv is not None else sys.argv[1:]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
