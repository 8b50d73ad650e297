"""The local RL engine: GRPO's loop (DAPO recipe) with the teacher pass that RLSD/RLRT need.

One step, in order (every equation lives in ``rlrt.methods``; this file only moves tensors around):

1. sample ``question_batch`` prompts x ``n_rollouts`` responses with θ_old (temperature 1.0, KV cache);
2. grade them (r in {0,1}) and compute group advantages A (std-normalised or not, per method);
3. score the sampled ids under θ_old with the student prompt -> log P_S(y_t)           (no grad, once);
4. if the method has a teacher view: build each sample's privileged context, score the *same* response ids
   under θ_old with the teacher prompt -> log P_T(y_t)                                  (no grad, once);
   then Δ_t, w_t and the per-token advantages of Eq. 7 (``token_advantages``);
5. one PPO epoch over mini-batches of the rollouts: clipped surrogate (clip-higher), token-mean, AdamW.

Doing the teacher pass once per step on the driver, with θ_old, is the cheaper of the two designs the reference
implementations use (SDPO/RLSD rescore inside every actor micro-batch); for a single PPO epoch the two agree on
the first mini-batch and differ only by the policy drift within one step afterwards.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from rlrt.backends.local.rollout import Rollouts, left_pad, response_logits, sample, score_responses
from rlrt.methods.advantages import group_advantages, linear_decay
from rlrt.methods.losses import clipped_surrogate, entropy_from_logits, token_logprobs
from rlrt.methods.registry import MethodSpec, token_advantages
from rlrt.methods.weights import log_ratio
from rlrt.tasks.prompts import chat_prompt, user_message
from rlrt.teacher import build_contexts, teacher_user_message


@dataclass
class RLConfig:
    steps: int
    question_batch: int
    mini_batch: int  # questions per PPO mini-batch (paper: 256 questions, mini-batch 128)
    n_rollouts: int = 8
    max_response_length: int = 64
    temperature: float = 1.0
    lr: float = 1e-6
    warmup_steps: int = 10
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    clip_low: float = 0.2
    clip_high: float = 0.28
    loss_agg: str = "token-mean"
    micro_batch: int = 64
    gen_batch_size: int = 256
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RLConfig":
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in fields})


def warmup_lr(step: int, warmup_steps: int) -> float:
    """Linear warm-up factor for optimizer step ``step`` (0-based), then constant (verl's default schedule)."""
    return 1.0 if warmup_steps <= 0 else min(1.0, (step + 1) / warmup_steps)


def teacher_inputs(tokenizer, user_msgs: Sequence[str], contexts: list[list[str | None]], kind: str, n: int):
    """Left-padded teacher prompt ids (B, P') and has_context (B,) for grouped rows (B = G * n)."""
    prompts, has = [], []
    for g, msg in enumerate(user_msgs):
        for i in range(n):
            c = contexts[g][i]
            has.append(c is not None)
            prompts.append(tokenizer(chat_prompt(tokenizer, teacher_user_message(msg, c, kind)),
                                     add_special_tokens=False)["input_ids"])
    ids, mask = left_pad(prompts, tokenizer.pad_token_id)
    return ids, mask, torch.tensor(has)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    m = mask.to(x.dtype)
    return float((x * m).sum() / m.sum().clamp(min=1))


def rl_step(
    model, tokenizer, optimizer, spec: MethodSpec, method_cfg: dict[str, Any], cfg: RLConfig,
    batch: Sequence[dict], step: int, grade_fn: Callable[[list[str], list[str]], list[float]],
) -> dict[str, float]:
    """One RL step on ``batch`` (rows with question / answer / solution). Returns the step's metrics."""
    t0 = time.perf_counter()
    n, G = cfg.n_rollouts, len(batch)
    user_msgs = [user_message(row["question"]) for row in batch]
    prompts = [chat_prompt(tokenizer, m) for m in user_msgs]
    ro: Rollouts = sample(model, tokenizer, prompts, n, cfg.max_response_length, temperature=cfg.temperature,
                          seed=cfg.seed * 100003 + step, batch_size=cfg.gen_batch_size)
    t_gen = time.perf_counter() - t0

    answers = [row["answer"] for row in batch for _ in range(n)]
    rewards = torch.tensor(grade_fn(ro.texts, answers), dtype=torch.float32)  # (B,)
    adv = group_advantages(rewards.view(G, n), bool(method_cfg["norm_adv_by_std"])).reshape(-1)  # (B,)

    old_logp, _ = score_responses(model, ro.prompt_ids, ro.prompt_mask, ro.response_ids, ro.response_mask,
                                  cfg.temperature, cfg.micro_batch)
    lam = linear_decay(step, float(method_cfg.get("lambda_init", 0.0)), method_cfg.get("lambda_decay_steps"))
    t1 = time.perf_counter()
    delta = has_ctx = None
    if spec.needs_teacher:
        kind = method_cfg.get("context", spec.context)
        texts = [ro.texts[g * n:(g + 1) * n] for g in range(G)]
        ctx = build_contexts(kind, rewards.view(G, n).tolist(), texts, [row["solution"] for row in batch])
        t_ids, t_mask, has_ctx = teacher_inputs(tokenizer, user_msgs, ctx, kind, n)
        teacher_logp, _ = score_responses(model, t_ids, t_mask, ro.response_ids, ro.response_mask,
                                          cfg.temperature, cfg.micro_batch)
        delta = log_ratio(teacher_logp, old_logp)
    t_teacher = time.perf_counter() - t1
    tok_adv, weight = token_advantages(spec, adv, ro.response_mask, rewards, delta, has_ctx, lam,
                                       float(method_cfg.get("eps_w", 0.2)))

    # One PPO epoch over mini-batches (in sampling order: each mini-batch is whole groups).
    model.train()
    rows_per_mb = cfg.mini_batch * n
    stats: dict[str, list[float]] = {"loss": [], "clip_frac": [], "entropy": [], "approx_kl": [], "grad_norm": []}
    for s in range(0, ro.response_ids.shape[0], rows_per_mb):
        mb_end = min(s + rows_per_mb, ro.response_ids.shape[0])
        mb = slice(s, mb_end)
        optimizer.zero_grad(set_to_none=True)
        n_tok = ro.response_mask[mb].sum().clamp(min=1)
        mb_loss = 0.0
        for m0 in range(s, mb_end, cfg.micro_batch):
            sl = slice(m0, min(m0 + cfg.micro_batch, mb_end))
            logits = response_logits(model, ro.prompt_ids[sl], ro.prompt_mask[sl], ro.response_ids[sl],
                                     ro.response_mask[sl])
            logp = token_logprobs(logits, ro.response_ids[sl], cfg.temperature)
            mask = ro.response_mask[sl]
            loss, st = clipped_surrogate(logp, old_logp[sl], tok_adv[sl], mask, cfg.clip_low, cfg.clip_high,
                                         cfg.loss_agg)
            # gradient accumulation: weight each micro-batch so the sum equals the whole mini-batch's aggregate
            if cfg.loss_agg == "token-mean":
                scale = float(mask.sum() / n_tok)
            else:
                scale = (sl.stop - sl.start) / (mb_end - s)
            (loss * scale).backward()
            mb_loss += float(loss.detach() * scale)
            with torch.no_grad():
                stats["entropy"].append(_masked_mean(entropy_from_logits(logits.detach() / cfg.temperature), mask))
            stats["clip_frac"].append(st["clip_frac"])
            stats["approx_kl"].append(st["approx_kl"])
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        stats["loss"].append(mb_loss)
        stats["grad_norm"].append(float(gn))

    applied = weight[ro.response_mask.bool()]
    groups = rewards.view(G, n)
    return {
        "step": step,
        "reward_mean": float(rewards.mean()),
        "accuracy": 100.0 * float(rewards.mean()),
        "solve_rate": 100.0 * float((groups.max(dim=1).values > 0.5).float().mean()),
        "mixed_groups": float(((groups.max(1).values > 0.5) & (groups.min(1).values < 0.5)).float().mean()),
        "response_length": float(ro.lengths.float().mean()),
        "entropy": sum(stats["entropy"]) / max(len(stats["entropy"]), 1),
        "clip_frac": sum(stats["clip_frac"]) / max(len(stats["clip_frac"]), 1),
        "approx_kl": sum(stats["approx_kl"]) / max(len(stats["approx_kl"]), 1),
        "loss": sum(stats["loss"]) / max(len(stats["loss"]), 1),
        "grad_norm": sum(stats["grad_norm"]) / max(len(stats["grad_norm"]), 1),
        "weight_mean": float(applied.mean()) if applied.numel() else 1.0,
        "weight_max": float(applied.max()) if applied.numel() else 1.0,
        "context_frac": float(has_ctx.float().mean()) if has_ctx is not None else 0.0,
        "lambda": lam,
        "lr": optimizer.param_groups[0]["lr"],
        "time_gen": t_gen,
        "time_teacher": t_teacher,
        "step_time": time.perf_counter() - t0,
    }


def train(
    model, tokenizer, train_rows: Sequence[dict], spec: MethodSpec, method_cfg: dict[str, Any], cfg: RLConfig,
    grade_fn: Callable[[list[str], list[str]], list[float]],
    on_step: Callable[[dict[str, float]], None] | None = None, progress: bool = True,
) -> list[dict[str, float]]:
    """Run ``cfg.steps`` RL steps; question batches are drawn without replacement, epoch by epoch, from a seeded
    shuffle. Returns the list of per-step metrics."""
    lr = float(method_cfg.get("lr", cfg.lr))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_lr(s, cfg.warmup_steps))
    rng = random.Random(cfg.seed)
    order: list[int] = []
    history = []
    steps = range(cfg.steps)
    if progress:
        from rlrt.progress import progress as bar

        steps = bar(steps, desc=f"rl:{spec.name}", unit="step")
    for step in steps:
        if len(order) < cfg.question_batch:
            perm = list(range(len(train_rows)))
            rng.shuffle(perm)
            order.extend(perm)
        idx, order = order[: cfg.question_batch], order[cfg.question_batch:]
        metrics = rl_step(model, tokenizer, optimizer, spec, method_cfg, cfg, [train_rows[i] for i in idx], step,
                          grade_fn)
        sched.step()
        history.append(metrics)
        if on_step:
            on_step(metrics)
        if progress and hasattr(steps, "set_postfix"):
            steps.set_postfix(acc=f"{metrics['accuracy']:.1f}", len=f"{metrics['response_length']:.0f}", refresh=False)
    return history
