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

Around step 3, for a run that may be killed and requeued:

* before starting, the model's context (its ``config.json``) must hold ``verl.max_prompt_length`` + the backbone's
  ``max_response_length`` (:func:`check_rollout_context`; refused naming both keys and numbers; the rollout's
  ``max_model_len`` is exactly that sum, ``rlrt.backends.verl.overrides``);
* a run whose final step's checkpoint is already there (``latest_checkpointed_iteration.txt`` = ``rl.steps``:
  :func:`finished_step`) is merged, never trained again: verl's ``fit`` would load step N, run step N+1 and add a
  row to the history;
* checkpoints: :func:`prune_checkpoints` keeps the latest (resume) whole and the ``rl.save_steps`` ones without
  their optimizer state (what the merge reads), and removes the rest; the trainer calls it after every save, this
  module once before starting (leftovers of a killed job);
* MLflow (``tracking`` set): one run for the whole job, however often it is requeued: its id is kept in
  ``<out>.verl/mlflow_run_id`` and exported as ``MLFLOW_RUN_ID``, which verl's MLflow logger resumes
  (``rlrt.tracking.persistent_run_id``);
* Ray gets the job's CPUs (``SLURM_CPUS_PER_TASK``) and GPUs (``rlrt.backends.verl.overrides.allocated_cpus``).

What has NEVER run: steps 3 and 4 on a GPU. On CPU they run end to end with a tiny model (Ray, FSDP2 on gloo, a
``transformers`` rollout instead of vLLM: tests/test_verl_cpu_smoke.py, ``make verl-cpu-smoke``). Tested on CPU
also: :func:`verl_rows`, :func:`write_verl_parquet`, :func:`read_history`, :func:`summarize`, the helpers above and
:func:`run` with stand-ins for the trainer and the merger (tests/test_verl_run_guards.py).
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


TRACKER = "latest_checkpointed_iteration.txt"
"""verl's checkpoint tracker file in ``trainer.default_local_dir`` (written last by ``_save_checkpoint``)."""

OPTIMIZER_STATE = ("optim_world_size_", "extra_state_world_size_")
"""File-name prefixes of the resume-only parts of an FSDP checkpoint folder (the merge reads ``model_*``,
``fsdp_config.json`` and ``huggingface/``)."""


def latest_step(ckpt: str | os.PathLike) -> int | None:
    """The step verl would resume from: the tracker's value when its ``global_step_<k>`` folder exists, else None."""
    tracker = Path(ckpt) / TRACKER
    try:
        k = int(tracker.read_text().strip())
    except (OSError, ValueError):
        return None
    return k if (Path(ckpt) / f"global_step_{k}").is_dir() else None


def finished_step(ckpt: str | os.PathLike, steps: int) -> bool:
    """True when the run's final checkpoint is saved (tracker = ``steps`` and its actor folder exists)."""
    return latest_step(ckpt) == int(steps) and (Path(ckpt) / f"global_step_{steps}" / "actor").is_dir()


def prune_checkpoints(ckpt: str | os.PathLike, keep_steps: Sequence[int]) -> list[str]:
    """Keep what resume and the analyses need, remove the rest; returns what was removed (paths).

    The latest checkpoint (the tracker's) stays whole; a ``global_step_<k>`` with k in ``keep_steps`` (the
    ``rl.save_steps`` merged when the run ends) loses only its optimizer and extra state (:data:`OPTIMIZER_STATE`,
    about two thirds of an FSDP checkpoint with AdamW); every other ``global_step_<k>`` is removed. Without a
    tracker nothing is touched (verl writes it last, after a complete save)."""
    root = Path(ckpt)
    latest = latest_step(root)
    if latest is None:
        return []
    keep = {int(k) for k in keep_steps}
    removed = []
    for d in sorted(root.glob("global_step_*")):
        try:
            k = int(d.name.removeprefix("global_step_"))
        except ValueError:
            continue
        if k == latest or not d.is_dir():
            continue
        if k in keep:
            for f in sorted(d.glob("*/*")):
                if f.is_file() and f.name.startswith(OPTIMIZER_STATE):
                    f.unlink()
                    removed.append(str(f))
        else:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(str(d))
    return removed


def check_rollout_context(model: str | os.PathLike, job_cfg: Mapping[str, Any]) -> int:
    """``verl.max_prompt_length`` + ``max_response_length`` (the rollout's ``max_model_len``) against the model's
    context from its ``config.json``; returns the sum, raises ``ValueError`` naming both keys and numbers when the
    model cannot hold it. Logs a warning when the teacher view (``verl.max_reprompt_length`` + response) is longer
    than the context (the log-prob pass has no hard limit; positions past it are extrapolated)."""
    from rlrt.backends.verl.context import model_context

    v = job_cfg.get("verl") or {}
    backbone = job_cfg["backbone"]["name"]
    prompt, response = int(v["max_prompt_length"]), int(job_cfg["max_response_length"])
    ctx = model_context(model)["context"]
    if prompt + response > ctx:
        raise ValueError(f"{model}: verl.max_prompt_length ({prompt}) + backbones.{backbone}.max_response_length "
                         f"({response}) = {prompt + response} tokens, more than the model's context of {ctx} tokens "
                         "(config.json max_position_embeddings): lower one of them")
    reprompt = int(v.get("max_reprompt_length") or 0)
    if reprompt + response > ctx:
        log.warning("%s: the teacher view can reach verl.max_reprompt_length (%d) + max_response_length (%d) = %d "
                    "tokens, more than the model's context of %d; its log-probs past %d tokens are extrapolated",
                    model, reprompt, response, reprompt + response, ctx, ctx)
    return prompt + response


def merge_checkpoint(actor_dir: Path, target: Path) -> None:
    """verl's FSDP actor shards -> a HF model folder (``python -m verl.model_merger merge``), atomically."""
    with atomic_dir(target) as tmp:
        subprocess.run([sys.executable, "-m", "verl.model_merger", "merge", "--backend", "fsdp", "--local_dir",
                        str(actor_dir), "--target_dir", str(tmp)], check=True)


def run(job_cfg: dict, *, model: str, data: str, out: str, metrics: str, checkpoints: str | None, gpus: int) -> None:
    """One RL run on verl; writes ``out`` (HF folder), ``metrics`` (JSON) and ``checkpoints/step_<k>``."""
    from rlrt.backends.verl.overrides import allocated_cpus, hydra_overrides, hydra_run_dir, hydra_value

    spec = get_method(job_cfg["method"])
    settings = spec.make_settings(job_cfg.get("method_cfg") or {}, where="method_cfg")
    run_name = str(job_cfg.get("run") or spec.name)
    backbone = str(job_cfg["backbone"]["name"])
    steps = int(job_cfg["rl"]["steps"])
    save_steps = sorted(int(k) for k in job_cfg["rl"].get("save_steps") or [] if 0 < int(k) < steps)
    check_rollout_context(model, job_cfg)
    work = Path(f"{out}.verl")  # verl's own state: survives a failed / requeued job
    work.mkdir(parents=True, exist_ok=True)
    train_file = work / "train.parquet"
    rows = verl_rows(read_problems(data))
    if job_cfg.get("task", "arithmetic") == "countdown":  # the reward function grades these rows as countdown
        from rlrt.backends.verl.reward import COUNTDOWN

        rows = [{**r, "data_source": COUNTDOWN} for r in rows]
    write_verl_parquet(rows, train_file)
    ckpt, history_path = work / "ckpt", work / "history.jsonl"
    experiment_name = f"rl/{backbone}/{run_name}"
    overrides = hydra_overrides(job_cfg, model_path=str(model), train_file=str(train_file),
                                val_file=str(train_file), ckpt_dir=str(ckpt), n_gpus=int(gpus),
                                experiment_name=experiment_name, n_cpus=allocated_cpus())
    overrides.append(f"++rlrt.history_path={hydra_value(str(history_path))}")
    overrides.append(hydra_run_dir(work))
    env = dict(os.environ)
    tracking = job_cfg.get("tracking") or {}
    if tracking.get("uri"):  # else the workflow's MLFLOW_TRACKING_URI, inherited
        env["MLFLOW_TRACKING_URI"] = str(tracking["uri"])
    env.setdefault("RLRT_GRADER_WORKERS", str(int(job_cfg.get("grader_workers") or 2)))
    if finished_step(ckpt, steps):  # a requeue after the last save: merge, never train step N+1
        log.info("verl rl %s on %s: step %d's checkpoint is saved; not training again", run_name, backbone, steps)
    else:
        prune_checkpoints(ckpt, save_steps)  # leftovers of a killed job
        if job_cfg.get("tracking"):  # one MLflow run over every requeue (verl's logger resumes MLFLOW_RUN_ID)
            from rlrt.tracking import persistent_run_id

            rid = persistent_run_id(work / "mlflow_run_id", {**tracking, "uri": env.get("MLFLOW_TRACKING_URI")},
                                    str((tracking or {}).get("experiment") or "rlrt"), experiment_name)
            if rid:
                env["MLFLOW_RUN_ID"] = rid
        log.info("verl rl %s on %s: %d overrides, state in %s", run_name, backbone, len(overrides), work)
        subprocess.run([sys.executable, "-m", "rlrt.backends.verl.trainer", *overrides], check=True, env=env)
        if not finished_step(ckpt, steps):
            raise RuntimeError(f"verl's trainer exited without saving step {steps} in {ckpt} ({TRACKER}: "
                               f"{latest_step(ckpt)})")

    merge_checkpoint(ckpt / f"global_step_{steps}" / "actor", Path(out))
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
