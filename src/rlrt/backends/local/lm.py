"""Language-model training for the backbones: pretraining on task text and SFT (loss on the response only).

Examples are (input ids, loss mask) pairs built fresh every step from a seeded rng, so each epoch sees a new
random step order for the same problem (several reference paths per question).
"""

from __future__ import annotations

import random
import time
from typing import Callable, Sequence

import torch

from rlrt.backends.local import loop as train_loop
from rlrt.backends.local.loop import warmup_cosine_lr
from rlrt.backends.local.resume import Resumable
from rlrt.methods.losses import all_finite
from rlrt.tasks.prompts import chat_prompt

Example = tuple[list[int], list[int]]  # token ids, loss mask (1 = predict this token)


def chat_example(tokenizer, user: str, assistant: str, loss_on_prompt: bool) -> Example:
    """One chat-formatted example; the loss covers the assistant turn (and its EOS), plus the prompt if asked."""
    p_ids = tokenizer(chat_prompt(tokenizer, user), add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(assistant, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    mask = [1 if loss_on_prompt else 0] * len(p_ids) + [1] * len(r_ids)
    if loss_on_prompt:
        mask[0] = 0  # nothing predicts the first token
    return p_ids + r_ids, mask


def collate(examples: Sequence[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad to (B, L): ids, attention mask, labels (-100 where the loss mask is 0)."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for i, (x, m) in enumerate(examples):
        ids[i, : len(x)] = torch.tensor(x)
        attn[i, : len(x)] = 1
        labels[i, : len(x)] = torch.where(torch.tensor(m).bool(), torch.tensor(x), torch.tensor(-100))
    return ids, attn, labels


def train_lm(
    model, tokenizer, make_batch: Callable[[random.Random, int], list[Example]], steps: int, batch_size: int,
    lr: float, warmup_steps: int = 10, weight_decay: float = 0.01, grad_clip: float = 1.0, seed: int = 0,
    desc: str = "lm", on_step: Callable[[dict], None] | None = None, log_every: int = 10,
    resume: Resumable | None = None,
) -> list[dict]:
    """AdamW with linear warm-up and cosine decay to 10% of ``lr``; next-token loss on masked positions.

    ``make_batch(rng, batch_size)`` draws a batch with the loop's seeded RNG. With ``resume``, the training state is
    saved every ``resume.every`` steps and loaded at start if present: a killed run continues with the same numbers
    (the shared loop, ``rlrt.backends.local.loop``). A step whose loss or gradient norm is NaN / inf takes no
    optimizer step; its row records that loss, ``grad_norm`` (NaN when no backward ran) and ``nonfinite_skips`` 1.
    """
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)

    def schedule(s: int) -> float:
        return warmup_cosine_lr(s, warmup_steps, steps)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    state = train_loop.Loop(model, opt, sched, random.Random(seed), resume or Resumable())
    model.train()

    def step_fn(step: int) -> dict:
        t0 = time.perf_counter()
        ids, attn, labels = collate(make_batch(state.rng, batch_size), tokenizer.pad_token_id)
        loss = model(input_ids=ids, attention_mask=attn, labels=labels, use_cache=False).loss
        opt.zero_grad(set_to_none=True)
        gn = torch.tensor(float("nan"))
        if all_finite(loss):
            loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        skip = not all_finite(loss, gn)
        if skip:  # a NaN / inf loss or gradient never reaches the weights (the loop logs the step)
            opt.zero_grad(set_to_none=True)
        else:
            opt.step()
        # the lr the scheduler sets after this step (LambdaLR: base lr x schedule(step + 1))
        return {"step": step, "loss": float(loss.detach()), "grad_norm": float(gn), "lr": lr * schedule(step + 1),
                "nonfinite_skips": int(skip), "step_time": time.perf_counter() - t0}

    def log(rec: dict) -> None:
        if on_step and (rec["step"] % log_every == 0 or rec["step"] == steps - 1):
            on_step(rec)

    history = train_loop.run(state, step_fn, steps, desc=desc, on_step=log,
                             postfix=lambda rec: {"loss": f"{rec['loss']:.3f}"})
    model.eval()
    return history
