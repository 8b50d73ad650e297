"""The local RL engine: GRPO's loop (DAPO recipe) with the teacher pass that RLSD/RLRT need.

One step, in order (every equation lives in ``rlrt.methods``; this file only moves tensors around):

1. sample ``question_batch`` prompts x ``n_rollouts`` responses with θ_old (temperature 1.0, KV cache);
2. grade them (r in {0,1}) and compute group advantages A (std-normalised or not, per method);
3. score the sampled ids under θ_old with the student prompt -> log P_S(y_t)           (no grad, once);
4. if the method has a teacher view: build each sample's privileged context, score the *same* response ids
   under θ_old with the teacher prompt -> log P_T(y_t)                                  (no grad, once);
   then Δ_t, w_t and the per-token advantages of Eq. 7 (``token_advantages``);
5. one PPO epoch over mini-batches of the rollouts: clipped surrogate (clip-higher), token-mean, AdamW.

The other objectives of the registry plug into the same step: DIVER adds its diversity bonus to the scores before
step 2; SDPO replaces the surrogate by the top-K JSD toward a separate frozen (or EMA) teacher, computed per
micro-batch from full teacher logits; SRPO keeps the surrogate on r = 1 rows and the entropy-weighted JSD on r = 0
rows with a correct sibling; GRPO+EB subtracts an entropy bonus.

Doing the teacher pass once per step on the driver, with θ_old, is the cheaper of the two designs the reference
implementations use (SDPO/RLSD rescore inside every actor micro-batch); for a single PPO epoch the two agree on
the first mini-batch and differ only by the policy drift within one step afterwards.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from rlrt.backends.local.resume import Resumable
from rlrt.backends.local.rollout import Rollouts, left_pad, response_logits, sample, score_responses
from rlrt.methods.advantages import group_advantages, linear_decay
from rlrt.methods.distill import sdpo_token_loss, srpo_entropy_weights, srpo_route
from rlrt.methods.diversity import diversity_bonus
from rlrt.methods.losses import agg_loss, entropy_bonus, entropy_from_logits, surrogate_tokens, token_logprobs
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
    clip_ratio_c: float | None = 3.0  # verl's dual-clip default; null disables it
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


def _teacher_logits(teacher_model, t_ids, t_mask, response_ids, response_mask) -> torch.Tensor:
    """Full teacher-view logits (b, R, V) for the sampled response ids, no gradient (SDPO / SRPO)."""
    was_training = teacher_model.training
    teacher_model.eval()
    with torch.no_grad():
        out = response_logits(teacher_model, t_ids, t_mask, response_ids, response_mask)
    teacher_model.train(was_training)
    return out


def rl_step(
    model, tokenizer, optimizer, spec: MethodSpec, method_cfg: dict[str, Any], cfg: RLConfig,
    batch: Sequence[dict], step: int, grade_fn: Callable[[list[str], list[str]], list[float]],
    teacher_model=None,
) -> dict[str, float]:
    """One RL step on ``batch`` (rows with question / answer / solution). Returns the step's metrics.

    ``teacher_model`` is the frozen / EMA teacher of the logit-level methods (SDPO, SRPO); the token-weight
    methods (RLSD, RLRT) score the teacher view with θ_old, i.e. ``model`` itself before the update.
    """
    if spec.needs_teacher_logits and teacher_model is None:
        raise ValueError(f"method {spec.name!r} distils from a separate teacher: pass teacher_model")
    t0 = time.perf_counter()
    n, G = cfg.n_rollouts, len(batch)
    user_msgs = [user_message(row["question"]) for row in batch]
    prompts = [chat_prompt(tokenizer, m) for m in user_msgs]
    ro: Rollouts = sample(model, tokenizer, prompts, n, cfg.max_response_length, temperature=cfg.temperature,
                          seed=cfg.seed * 100003 + step, batch_size=cfg.gen_batch_size)
    t_gen = time.perf_counter() - t0

    answers = [row["answer"] for row in batch for _ in range(n)]
    rewards = torch.tensor(grade_fn(ro.texts, answers), dtype=torch.float32)  # (B,)
    shaped = rewards
    if spec.diversity:  # DIVER: the bonus joins the score *before* the group normalisation
        variant = str(method_cfg.get("variant", "equation"))
        bonus = np.concatenate([
            diversity_bonus(variant, ro.texts[g * n:(g + 1) * n], rewards[g * n:(g + 1) * n].tolist(), step,
                            method_cfg) for g in range(G)])
        shaped = rewards + torch.tensor(bonus, dtype=torch.float32)
    adv = group_advantages(shaped.view(G, n), bool(method_cfg["norm_adv_by_std"])).reshape(-1)  # (B,)

    old_logp, old_ent = score_responses(model, ro.prompt_ids, ro.prompt_mask, ro.response_ids, ro.response_mask,
                                        cfg.temperature, cfg.micro_batch, with_entropy=True)
    lam = linear_decay(step, float(method_cfg.get("lambda_init", 0.0)), method_cfg.get("lambda_decay_steps"))
    t1 = time.perf_counter()
    delta = has_ctx = t_ids = t_mask = None
    if spec.needs_teacher or spec.needs_teacher_logits:
        kind = method_cfg.get("context", spec.context)
        texts = [ro.texts[g * n:(g + 1) * n] for g in range(G)]
        ctx = build_contexts(kind, rewards.view(G, n).tolist(), texts, [row["solution"] for row in batch])
        t_ids, t_mask, has_ctx = teacher_inputs(tokenizer, user_msgs, ctx, kind, n)
    if spec.needs_teacher:
        teacher_logp, _ = score_responses(model, t_ids, t_mask, ro.response_ids, ro.response_mask,
                                          cfg.temperature, cfg.micro_batch)
        delta = log_ratio(teacher_logp, old_logp)
    tok_adv, weight = token_advantages(spec, adv, ro.response_mask, rewards, delta, has_ctx, lam,
                                       float(method_cfg.get("eps_w", 0.2)))
    # Which rows take which loss, and the per-row/per-token loss mask of the objective.
    B = ro.response_ids.shape[0]
    pg_rows = torch.ones(B, dtype=torch.bool)
    distill_rows = torch.zeros(B, dtype=torch.bool)
    distill_w = torch.ones_like(ro.response_mask, dtype=torch.float32)
    if spec.objective == "sdpo":
        pg_rows, distill_rows = torch.zeros(B, dtype=torch.bool), has_ctx.bool()
    elif spec.objective == "srpo":
        pg_rows, distill_rows = srpo_route(rewards, has_ctx)
        _, t_ent = score_responses(teacher_model, t_ids, t_mask, ro.response_ids, ro.response_mask,
                                   cfg.temperature, cfg.micro_batch, with_entropy=True)
        distill_w = srpo_entropy_weights(t_ent, ro.response_mask * distill_rows[:, None],
                                         float(method_cfg.get("beta", 0.0)))
    if spec.objective == "sdpo":  # SDPO: token-mean over response_mask x context_mask
        loss_mask = ro.response_mask * distill_rows[:, None].to(ro.response_mask.dtype)
    else:  # GRPO-style token-mean over every response token (SRPO's all-wrong groups contribute 0)
        loss_mask = ro.response_mask
    t_teacher = time.perf_counter() - t1
    sd = {k: method_cfg.get(k, d) for k, d in (("topk", 100), ("tail", True), ("alpha", 0.5), ("is_clip", 2.0))}
    ent_coeff = float(method_cfg.get("entropy_coeff", 0.0)) if spec.entropy_bonus else 0.0

    # One PPO epoch over mini-batches (in sampling order: each mini-batch is whole groups).
    model.train()
    rows_per_mb = cfg.mini_batch * n
    stats: dict[str, list[float]] = {"loss": [], "clip_frac": [], "approx_kl": [], "grad_norm": [], "distill": []}
    for s in range(0, B, rows_per_mb):
        mb_end = min(s + rows_per_mb, B)
        n_tok = loss_mask[s:mb_end].sum()
        if n_tok == 0 and spec.objective == "sdpo":
            continue  # no rollout of this mini-batch has a teacher context: no distillation signal, no update
        n_tok = n_tok.clamp(min=1)
        optimizer.zero_grad(set_to_none=True)
        mb_loss = 0.0
        for m0 in range(s, mb_end, cfg.micro_batch):
            sl = slice(m0, min(m0 + cfg.micro_batch, mb_end))
            logits = response_logits(model, ro.prompt_ids[sl], ro.prompt_mask[sl], ro.response_ids[sl],
                                     ro.response_mask[sl])
            logp = token_logprobs(logits, ro.response_ids[sl], cfg.temperature)
            mask = ro.response_mask[sl]
            pg, clipped, log_r = surrogate_tokens(logp, old_logp[sl], tok_adv[sl], cfg.clip_low, cfg.clip_high,
                                                  cfg.clip_ratio_c)
            tok_loss = pg * pg_rows[sl, None]
            if distill_rows[sl].any():
                t_logits = _teacher_logits(teacher_model, t_ids[sl], t_mask[sl], ro.response_ids[sl],
                                           ro.response_mask[sl])
                jsd = sdpo_token_loss(logits, t_logits, logp, old_logp[sl], topk=int(sd["topk"]),
                                      tail=bool(sd["tail"]), alpha=float(sd["alpha"]), is_clip=float(sd["is_clip"]),
                                      temperature=cfg.temperature)
                dmask = mask * distill_rows[sl, None]
                tok_loss = tok_loss + distill_w[sl] * jsd * distill_rows[sl, None]
                stats["distill"].append(_masked_mean(jsd.detach(), dmask))
            loss = agg_loss(tok_loss, loss_mask[sl], cfg.loss_agg)
            if ent_coeff:  # GRPO+EB: the entropy of the current policy, with gradient
                loss = loss + entropy_bonus(entropy_from_logits(logits / cfg.temperature), mask, ent_coeff,
                                            cfg.loss_agg)
            # gradient accumulation: weight each micro-batch so the sum equals the whole mini-batch's aggregate
            if cfg.loss_agg == "token-mean":
                scale = float(loss_mask[sl].sum() / n_tok)
            else:
                scale = (sl.stop - sl.start) / (mb_end - s)
            (loss * scale).backward()
            mb_loss += float(loss.detach() * scale)
            with torch.no_grad():
                pmask = mask * pg_rows[sl, None]
                if pmask.sum() > 0:
                    stats["clip_frac"].append(_masked_mean(clipped.float(), pmask))
                    stats["approx_kl"].append(_masked_mean(-log_r.detach(), pmask))
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        stats["loss"].append(mb_loss)
        stats["grad_norm"].append(float(gn))
    ema = float(method_cfg.get("ema_rate", 0.0))
    if teacher_model is not None and ema > 0:  # SDPO's EMA teacher (paper: rate 0 = frozen initial teacher)
        with torch.no_grad():
            for pt, ps in zip(teacher_model.parameters(), model.parameters()):
                pt.mul_(1.0 - ema).add_(ps.detach(), alpha=ema)

    applied = weight[ro.response_mask.bool()]
    groups = rewards.view(G, n)

    def avg(key: str, default: float = 0.0) -> float:
        return sum(stats[key]) / len(stats[key]) if stats[key] else default

    return {
        "step": step,
        "reward_mean": float(rewards.mean()),
        "accuracy": 100.0 * float(rewards.mean()),
        "solve_rate": 100.0 * float((groups.max(dim=1).values > 0.5).float().mean()),
        "mixed_groups": float(((groups.max(1).values > 0.5) & (groups.min(1).values < 0.5)).float().mean()),
        "response_length": float(ro.lengths.float().mean()),
        "entropy": _masked_mean(old_ent, ro.response_mask),  # rollout policy's entropy (every step, every method)
        "clip_frac": avg("clip_frac"),
        "approx_kl": avg("approx_kl"),
        "loss": avg("loss"),
        "grad_norm": avg("grad_norm"),
        "weight_mean": float(applied.mean()) if applied.numel() else 1.0,
        "weight_max": float(applied.max()) if applied.numel() else 1.0,
        "context_frac": float(has_ctx.float().mean()) if has_ctx is not None else 0.0,
        "distill_frac": float(distill_rows.float().mean()),
        "distill_loss": avg("distill"),
        "diversity_bonus": float((shaped - rewards).mean()),
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
    resume: Resumable | None = None,
    on_save: Callable[[int], None] | None = None, save_steps: Sequence[int] = (),
) -> list[dict[str, float]]:
    """Run ``cfg.steps`` RL steps; question batches are drawn without replacement, epoch by epoch, from a seeded
    shuffle. Returns the list of per-step metrics.

    Resume: with ``resume`` (``rlrt.backends.local.resume``), the full training state (policy, SDPO/SRPO teacher,
    optimizer, scheduler, question order, history) is saved every ``resume.every`` steps and loaded at start if
    present, so an interrupted job continues where it stopped with the same numbers (sampling seeds depend only on
    the step index).
    ``on_save(k)`` is called after step k (1-based count of finished steps) for every k in ``save_steps``.
    """
    lr = float(method_cfg.get("lr", cfg.lr * float(method_cfg.get("lr_scale", 1.0))))
    teacher_model = None
    if spec.needs_teacher_logits:  # SDPO/SRPO: a separate teacher, the initial policy (EMA-updated if rate > 0)
        teacher_model = copy.deepcopy(model).eval()
        teacher_model.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_lr(s, cfg.warmup_steps))
    rng = random.Random(cfg.seed)
    order: list[int] = []
    resume = resume or Resumable()
    start, history = resume.load(model, optimizer, sched, rng)
    if start:
        order = resume.extra["order"]
        if teacher_model is not None:
            teacher_model.load_state_dict(resume.extra["teacher"])
    steps = range(start, cfg.steps)
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
                          grade_fn, teacher_model=teacher_model)
        sched.step()
        history.append(metrics)
        if on_step:
            on_step(metrics)
        if step + 1 in save_steps and on_save:
            on_save(step + 1)
        if resume.due(step + 1, cfg.steps):
            resume.save(step + 1, model, optimizer, sched, rng, history, order=order,
                        teacher=teacher_model.state_dict() if teacher_model is not None else None)
        if progress and hasattr(steps, "set_postfix"):
            steps.set_postfix(acc=f"{metrics['accuracy']:.1f}", len=f"{metrics['response_length']:.0f}", refresh=False)
    return history
