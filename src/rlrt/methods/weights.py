"""Token-level teacher/student credit weights (paper Eq. 1, 2, 6, 7; Table 4)."""

from __future__ import annotations

import torch
from torch import Tensor


def table4(formula: str, direction: str):
    """Attach the function's Table 4 cells (its formula and what it amplifies): Table 4 reads them from the
    function a method is wired to, so a mis-wired method shows the wrong formula in its row."""

    def wrap(fn):
        fn.formula, fn.direction = formula, direction
        return fn

    return wrap


def log_ratio(teacher_logp: Tensor, student_logp: Tensor) -> Tensor:
    """Delta_t = sg(log P_T^t(y_t) - log P_S^t(y_t)) (Sec. 3, after Eq. 1).

    Args:
        teacher_logp: (N, T) log-probs of the sampled tokens under the teacher view pi(.|h_t, c).
        student_logp: (N, T) log-probs under the student view pi(.|h_t).
    Returns:
        (N, T) detached log ratio (D_hat_t = -Delta_t).
    """
    return (teacher_logp - student_logp).detach()


def _sign(adv: Tensor) -> Tensor:
    # torch.sign: sign(0) = 0, so exp(0) = 1 -> weight 1 on rows with A = 0.
    return torch.sign(adv.detach()).unsqueeze(-1)


@table4("(P_T(y_t)/P_S(y_t))^sign(A)", "teacher = magnitude")
def rlsd_weight(delta: Tensor, adv: Tensor) -> Tensor:
    """RLSD weight, Eq. 2: w_t = exp(sign(A) * Delta_t) = (P_T / P_S)^sign(A).

    Args:
        delta: (N, T) detached log ratio from :func:`log_ratio`.
        adv: (N,) sequence advantages. sign(0) = 0 gives w = 1.
    Returns:
        (N, T) weights.
    """
    return torch.exp(_sign(adv) * delta.detach())


@table4("(P_S(y_t)/P_T(y_t))^sign(A)", "amplify self-driven")
def rlrt_weight(delta: Tensor, adv: Tensor) -> Tensor:
    """RLRT (reversed teacher) weight, Eq. 6: w_t = exp(-sign(A) * Delta_t) = (P_S / P_T)^sign(A).

    Equals 1 / w_RLSD elementwise (App. G.1). sign(0) = 0 gives w = 1.

    Args:
        delta: (N, T) detached log ratio.
        adv: (N,) sequence advantages.
    Returns:
        (N, T) weights.
    """
    return torch.exp(-_sign(adv) * delta.detach())


def mixed_weight(weight: Tensor, lam: float, eps_w: float) -> Tensor:
    """The bracket of Eq. 7: (1 - lam) + lam * clip(w_t, max(0, 1 - eps_w), 1 + eps_w), detached.

    Args:
        weight: (N, T) per-token weights. Returns: (N, T) multipliers of A.
    """
    lo = max(0.0, 1.0 - eps_w)
    return (1.0 - lam) + lam * weight.detach().clamp(min=lo, max=1.0 + eps_w)


def reweight_advantages(adv: Tensor, weight: Tensor, lam: float, eps_w: float, apply_mask: Tensor) -> Tensor:
    """Token-level advantage, Eq. 7 / Table 4.

    A_t = A * [(1 - lam) + lam * clip(w_t, 1 - eps_w, 1 + eps_w)] on rows where
    ``apply_mask`` is True, and plain A (broadcast over T) elsewhere. The caller builds
    ``apply_mask`` = gate & has_context (RLRT gate: r == 1; RLSD gate: all rows).
    If 1 - eps_w < 0 the lower clip bound is clamped to 0 (weights are positive anyway).

    Args:
        adv: (N,) sequence advantages.
        weight: (N, T) per-token weights (RLSD or RLRT).
        lam: mixing coefficient lambda in [0, 1]; lam = 0 recovers GRPO exactly.
        eps_w: weight clip epsilon_w.
        apply_mask: (N,) bool.
    Returns:
        (N, T) token-level advantages (no gradient through the weight).
    """
    a = adv.unsqueeze(-1)
    mixed = a * mixed_weight(weight, lam, eps_w)
    plain = a.expand_as(mixed)
    return torch.where(apply_mask.to(torch.bool).unsqueeze(-1), mixed, plain)
