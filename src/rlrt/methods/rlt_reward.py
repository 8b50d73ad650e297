"""The RLT teacher's dense reward (RLT paper, Sec. 3.3, Eq. 3-5) and its group advantage.

A teacher pi_theta sees the question q and the solution s and writes an explanation o (its "think tokens").
A separate, frozen student pi_s then scores it twice:

* r_SS (Eq. 3): how well the student recovers the solution given question + explanation,
      r_SS = avg_t log pi_s(s_t | o, q, s_<t) + alpha * min_t log pi_s(s_t | o, q, s_<t)        over solution tokens;
* r_KL (Eq. 4): whether each explanation token is a natural continuation for a student that does not know s,
      KL_t = KL(pi_theta(. | s, q, o_<t) || pi_s(. | q, o_<t)),
      r_KL = avg_t KL_t + alpha * max_t KL_t                                                     over explanation tokens;
* r = r_SS - lambda * r_KL (Eq. 5); a completion without the format tags gets ``missing_tag_penalty`` (-1).

Paper run: alpha = 0.01, lambda = 3. The advantage is GRPO's (r - mean) / (std + 1e-4) within a prompt's group.
All functions are pure; masks select the valid tokens of padded (N, T) tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlrt.methods.advantages import group_advantages
from rlrt.methods.distill import kl_div


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    m = mask.to(x.dtype)
    return (x * m).sum(-1) / m.sum(-1).clamp(min=1.0)


def mean_plus_extreme(x: Tensor, mask: Tensor, alpha: float, extreme: str) -> Tensor:
    """avg_t x_t + alpha * (min_t | max_t) x_t over the valid tokens of each row. (N, T) -> (N,).

    Rows with no valid token give 0 (they carry no evidence either way; the caller penalises missing tags).
    """
    m = mask.bool()
    if extreme == "min":
        ext = torch.where(m, x, torch.full_like(x, float("inf"))).min(-1).values
    elif extreme == "max":
        ext = torch.where(m, x, torch.full_like(x, float("-inf"))).max(-1).values
    else:
        raise ValueError(f"extreme must be 'min' or 'max', got {extreme!r}")
    has = m.any(-1)
    return torch.where(has, _masked_mean(x, m) + alpha * torch.where(has, ext, torch.zeros_like(ext)),
                       torch.zeros_like(ext))


def solution_reward(student_logp: Tensor, solution_mask: Tensor, alpha: float = 0.01) -> Tensor:
    """r_SS (Eq. 3): avg + alpha * min of the student's log-probs of the solution tokens. (N, T) -> (N,)."""
    return mean_plus_extreme(student_logp, solution_mask, alpha, "min")


KL_CHUNK = 512  # positions per block of token_kl: ~4 fp32 (N, 512, V) temporaries, ~0.3 GB each at V = 152k, N = 1


def token_kl(teacher_logits: Tensor, student_logits: Tensor, temperature: float = 1.0,
             chunk: int | None = KL_CHUNK) -> Tensor:
    """KL_t = KL(pi_teacher(.|...) || pi_student(.|...)) over the full vocabulary at every position.

    Args:
        teacher_logits, student_logits: (N, T, V), aligned on the same explanation tokens (the teacher's context
            has the solution, the student's does not); any float dtype (bf16 logits stay bf16 outside a block).
        temperature: both are divided by it.
        chunk: positions per block. Each block is cast to fp32 and normalised on its own (the KL at a position
            depends on that position only), so the fp32 temporaries are (N, chunk, V), never (N, T, V); None is
            one block. The result does not depend on it.
    Returns:
        (N, T) fp32, >= 0, no gradient needed (it is a reward).
    """
    T = teacher_logits.shape[-2]
    step = T if chunk is None else max(1, int(chunk))
    out = torch.empty(teacher_logits.shape[:-1], dtype=torch.float32, device=teacher_logits.device)
    for s in range(0, T, step):
        lt = torch.log_softmax(teacher_logits[..., s:s + step, :].detach().float() / temperature, dim=-1)
        ls = torch.log_softmax(student_logits[..., s:s + step, :].detach().float() / temperature, dim=-1)
        out[..., s:s + step] = kl_div(lt, ls)
    return out


def kl_reward(kl_tokens: Tensor, explanation_mask: Tensor, alpha: float = 0.01) -> Tensor:
    """r_KL (Eq. 4): avg + alpha * max of the per-token KL over the explanation tokens. (N, T) -> (N,)."""
    return mean_plus_extreme(kl_tokens, explanation_mask, alpha, "max")


def rlt_reward(r_ss: Tensor, r_kl: Tensor, format_ok: Tensor, lam: float = 3.0,
               missing_tag_penalty: float = -1.0) -> Tensor:
    """r = r_SS - lambda * r_KL (Eq. 5) where the completion has the format tags, else ``missing_tag_penalty``.

    Args: r_ss, r_kl (N,), format_ok (N,) bool. Returns: (N,).
    """
    r = r_ss - lam * r_kl
    return torch.where(format_ok.bool(), r, torch.full_like(r, missing_tag_penalty))


def rlt_advantages(rewards: Tensor) -> Tensor:
    """The teacher's GRPO advantage (r - mean) / (std + 1e-4) within each prompt's group (RLT's recipe).

    Args: rewards (G, n). Returns: (G, n). The std is the unbiased one, as ``group_advantages``/verl/TRL.
    """
    return group_advantages(rewards, norm_by_std=True, eps=1e-4)
