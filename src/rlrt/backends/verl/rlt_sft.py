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

The teacher's SFT warm-up runs on the same trainer with a dataset of ours (:class:`TeacherSFTDataset`, verl's
``data.custom_cls``): its prompt ends inside the teacher's assistant turn and the loss covers the explanation, its
end tag and EOS only, which no chat-message dataset can express; the dataset builds each example with the local
engine's ``teacher_example``, so both backends train on the same ids under the same mask.

What has NEVER run (no GPU here): :func:`run_student_sft` and :func:`run_teacher_sft` (torchrun + FSDP). The
parquets, the teacher dataset (through verl's own ``create_sft_dataset`` and collator) and the overrides are
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

import torch

from rlrt.backends.local.rlt import teacher_example
from rlrt.backends.verl.overrides import hydra_run_dir
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


TEACHER_FIELDS = ("question", "solution", "explanation")


def teacher_sft_rows(rows: Sequence[dict]) -> list[dict]:
    """questions.jsonl rows (id, question, solution, explanation = the reference trace) -> the teacher SFT parquet's
    rows, in input order; a row missing a field raises KeyError naming it."""
    out = []
    for i, r in enumerate(rows):
        missing = [k for k in ("id", *TEACHER_FIELDS) if k not in r]
        if missing:
            raise KeyError(f"teacher SFT row {i} ({r.get('id', '?')}): missing {missing}")
        out.append({"id": str(r["id"]), **{k: str(r[k]) for k in TEACHER_FIELDS}})
    if not out:
        raise ValueError("no teacher SFT rows")
    return out


class TeacherSFTDataset(torch.utils.data.Dataset):
    """verl SFT dataset (``data.custom_cls``) for the RLT teacher's warm-up: one parquet row (question, solution,
    explanation) -> ``rlrt.backends.local.rlt.teacher_example`` (ids; loss mask 1 on the explanation, its end tag
    and EOS). Constructed by verl's ``create_sft_dataset`` as its own datasets are; items in verl's layout:
    ``no_padding`` -> input_ids, position_ids, loss_mask (L,); ``right`` -> padded to ``max_length`` with an
    attention_mask. A row longer than ``data.max_length`` is an error (never cut)."""

    def __init__(self, parquet_files, tokenizer, config, processor=None, max_samples: int = -1):
        import pyarrow.parquet as pq

        files = [parquet_files] if isinstance(parquet_files, (str, os.PathLike)) else list(parquet_files)
        rows = [r for f in files for r in pq.read_table(str(f)).to_pylist()]
        if max_samples is not None and int(max_samples) > 0:
            rows = rows[: int(max_samples)]
        self.max_length = int(config.get("max_length"))
        self.pad_mode = str(config.get("pad_mode", "no_padding"))
        if self.pad_mode not in ("no_padding", "right"):
            raise ValueError(f"TeacherSFTDataset: data.pad_mode {self.pad_mode!r} (no_padding or right)")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.examples = []
        for r in teacher_sft_rows(rows):
            ids, mask = teacher_example(tokenizer, r["question"], r["solution"], r["explanation"])
            if len(ids) > self.max_length:
                raise ValueError(f"teacher SFT row {r['id']}: {len(ids)} tokens > data.max_length={self.max_length}")
            self.examples.append((ids, mask))

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids, mask = self.examples[i]
        item = {"input_ids": torch.tensor(ids, dtype=torch.long), "position_ids": torch.arange(len(ids)),
                "loss_mask": torch.tensor(mask, dtype=torch.long)}
        if self.pad_mode == "right":
            pad = self.max_length - len(ids)
            item = {"input_ids": torch.nn.functional.pad(item["input_ids"], (0, pad), value=self.pad_id),
                    "attention_mask": torch.tensor([1] * len(ids) + [0] * pad),
                    "position_ids": torch.nn.functional.pad(item["position_ids"], (0, pad), value=0),
                    "loss_mask": torch.nn.functional.pad(item["loss_mask"], (0, pad), value=0)}
        return item


def sft_overrides(job_cfg: dict[str, Any], model_path: str, train_file: str, ckpt_dir: str,
                  n_examples: int, block: str = "student_sft") -> list[str]:
    """Hydra overrides for ``verl.trainer.sft_trainer`` with the same budget and schedule as the local stage.

    ``job_cfg[block]`` (``student_sft``, or ``teacher_sft`` for the teacher's warm-up, which then reads its parquet
    through :class:`TeacherSFTDataset`): ``steps`` (optimizer steps, the same for every data source and size, as
    the local stage and the paper's equal distillation budget), ``batch_size`` (sequences per step, capped at the
    data size), ``lr`` (paper 1e-5); optional ``micro_batch_per_gpu``. ``job_cfg["max_length"]``: tokens per
    sequence (longer rows are an error, never silently cut). The schedule is the local one
    (``rlrt.backends.local.lm``): warm-up of min(10, max(1, steps // 10)) steps, cosine to 0.1 x lr, weight
    decay 0.01. Also ``seed``, ``gpus``, ``tracking``, ``verl.extra_overrides``.

    verl's SFT trainer packs micro-batches by tokens (``data.use_dynamic_bsz``) up to
    ``data.max_token_len_per_gpu``, and asserts that one sequence fits (``seqlen_balancing``: ``max_token_len >=
    max_seq_len``): it is set to ``max_length`` (verl's own default, 8,192, is below the paper's sequences).
    ``resume_every`` (the block's resumable-state cadence) is verl's ``trainer.save_freq``; without it verl saves
    only at the end and a requeued job starts over.
    """
    sft = job_cfg[block]
    bs = min(int(sft["batch_size"]), int(n_examples))
    steps = int(sft["steps"])
    warmup = min(10, max(1, steps // 10))
    epochs = -(-steps * bs // int(n_examples))  # enough epochs to reach `steps`; total_training_steps stops it
    gpus = int(job_cfg.get("gpus") or 1)
    max_length = int(job_cfg["max_length"])
    save_freq = int(sft.get("resume_every") or 0) or -1  # 0 / absent: verl's -1, the final checkpoint only
    o = [
        f"model.path={model_path}",
        f"data.train_files={train_file}", "data.val_files=null", "data.messages_key=messages",
        f"data.train_batch_size={bs}", f"data.max_length={max_length}", "data.truncation=error",
        "data.use_dynamic_bsz=True", f"data.max_token_len_per_gpu={max_length}",
        f"data.micro_batch_size_per_gpu={int(sft.get('micro_batch_per_gpu', 1))}",
        f"optim.lr={float(sft['lr'])}", "optim.lr_scheduler_type=cosine", f"optim.lr_warmup_steps={warmup}",
        "optim.min_lr_ratio=0.1", "optim.weight_decay=0.01",
        f"trainer.total_epochs={epochs}", f"trainer.total_training_steps={steps}",
        f"trainer.default_local_dir={ckpt_dir}",
        f"trainer.seed={int(job_cfg.get('seed', 0))}", f"trainer.n_gpus_per_node={gpus}", "trainer.nnodes=1",
        "trainer.resume_mode=auto", f"trainer.save_freq={save_freq}", "trainer.project_name=rlrt",
        "trainer.experiment_name=" + ("rlt_teacher_sft" if block == "teacher_sft" else
                                      f"rlt_sft_{job_cfg.get('student', 'student')}_{job_cfg.get('data', 'rlt')}"),
        f"trainer.logger={'[console,mlflow]' if job_cfg.get('tracking') else '[console]'}",
        "checkpoint.save_contents=[model,optimizer,extra,hf_model]",
    ]
    if block == "teacher_sft":
        o += [f"data.custom_cls.path={Path(__file__).resolve()}", f"data.custom_cls.name={TeacherSFTDataset.__name__}"]
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
    return _run_sft(job_cfg, model_path, train, len(rows), out, work, "student_sft")


def run_teacher_sft(job_cfg: dict[str, Any], model_path: str, questions: Sequence[dict], out: str | os.PathLike,
                    work_dir: str | os.PathLike) -> Path:
    """The teacher's SFT warm-up on verl: questions.jsonl -> parquet -> verl's SFT trainer with
    :class:`TeacherSFTDataset` -> the final HF model at ``out``. NEVER RUN (no GPU here)."""
    work = Path(work_dir)
    rows = teacher_sft_rows(questions)
    train = write_parquet(rows, work / "teacher_sft.parquet")
    return _run_sft(job_cfg, model_path, train, len(rows), out, work, "teacher_sft")


def _run_sft(job_cfg: dict[str, Any], model_path: str, train: Path, n: int, out: str | os.PathLike, work: Path,
             block: str) -> Path:
    ckpt = work / "ckpt"
    gpus = int(job_cfg.get("gpus") or 1)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
           "-m", SFT_MODULE, *sft_overrides(job_cfg, model_path, str(train), str(ckpt), n, block), hydra_run_dir(work)]
    log.info("verl %s on %d rows: %s", block, n, " ".join(cmd))
    subprocess.run(cmd, check=True)
    src = final_hf_model(ckpt)
    with atomic_dir(out) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
    return Path(out)
