"""The rl stage on verl (``backend: verl``): data -> verl's RL parquet, one verl run, our outputs.

``run`` is what ``rlrt.stages.rl`` calls. Steps:

1. the normalised problem rows (``rlrt.io.read_problems``) -> verl's RL parquet (:func:`verl_rows`): ``prompt`` =
   the chat messages with the same user turn as the local engine (``rlrt.tasks.prompts.user_message``),
   ``data_source``, ``reward_model.ground_truth`` = the gold answer, ``extra_info`` = id, index, solution (RLSD's
   reference context) and the user message;
2. Hydra overrides from ``rlrt.backends.verl.overrides.hydra_overrides`` plus ``rlrt.history_path`` (our per-step
   metrics, written by the trainer), ``MLFLOW_TRACKING_URI`` from ``tracking.uri``;
3. ``python -m rlrt.backends.verl.trainer`` (verl's ``main_ppo`` with our trainer) in a subprocess, so that Ray
   lives and dies with it. verl's checkpoints go to ``<out>.verl/ckpt``, which is NOT a declared output (Snakemake
   deletes a failed job's outputs; a requeued job resumes from there with ``resume_mode=auto``);
4. the final actor checkpoint (and those at ``rl.save_steps``) -> HF folders with ``python -m verl.model_merger``;
   ``metrics`` JSON with the local stage's keys (``summary``, ``method_cfg``, ``history``, ``run``, ``save_steps``).

What has NEVER run (no GPU here): steps 3 and 4. Tested on CPU: :func:`verl_rows`, :func:`write_verl_parquet`,
:func:`read_history`, :func:`summarize`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from rlrt.io import atomic_dir, atomic_path, read_problems, write_json
from rlrt.methods.registry import get_method
from rlrt.methods.settings import as_dict
from rlrt.tasks.prompts import user_message

log = logging.getLogger("rlrt.verl.train")

ABILITY = "math"


def verl_rows(rows: Sequence[Mapping[str, Any]], default_source: str = "rlrt") -> list[dict]:
    """Normalised rows (id, question, answer, solution, source) -> verl RL rows. A row without a question or an
    answer raises ValueError naming it (it could only ever score 0)."""
    out = []
    for k, row in enumerate(rows):
        q, a = row.get("question"), row.get("answer")
        if q is None or str(q).strip() == "" or a is None or str(a).strip() == "":
            raise ValueError(f"train row {k} (id {row.get('id')!r}): empty question or answer")
        msg = user_message(str(q))
        out.append({
            "data_source": str(row.get("source") or default_source),
            "prompt": [{"role": "user", "content": msg}],
            "ability": ABILITY,
            "reward_model": {"style": "rule", "ground_truth": str(a)},
            "extra_info": {"id": str(row.get("id", k)), "index": k, "solution": str(row.get("solution") or ""),
                           "user_message": msg},
        })
    return out


def write_verl_parquet(rows: Sequence[dict], path: str | os.PathLike) -> None:
    """verl RL rows -> parquet (atomically)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pylist(list(rows)), tmp)


def read_history(path: str | os.PathLike) -> list[dict]:
    """The trainer's per-step JSON lines; a step redone after a resume keeps its last record; sorted by step."""
    p = Path(path)
    if not p.exists():
        return []
    by_step: dict[int, dict] = {}
    for line in p.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_step[int(row["step"])] = row
    return [by_step[s] for s in sorted(by_step)]


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def summarize(history: Sequence[dict], *, method: str, run: str, backbone: str) -> dict:
    """The local stage's summary keys from the history (grading counters live in verl's reward workers: None)."""
    if not history:
        raise ValueError("verl run left no step metrics (rlrt.history_path empty): did the trainer run?")
    k = max(1, len(history) // 5)
    return {
        "method": method, "run": run, "backbone": backbone, "steps": len(history),
        "reward_first": sum(h["reward_mean"] for h in history[:k]) / k,
        "reward_last": sum(h["reward_mean"] for h in history[-k:]) / k,
        "mean_step_time": _mean([h.get("step_time") for h in history]),
        "mean_teacher_time": _mean([h.get("time_teacher") for h in history]),
        "grading_unparseable": None, "grading_grader_errors": None,
    }


def merge_checkpoint(actor_dir: Path, target: Path) -> None:
    """verl's FSDP actor shards -> a HF model folder (``python -m verl.model_merger merge``), atomically."""
    with atomic_dir(target) as tmp:
        subprocess.run([sys.executable, "-m", "verl.model_merger", "merge", "--backend", "fsdp", "--local_dir",
                        str(actor_dir), "--target_dir", str(tmp)], check=True)


def run(job_cfg: dict, *, model: str, data: str, out: str, metrics: str, checkpoints: str | None, gpus: int) -> None:
    """One RL run on verl; writes ``out`` (HF folder), ``metrics`` (JSON) and ``checkpoints/step_<k>``."""
    from rlrt.backends.verl.overrides import hydra_overrides, hydra_value

    spec = get_method(job_cfg["method"])
    settings = spec.make_settings(job_cfg.get("method_cfg") or {}, where="method_cfg")
    run_name = str(job_cfg.get("run") or spec.name)
    backbone = str(job_cfg["backbone"]["name"])
    work = Path(f"{out}.verl")  # verl's own state: survives a failed / requeued job
    work.mkdir(parents=True, exist_ok=True)
    train_file = work / "train.parquet"
    rows = verl_rows(read_problems(data))
    if job_cfg.get("task", "arithmetic") == "countdown":  # the reward function grades these rows as countdown
        from rlrt.backends.verl.reward import COUNTDOWN

        rows = [{**r, "data_source": COUNTDOWN} for r in rows]
    write_verl_parquet(rows, train_file)
    ckpt, history_path = work / "ckpt", work / "history.jsonl"
    overrides = hydra_overrides(job_cfg, model_path=str(model), train_file=str(train_file),
                                val_file=str(train_file), ckpt_dir=str(ckpt), n_gpus=int(gpus),
                                experiment_name=f"rl/{backbone}/{run_name}")
    overrides.append(f"++rlrt.history_path={hydra_value(str(history_path))}")
    env = dict(os.environ)
    tracking = job_cfg.get("tracking") or {}
    if tracking.get("uri"):  # else the workflow's MLFLOW_TRACKING_URI, inherited
        env["MLFLOW_TRACKING_URI"] = str(tracking["uri"])
    env.setdefault("RLRT_GRADER_WORKERS", str(int(job_cfg.get("grader_workers") or 2)))
    log.info("verl rl %s on %s: %d overrides, state in %s", run_name, backbone, len(overrides), work)
    subprocess.run([sys.executable, "-m", "rlrt.backends.verl.trainer", *overrides], check=True, env=env)

    steps = int(job_cfg["rl"]["steps"])
    merge_checkpoint(ckpt / f"global_step_{steps}" / "actor", Path(out))
    save_steps = sorted(int(k) for k in job_cfg["rl"].get("save_steps") or [] if 0 < int(k) < steps)
    if checkpoints:
        with atomic_dir(checkpoints) as tmp:
            for k in save_steps:
                src = ckpt / f"global_step_{k}" / "actor"
                if not src.exists():
                    raise FileNotFoundError(f"{src}: verl saved no checkpoint at step {k} (save_freq must divide "
                                            "every rl.save_steps entry)")
                merge_checkpoint(src, tmp / f"step_{k}")
    history = read_history(history_path)
    write_json(metrics, {"summary": summarize(history, method=spec.name, run=run_name, backbone=backbone),
                         "method_cfg": as_dict(settings), "history": history, "run": run_name,
                         "save_steps": save_steps})
    shutil.rmtree(ckpt, ignore_errors=True)  # the run is complete: its resume state is no longer needed
