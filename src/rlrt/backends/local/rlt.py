"""The local RLT engine: teacher and student sequences as token ids, the reward's two scoring passes, and the
teacher's GRPO step on the dense reward (RLT paper Sec. 3; every equation lives in ``rlrt.methods.rlt_reward``).

Sequences are built by *concatenating token ids* of their pieces, never by re-tokenising a joined string, so that
the explanation tokens are the very same ids in the teacher's and the student's context (the per-token KL of
r_KL compares the two distributions at those ids) and the same ids the student is later fine-tuned on:

    teacher:  chat(question) ⊕ "<|begin_of_solution|>{s}<|end_of_solution|>\\n\\n<|begin_of_explanation|>\\n\\n"
              ⊕ explanation ⊕ "<|end_of_explanation|>" ⊕ EOS
    student:  chat(question) ⊕ "<|begin_of_thought|>" ⊕ explanation ⊕ "<|end_of_thought|>\\n\\n<|begin_of_solution|>"
              ⊕ solution ⊕ "<|end_of_solution|>" ⊕ EOS

The teacher's prompt ends after the explanation tag (its generation starts there); the student's prompt is the
plain chat turn, so a distilled student writes the whole think-then-solve answer itself.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from rlrt.backends.local import loop as train_loop
from rlrt.backends.local.lm import Example
from rlrt.backends.local.loop import QuestionOrder, warmup_lr
from rlrt.backends.local.ppo import PPOConfig, UpdateBatch, mean, ppo_update
from rlrt.backends.local.resume import Resumable
from rlrt.backends.local.rollout import left_pad, old_logprobs, response_logits, sample, score_responses
from rlrt.methods.losses import token_logprobs
from rlrt.methods.objectives import get_objective
from rlrt.methods.rlt_reward import kl_reward, rlt_advantages, rlt_reward, solution_reward, token_kl
from rlrt.tasks.prompts import chat_prompt, user_message
from rlrt.tasks.rlt_format import (BEGIN_SOLUTION, BEGIN_THOUGHT, END_EXPLANATION, END_SOLUTION, END_THOUGHT,
                                   parse_explanation, teacher_prefix)


def encode(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def teacher_prompt(tok, question: str, solution: str) -> str:
    """The teacher's generation prompt as text: the chat turn, then its assistant text up to the explanation."""
    return chat_prompt(tok, user_message(question)) + teacher_prefix(solution)


def teacher_example(tok, question: str, solution: str, explanation: str) -> Example:
    """SFT warm-up example: (ids, loss mask) with the loss on the explanation, its end tag and EOS only."""
    prompt = encode(tok, teacher_prompt(tok, question, solution))
    target = encode(tok, explanation) + encode(tok, END_EXPLANATION) + [tok.eos_token_id]
    return prompt + target, [0] * len(prompt) + [1] * len(target)


@dataclass
class StudentSeq:
    """One student sequence: prompt ids, response ids and two masks over the response (same length)."""

    prompt: list[int]
    response: list[int]
    explanation_mask: list[int]  # 1 on the explanation tokens (r_KL)
    solution_mask: list[int]  # 1 on the solution tokens (r_SS)


def student_seq(tok, question: str, explanation_ids: Sequence[int], solution: str) -> StudentSeq:
    """The student-format sequence around ``explanation_ids`` (see the module docstring)."""
    head = encode(tok, BEGIN_THOUGHT)
    mid = encode(tok, END_THOUGHT + "\n\n" + BEGIN_SOLUTION)
    sol = encode(tok, solution)
    tail = encode(tok, END_SOLUTION) + [tok.eos_token_id]
    e = list(explanation_ids)
    response = head + e + mid + sol + tail
    expl = [0] * len(head) + [1] * len(e) + [0] * (len(mid) + len(sol) + len(tail))
    solm = [0] * (len(head) + len(e) + len(mid)) + [1] * len(sol) + [0] * len(tail)
    return StudentSeq(encode(tok, chat_prompt(tok, user_message(question))), response, expl, solm)


def student_example(tok, question: str, explanation: str, solution: str) -> Example:
    """Student SFT example: the loss covers the whole answer (think block, solution, tags, EOS), not the prompt."""
    s = student_seq(tok, question, encode(tok, explanation), solution)
    return s.prompt + s.response, [0] * len(s.prompt) + [1] * len(s.response)


def _right_pad(seqs: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
            mask[i, : len(s)] = 1
    return ids, mask


@torch.no_grad()
def score_explanations(
    teacher, student, tok, questions: Sequence[str], solutions: Sequence[str], explanations: Sequence[str | None],
    alpha: float = 0.01, lam: float = 3.0, temperature: float = 1.0, micro_batch: int = 32,
    missing_tag_penalty: float = -1.0,
) -> dict[str, torch.Tensor]:
    """The RLT reward of each (question, solution, explanation): the student's and the teacher's scoring passes.

    * student pass: chat(q) ⊕ think(explanation) ⊕ solution under the frozen ``student`` -> log-probs of the
      solution tokens (r_SS) and the student's logits at the explanation tokens;
    * teacher pass: teacher prompt (q, s) ⊕ the same explanation ids under ``teacher`` -> its logits there;
    * KL_t(teacher || student) at every explanation token -> r_KL; r = r_SS - lam * r_KL.

    ``explanations[i]`` is None for a completion without the format tags: reward ``missing_tag_penalty``.
    Returns (N,) tensors ``reward``, ``r_ss``, ``r_kl``, ``format_ok`` (bool).
    """
    N = len(explanations)
    ok = torch.tensor([e is not None for e in explanations])
    r_ss, r_kl = torch.zeros(N), torch.zeros(N)
    idx = [i for i in range(N) if explanations[i] is not None]
    pad = tok.pad_token_id
    was = teacher.training, student.training
    teacher.eval()
    student.eval()
    for s in range(0, len(idx), micro_batch):
        rows = idx[s:s + micro_batch]
        e_ids = [encode(tok, explanations[i]) for i in rows]
        st = [student_seq(tok, questions[i], e, solutions[i]) for i, e in zip(rows, e_ids)]
        sp_ids, sp_mask = left_pad([x.prompt for x in st], pad)
        sr_ids, sr_mask = _right_pad([x.response for x in st], pad)
        s_logits = response_logits(student, sp_ids, sp_mask, sr_ids, sr_mask)  # (b, R, V)
        s_logp = token_logprobs(s_logits, sr_ids, temperature)
        sol_mask, _ = _right_pad([x.solution_mask for x in st], 0)
        r_ss[rows] = solution_reward(s_logp, sol_mask, alpha)
        # explanation tokens sit at the same offset (after the fixed-length think tag) in every student row
        h = len(encode(tok, BEGIN_THOUGHT))
        tp_ids, tp_mask = left_pad([encode(tok, teacher_prompt(tok, questions[i], solutions[i])) for i in rows], pad)
        te_ids, te_mask = _right_pad(e_ids, pad)
        t_logits = response_logits(teacher, tp_ids, tp_mask, te_ids, te_mask)  # (b, E, V)
        E = te_ids.shape[1]
        kl = token_kl(t_logits, s_logits[:, h:h + E], temperature)
        r_kl[rows] = kl_reward(kl, te_mask, alpha)
    teacher.train(was[0])
    student.train(was[1])
    return {"reward": rlt_reward(r_ss, r_kl, ok, lam, missing_tag_penalty), "r_ss": r_ss, "r_kl": r_kl,
            "format_ok": ok}


@dataclass
class TeacherRLConfig:
    steps: int
    question_batch: int
    n_samples: int  # group size (paper: 64)
    mini_batch: int  # questions per update
    lr: float
    max_new_tokens: int
    temperature: float = 0.7  # paper's teacher sampling temperature
    alpha: float = 0.01
    lam: float = 3.0
    missing_tag_penalty: float = -1.0  # paper; must lie below the rewards well-formatted explanations get
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    clip_low: float = 0.2
    clip_high: float = 0.2
    clip_ratio_c: float | None = 3.0  # verl's dual-clip default, as the policy RL uses
    beta: float = 0.04  # J_RLT's beta KL(pi_theta || pi_ref), pi_ref = the SFT teacher (SakanaAI/RLT: 0.04)
    micro_batch: int = 32
    gen_batch_size: int = 256
    old_logp: str = "rollout"  # as RLConfig.old_logp: the sampler's log-probs (rollout) or a separate pass
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TeacherRLConfig":
        keys = {"lambda": "lam"}
        fields = cls.__dataclass_fields__
        return cls(**{keys.get(k, k): v for k, v in d.items() if keys.get(k, k) in fields})

    def ppo(self) -> PPOConfig:
        return PPOConfig(self.mini_batch * self.n_samples, self.micro_batch, self.temperature, self.clip_low,
                         self.clip_high, self.clip_ratio_c, "token-mean", self.grad_clip, kl_coef=self.beta)


def teacher_step(teacher, student, tok, optimizer, rows: Sequence[dict], step: int, cfg: TeacherRLConfig,
                 ref=None) -> dict[str, float]:
    """One GRPO step of the teacher on the RLT reward: sample explanations after the teacher prefix, score them
    with the frozen student at the sampling temperature (as SakanaAI/RLT), (r - mean)/(std + 1e-4) per question,
    one clipped-surrogate epoch (token-mean) plus beta * KL(pi_theta || ref) (k3 estimator, as verl / TRL)."""
    t0 = time.perf_counter()
    n, G = cfg.n_samples, len(rows)
    prompts = [teacher_prompt(tok, r["question"], r["solution"]) for r in rows]
    ro = sample(teacher, tok, prompts, n, cfg.max_new_tokens, temperature=cfg.temperature,
                seed=cfg.seed * 100003 + step, batch_size=cfg.gen_batch_size)
    expl = [parse_explanation(t) for t in ro.texts]
    rep = [r for r in rows for _ in range(n)]
    sc = score_explanations(teacher, student, tok, [r["question"] for r in rep], [r["solution"] for r in rep], expl,
                            cfg.alpha, cfg.lam, cfg.temperature, cfg.micro_batch, cfg.missing_tag_penalty)
    adv = rlt_advantages(sc["reward"].view(G, n)).reshape(-1)  # (B,)
    tok_adv = adv[:, None] * ro.response_mask  # (B, R): a sequence-level advantage on every token
    old_logp, _ = old_logprobs(teacher, ro, cfg.old_logp, cfg.temperature, cfg.micro_batch)
    ref_logp = None
    if cfg.beta:
        if ref is None:
            raise ValueError("teacher RL with beta > 0 needs the reference teacher (ref)")
        ref_logp, _ = score_responses(ref, ro.prompt_ids, ro.prompt_mask, ro.response_ids, ro.response_mask,
                                      cfg.temperature, cfg.micro_batch)
    objective = get_objective("pg")
    plan = objective.plan(sc["reward"], None, ro.response_mask, None, None)
    stats = ppo_update(teacher, optimizer, UpdateBatch(ro.prompt_ids, ro.prompt_mask, ro.response_ids,
                                                       ro.response_mask, old_logp, tok_adv, plan, ref_logp),
                       objective, None, cfg.ppo())
    teacher.eval()
    okf = sc["format_ok"].float()
    good = sc["format_ok"]
    return {
        "step": step,
        "reward_mean": float(sc["reward"].mean()),
        "r_ss": float(sc["r_ss"][good].mean()) if good.any() else 0.0,
        "r_kl": float(sc["r_kl"][good].mean()) if good.any() else 0.0,
        "format_ok": float(okf.mean()),
        "response_length": float(ro.lengths.float().mean()),
        "loss": mean(stats["loss"]),
        "clip_frac": mean(stats["clip_frac"]),
        "kl_ref": mean(stats["kl"]),
        "grad_norm": mean(stats["grad_norm"]),
        "nonfinite_skips": len(stats["nonfinite"]),  # mini-batches not applied: a NaN / inf (ppo_update)
        "lr": optimizer.param_groups[0]["lr"],
        "step_time": time.perf_counter() - t0,
    }


def train_teacher(teacher, student, tok, rows: Sequence[dict], cfg: TeacherRLConfig,
                  on_step: Callable[[dict], None] | None = None,
                  resume: Resumable | None = None) -> list[dict[str, float]]:
    """``cfg.steps`` teacher GRPO steps over question batches drawn without replacement from a seeded shuffle.

    With ``resume``, the training state (teacher, optimizer, scheduler, question order, history) is saved every
    ``resume.every`` steps and loaded at start if present (``rlrt.backends.local.loop``). The KL reference is a
    copy of ``teacher`` taken before any resumed state is loaded, i.e. always the teacher RL started from.
    """
    student.requires_grad_(False)
    ref = None
    if cfg.beta:  # the reference policy of the KL term: the teacher as it enters RL (the SFT warm-up), frozen
        ref = copy.deepcopy(teacher).eval()
        ref.requires_grad_(False)
    opt = torch.optim.AdamW(teacher.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_lr(s, cfg.warmup_steps))
    state = train_loop.Loop(teacher, opt, sched, random.Random(cfg.seed), resume or Resumable())
    order = QuestionOrder(len(rows), state.rng)
    state.extra_state = lambda: {"order": order.pending}
    state.restore = lambda extra: setattr(order, "pending", extra["order"])

    def step_fn(step: int) -> dict:
        return teacher_step(teacher, student, tok, opt, [rows[i] for i in order.next(cfg.question_batch)], step, cfg,
                            ref)

    return train_loop.run(state, step_fn, cfg.steps, desc="rlt:teacher", on_step=on_step,
                          postfix=lambda m: {"r": f"{m['reward_mean']:.3f}", "ok": f"{m['format_ok']:.2f}"})


@torch.no_grad()
def write_explanations(teacher, tok, rows: Sequence[dict], n: int, max_new_tokens: int, temperature: float,
                       seed: int, batch_size: int = 256) -> list[list[str]]:
    """``n`` raw teacher completions (the text generated after the explanation tag) per (question, solution)."""
    prompts = [teacher_prompt(tok, r["question"], r["solution"]) for r in rows]
    ro = sample(teacher, tok, prompts, n, max_new_tokens, temperature=temperature, seed=seed,
                batch_size=batch_size, progress=True)
    return [ro.texts[i * n:(i + 1) * n] for i in range(len(rows))]
