"""The local RL engine: GRPO's loop (DAPO recipe) with the teacher pass that RLSD/RLRT need, as named phases.

One step (``rl_step``), in order; every equation lives in ``rlrt.methods``, this file only moves tensors:

1. ``sample``: ``question_batch`` prompts x ``n_rollouts`` responses with θ_old (temperature 1.0; the lean
   sampler of ``rlrt.backends.local.sampler``);
2. ``grade``: r in {0, 1} per rollout;
3. ``old log-probs``: the sampled ids under θ_old with the student prompt -> log P_S(y_t) and its entropy; by
   default (``old_logp: rollout``) the values the sampler recorded as it drew each token (the same fp32 model,
   so the same numbers up to rounding, and no second pass: verl's rollout-correction bypass mode), else
   (``recompute``) a no-grad pass over prompt + response, as verl's actor does;
4. ``shape_advantages`` (``rlrt.methods.shaping``, backend-neutral): reward bonus, group advantages, the teacher
   view through ``LocalTeacher`` (θ_old for token-weight methods, the frozen copy for SDPO/SRPO; only the rows
   whose teacher score can change an advantage, ``rows_needing_teacher``), token advantages, the objective's plan;
5. ``ppo_update`` (``rlrt.backends.local.ppo``): one PPO epoch over mini-batches with the registered objective;
6. the SDPO/SRPO teacher's EMA, and the step's metrics.

Doing the teacher pass once per step on the driver, with θ_old, is the cheaper of the two designs the reference
implementations use (SDPO/RLSD rescore inside every actor micro-batch); for a single PPO epoch the two agree on
the first mini-batch and differ only by the policy drift within one step afterwards.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch

from rlrt.backends.local import loop as train_loop
from rlrt.backends.local.loop import QuestionOrder, warmup_lr
from rlrt.backends.local.ppo import PPOConfig, UpdateBatch, mean, ppo_update
from rlrt.backends.local.resume import Resumable
from rlrt.backends.local.rollout import (Rollouts, left_pad, old_logprobs, response_logits, sample,
                                         score_responses)
from rlrt.methods.objectives import get_objective
from rlrt.methods.registry import MethodSpec
from rlrt.methods.settings import MethodSettings
from rlrt.methods.shaping import Shaped, TeacherScores, rows_needing_teacher, shape_advantages
from rlrt.tasks.prompts import chat_prompt, user_message
from rlrt.teacher import problem_contexts, teacher_user_message

__all__ = ["RLConfig", "LocalTeacher", "rl_step", "train", "warmup_lr"]


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
    old_logp: str = "rollout"  # θ_old's log-probs: the sampler's (rollout) or a separate pass (recompute)
    seed: int = 0
    chat_template_kwargs: Optional[dict] = None  # the backbone's (rlrt.tasks.prompts.chat_prompt); None = none

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RLConfig":
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in fields})

    def ppo(self) -> PPOConfig:
        return PPOConfig(self.mini_batch * self.n_rollouts, self.micro_batch, self.temperature, self.clip_low,
                         self.clip_high, self.clip_ratio_c, self.loss_agg, self.grad_clip)


def teacher_inputs(tokenizer, user_msgs: Sequence[str], contexts: list[list[str | None]], kind: str, n: int,
                   template_kwargs: Optional[dict] = None):
    """Left-padded teacher prompt ids (B, P') and has_context (B,) for grouped rows (B = G * n); the chat template
    renders with the backbone's ``template_kwargs``.

    A group's rows share one or two contexts (and every row without one shares the bare question), so each
    distinct (question, context) prompt is rendered and tokenized once."""
    prompts, has = [], []
    for g, msg in enumerate(user_msgs):
        seen: dict[str | None, list[int]] = {}
        for i in range(n):
            c = contexts[g][i]
            has.append(c is not None)
            if c not in seen:
                seen[c] = tokenizer(chat_prompt(tokenizer, teacher_user_message(msg, c, kind), template_kwargs),
                                    add_special_tokens=False)["input_ids"]
            prompts.append(seen[c])
    ids, mask = left_pad(prompts, tokenizer.pad_token_id)
    return ids, mask, torch.tensor(has)


class LocalTeacher:
    """The teacher view on the local engine: ``score`` is ``shape_advantages``'s ``score_teacher`` (one no-grad
    pass of ``scorer`` over prompt-with-context ⊕ the sampled response ids), ``logits`` gives the frozen teacher's
    logits for a slice of rows inside the update (SDPO / SRPO).

    scorer: θ_old itself (token-weight methods) or the separate frozen / EMA teacher (logit-level methods).
    needed: ``(has_context (B,), want_entropy) -> (B,) bool``, the rows to score (``rows_needing_teacher``, as
    the verl backend does); the others get ``old_logp`` (B, R) (delta = 0: their advantage is unchanged) and
    entropy 0. None = every row.
    """

    def __init__(self, scorer, tokenizer, user_msgs: Sequence[str], ro: Rollouts, n: int, temperature: float,
                 micro_batch: int, needed: Optional[Callable[[torch.Tensor, bool], torch.Tensor]] = None,
                 old_logp: Optional[torch.Tensor] = None, template_kwargs: Optional[dict] = None):
        self.scorer, self.tok, self.user_msgs, self.ro, self.n = scorer, tokenizer, user_msgs, ro, n
        self.template_kwargs = template_kwargs
        self.temperature, self.micro_batch = temperature, micro_batch
        self.needed, self.old_logp = needed, old_logp
        self.ids = self.mask = None
        self.n_scored = 0

    def score(self, contexts, kind: str, want_logp: bool, want_entropy: bool) -> TeacherScores:
        self.ids, self.mask, has = teacher_inputs(self.tok, self.user_msgs, contexts, kind, self.n,
                                                  self.template_kwargs)
        if not (want_logp or want_entropy):
            return TeacherScores(has, None, None)
        rows = (self.needed(has, want_entropy) if self.needed is not None
                else torch.ones_like(has)).nonzero().flatten()
        R = self.ro.response_ids.shape[1]
        logp = self.old_logp.clone() if self.old_logp is not None else torch.zeros((len(has), R))
        ent = torch.zeros((len(has), R))
        if len(rows):  # only the scored rows (score_responses drops the padding columns none of them uses)
            t_logp, t_ent = score_responses(self.scorer, self.ids[rows], self.mask[rows], self.ro.response_ids[rows],
                                            self.ro.response_mask[rows], self.temperature, self.micro_batch,
                                            with_entropy=want_entropy)
            logp[rows] = t_logp
            if want_entropy:
                ent[rows] = t_ent
            self.n_scored += len(rows)
        return TeacherScores(has, logp if want_logp else None, ent if want_entropy else None)

    def logits(self, sl: slice | torch.Tensor) -> torch.Tensor:
        """Full teacher-view logits (b, R, V) for rows ``sl`` (a slice or row indices), no gradient."""
        was_training = self.scorer.training
        self.scorer.eval()
        with torch.no_grad():
            out = response_logits(self.scorer, self.ids[sl], self.mask[sl], self.ro.response_ids[sl],
                                  self.ro.response_mask[sl])
        self.scorer.train(was_training)
        return out


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    m = mask.to(x.dtype)
    return float((x * m).sum() / m.sum().clamp(min=1))


def step_metrics(step: int, rewards: torch.Tensor, G: int, ro: Rollouts, old_ent: torch.Tensor, sh: Shaped,
                 stats: dict[str, list[float]]) -> dict[str, float]:
    """The step's metrics (rewards (B,), G groups); ``nonfinite_skips`` counts ``stats["nonfinite"]`` (0 without)."""
    applied = sh.weight[ro.response_mask.bool()]
    groups = rewards.view(G, -1)
    return {
        "step": step,
        "reward_mean": float(rewards.mean()),
        "accuracy": 100.0 * float(rewards.mean()),
        "solve_rate": 100.0 * float((groups.max(dim=1).values > 0.5).float().mean()),
        "mixed_groups": float(((groups.max(1).values > 0.5) & (groups.min(1).values < 0.5)).float().mean()),
        "response_length": float(ro.lengths.float().mean()),
        "entropy": _masked_mean(old_ent, ro.response_mask),  # rollout policy's entropy (every step, every method)
        "clip_frac": mean(stats["clip_frac"]),
        "approx_kl": mean(stats["approx_kl"]),
        "loss": mean(stats["loss"]),
        "grad_norm": mean(stats["grad_norm"]),
        "weight_mean": float(applied.mean()) if applied.numel() else 1.0,
        "weight_max": float(applied.max()) if applied.numel() else 1.0,
        "context_frac": float(sh.has_context.float().mean()) if sh.has_context is not None else 0.0,
        # mean sg(log P_T - log P_S) over the weighted tokens: > 0 the teacher view is informed, < 0 confused
        "teacher_logratio": (_masked_mean(sh.delta, ro.response_mask * sh.weighted_rows[:, None])
                             if sh.delta is not None and bool(sh.weighted_rows.any()) else 0.0),
        "distill_frac": float(sh.plan.distill_rows.float().mean()),
        "distill_loss": mean(stats["distill"]),
        "diversity_bonus": float((sh.shaped_rewards - rewards).mean()),
        "lambda": sh.lam,
        "nonfinite_skips": len(stats.get("nonfinite", ())),  # mini-batches not applied: a NaN / inf (ppo_update)
    }


def _context_kind(spec: MethodSpec, settings: MethodSettings) -> str:
    """The teacher's context kind of a method (``none`` without a teacher)."""
    return str(getattr(settings, "context", "none")) if spec.teacher != "none" else "none"


def rl_step(
    model, tokenizer, optimizer, spec: MethodSpec, settings: MethodSettings, cfg: RLConfig,
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
    # 1. sample
    user_msgs = [user_message(row["question"]) for row in batch]
    prompts = [chat_prompt(tokenizer, m, cfg.chat_template_kwargs) for m in user_msgs]
    ro: Rollouts = sample(model, tokenizer, prompts, n, cfg.max_response_length, temperature=cfg.temperature,
                          seed=cfg.seed * 100003 + step, batch_size=cfg.gen_batch_size)
    t1 = time.perf_counter()
    # 2. grade
    answers = [row["answer"] for row in batch for _ in range(n)]
    rewards = torch.tensor(grade_fn(ro.texts, answers), dtype=torch.float32)  # (B,)
    t2 = time.perf_counter()
    # 3. old log-probs (and the rollout policy's entropy)
    old_logp, old_ent = old_logprobs(model, ro, cfg.old_logp, cfg.temperature, cfg.micro_batch, with_entropy=True)
    # 4. the method: advantages, teacher view, plan
    t3 = time.perf_counter()
    teacher = LocalTeacher(teacher_model if teacher_model is not None else model, tokenizer, user_msgs, ro, n,
                           cfg.temperature, cfg.micro_batch, old_logp=old_logp,
                           template_kwargs=cfg.chat_template_kwargs,
                           needed=lambda has, want_ent: rows_needing_teacher(spec, settings, rewards.view(G, n), has,
                                                                             want_ent))
    sh = shape_advantages(spec, settings, rewards.view(G, n), [ro.texts[g * n:(g + 1) * n] for g in range(G)],
                          problem_contexts(_context_kind(spec, settings), batch, "train"), old_logp, old_ent,
                          ro.response_mask, step,
                          teacher.score)
    t4 = time.perf_counter()
    # 5. one PPO epoch
    update = UpdateBatch(ro.prompt_ids, ro.prompt_mask, ro.response_ids, ro.response_mask, old_logp, sh.token_adv,
                         sh.plan)
    stats = ppo_update(model, optimizer, update, get_objective(sh.objective), settings, cfg.ppo(),
                       teacher_logits=teacher.logits if spec.needs_teacher_logits else None)
    # 6. SDPO's EMA teacher (paper: rate 0 = frozen initial teacher)
    if teacher_model is not None and settings.ema_rate > 0:
        with torch.no_grad():
            for pt, ps in zip(teacher_model.parameters(), model.parameters()):
                pt.mul_(1.0 - settings.ema_rate).add_(ps.detach(), alpha=settings.ema_rate)
    t5 = time.perf_counter()
    # where the step's time goes: sampling, grading, old log-probs, the method (teacher pass included), update
    return {**step_metrics(step, rewards, G, ro, old_ent, sh, stats),
            "teacher_rows": float(teacher.n_scored),
            "lr": optimizer.param_groups[0]["lr"], "time_gen": t1 - t0, "time_grade": t2 - t1,
            "time_old_logp": t3 - t2, "time_teacher": t4 - t3, "time_update": t5 - t4, "step_time": t5 - t0}


def train(
    model, tokenizer, train_rows: Sequence[dict], spec: MethodSpec, settings: MethodSettings, cfg: RLConfig,
    grade_fn: Callable[[list[str], list[str]], list[float]],
    on_step: Callable[[dict[str, float]], None] | None = None, progress: bool = True,
    resume: Resumable | None = None,
    on_save: Callable[[int], None] | None = None, save_steps: Sequence[int] = (),
) -> list[dict[str, float]]:
    """Run ``cfg.steps`` RL steps; question batches are drawn without replacement, epoch by epoch, from a seeded
    shuffle. Returns the list of per-step metrics.

    Resume (``rlrt.backends.local.loop``): policy, SDPO/SRPO teacher, optimizer, scheduler, question order and
    history are saved every ``resume.every`` steps and restored at start.
    ``on_save(k)`` is called after step k (1-based count of finished steps) for every k in ``save_steps``.
    """
    teacher_model = None
    if spec.needs_teacher_logits:  # SDPO/SRPO: a separate teacher, the initial policy (EMA-updated if rate > 0)
        teacher_model = copy.deepcopy(model).eval()
        teacher_model.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate(cfg.lr),
                                  weight_decay=cfg.weight_decay, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_lr(s, cfg.warmup_steps))
    state = train_loop.Loop(model, optimizer, sched, random.Random(cfg.seed), resume or Resumable())
    order = QuestionOrder(len(train_rows), state.rng)

    def restore(extra: dict) -> None:
        order.pending = extra["order"]
        if teacher_model is not None:
            teacher_model.load_state_dict(extra["teacher"])

    state.extra_state = lambda: {"order": order.pending,
                                 "teacher": teacher_model.state_dict() if teacher_model is not None else None}
    state.restore = restore

    def step_fn(step: int) -> dict:
        batch = [train_rows[i] for i in order.next(cfg.question_batch)]
        return rl_step(model, tokenizer, optimizer, spec, settings, cfg, batch, step, grade_fn,
                       teacher_model=teacher_model)

    def after_step(finished: int) -> None:
        if finished in save_steps and on_save:
            on_save(finished)

    return train_loop.run(state, step_fn, cfg.steps, desc=f"rl:{spec.name}", progress=progress, on_step=on_step,
                          after_step=after_step,
                          postfix=lambda m: {"acc": f"{m['accuracy']:.1f}", "len": f"{m['response_length']:.0f}"})
