"""RLT student SFT at paper scale on verl 0.9.1's SFT trainer (RLT paper Sec. 4: lr 1e-5, 3 epochs, cosine,
warm-up 0.1 -- the values come from the job config's ``student_sft`` block).

verl 0.9.1 ships ``python -m verl.trainer.sft_trainer`` (config ``trainer/config/sft_trainer_engine.yaml``); the
older ``fsdp_sft_trainer`` with prompt/response columns is gone. Its dataset (``MultiTurnSFTDataset``) reads one
``messages`` column of chat turns and puts the loss on the assistant turns, rendered by the model's own chat
template. So a distillation row (the ``rlt_distill`` stage's JSONL: id, question, solution, explanation, ...)
becomes the student's chat: the user turn ``user_message(question)`` (the same prompt the local engine and
evaluation use) and the assistant turn ``student_text(explanation, solution)`` (think block, then solution).
The one difference from the local engine's SFT example: verl ends the assistant turn with the chat template's
end-of-turn token (``<|im_end|>``) where the local engine appends EOS; for Qwen chat models those coincide.

What has NEVER run (no GPU here): :func:`run_student_sft` (torchrun + FSDP). The parquet and the overrides are
tested on CPU (the overrides by composing verl's own yaml with Hydra).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

from rlrt.io import atomic_dir, atomic_path
from rlrt.tasks.prompts import user_message
from rlrt.tasks.rlt_format import student_text

log = logging.getLogger("rlrt.verl.rlt_sft")

SFT_MODULE = "verl.trainer.sft_trainer"
SFT_CONFIG = "sft_trainer_engine"
REQUIRED = ("id", "question", "solution", "explanation")


def student_messages(question: str, explanation: str, solution: str) -> list[dict[str, str]]:
    """The student-format chat of one trace: user = the question prompt, assistant = think block + solution."""
    return [{"role": "user", "content": user_message(question)},
            {"role": "assistant", "content": student_text(explanation, solution)}]


def distill_to_sft_rows(rows: Sequence[dict], keep_ids: Iterable[str] | None = None) -> list[dict]:
    """Distillation traces -> verl SFT rows ``{id, messages}``, in input order.

    ``keep_ids``: the small subset (the first ``n`` question ids of questions.jsonl, as the local stage). Rows
    the teacher left without tags are kept (the paper distils raw outputs; ``rlt_distill`` already cut them).
    A row missing a field, or whose ``text`` disagrees with its explanation + solution, is an error.
    """
    keep = None if keep_ids is None else {str(i) for i in keep_ids}
    out = []
    for i, r in enumerate(rows):
        missing = [k for k in REQUIRED if k not in r]
        if missing:
            raise KeyError(f"distillation row {i} ({r.get('id', '?')}): missing {missing}")
        if keep is not None and str(r["id"]) not in keep:
            continue
        msgs = student_messages(r["question"], r["explanation"], r["solution"])
        if "text" in r and r["text"] != msgs[1]["content"]:
            raise ValueError(f"distillation row {i} ({r['id']}): 'text' is not student_text(explanation, solution)")
        out.append({"id": str(r["id"]), "messages": msgs})
    if not out:
        raise ValueError("no distillation rows left to train on" + (" after the id subset" if keep else ""))
    return out


def write_parquet(rows: Sequence[dict], path: str | os.PathLike) -> Path:
    """Rows (dicts with nested lists / dicts) -> one parquet file, written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pylist(list(rows)), tmp)
    return Path(path)


def sft_overrides(job_cfg: dict[str, Any], model_path: str, train_file: str, ckpt_dir: str,
                  n_examples: int) -> list[str]:
    """Hydra overrides for ``verl.trainer.sft_trainer`` with the same budget and schedule as the local stage.

    ``job_cfg["student_sft"]``: ``steps`` (optimizer steps, the same for every data source and size, as the local
    stage and the paper's equal distillation budget), ``batch_size`` (sequences per step, capped at the data
    size), ``lr`` (paper 1e-5); optional ``micro_batch_per_gpu``. ``job_cfg["max_length"]``: tokens per
    sequence (longer rows are an error, never silently cut). The schedule is the local one
    (``rlrt.backends.local.lm``): warm-up of min(10, max(1, steps // 10)) steps, cosine to 0.1 x lr, weight
    decay 0.01. Also ``seed``, ``gpus``, ``tracking``, ``verl.extra_overrides``.
    """
    sft = job_cfg["student_sft"]
    bs = min(int(sft["batch_size"]), int(n_examples))
    steps = int(sft["steps"])
    warmup = min(10, max(1, steps // 10))
    epochs = -(-steps * bs // int(n_examples))  # enough epochs to reach `steps`; total_training_steps stops it
    gpus = int(job_cfg.get("gpus") or 1)
    o = [
        f"model.path={model_path}",
        f"data.train_files={train_file}", "data.val_files=null", "data.messages_key=messages",
        f"data.train_batch_size={bs}", f"data.max_length={int(job_cfg['max_length'])}", "data.truncation=error",
        f"data.micro_batch_size_per_gpu={int(sft.get('micro_batch_per_gpu', 1))}",
        f"optim.lr={float(sft['lr'])}", "optim.lr_scheduler_type=cosine", f"optim.lr_warmup_steps={warmup}",
        "optim.min_lr_ratio=0.1", "optim.weight_decay=0.01",
        f"trainer.total_epochs={epochs}", f"trainer.total_training_steps={steps}",
        f"trainer.default_local_dir={ckpt_dir}",
        f"trainer.seed={int(job_cfg.get('seed', 0))}", f"trainer.n_gpus_per_node={gpus}", "trainer.nnodes=1",
        "trainer.resume_mode=auto", "trainer.project_name=rlrt",
        f"trainer.experiment_name=rlt_sft_{job_cfg.get('student', 'student')}_{job_cfg.get('data', 'rlt')}",
        f"trainer.logger={'[console,mlflow]' if job_cfg.get('tracking') else '[console]'}",
        "checkpoint.save_contents=[model,optimizer,extra,hf_model]",
    ]
    return o + list((job_cfg.get("verl") or {}).get("extra_overrides", []))


def final_hf_model(ckpt_dir: str | os.PathLike) -> Path:
    """The Hugging Face export of the last ``global_step_N`` checkpoint (``.../huggingface/config.json``)."""
    steps = sorted(Path(ckpt_dir).glob("global_step_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
    for step in reversed(steps):
        found = sorted(step.rglob("huggingface/config.json"))
        if found:
            return found[0].parent
    raise FileNotFoundError(f"no Hugging Face export under {ckpt_dir}/global_step_*/**/huggingface")


def run_student_sft(job_cfg: dict[str, Any], model_path: str, traces: Sequence[dict], out: str | os.PathLike,
                    work_dir: str | os.PathLike, keep_ids: Iterable[str] | None = None) -> Path:
    """Parquet -> ``torchrun -m verl.trainer.sft_trainer`` -> the final HF model copied atomically to ``out``.

    NEVER RUN (no GPU here). The checkpoints stay in ``work_dir/ckpt`` (outside the rule's outputs: a requeued
    job resumes with ``resume_mode=auto``).
    """
    work = Path(work_dir)
    rows = distill_to_sft_rows(traces, keep_ids)
    train = write_parquet(rows, work / "student_sft.parquet")
    ckpt = work / "ckpt"
    gpus = int(job_cfg.get("gpus") or 1)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
           "-m", SFT_MODULE, *sft_overrides(job_cfg, model_path, str(train), str(ckpt), len(rows))]
    log.info("verl student SFT on %d traces: %s", len(rows), " ".join(cmd))
    subprocess.run(cmd, check=True)
    src = final_hf_model(ckpt)
    with atomic_dir(out) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
    return Path(out)
