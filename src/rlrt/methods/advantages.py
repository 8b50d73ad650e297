"""Group-relative advantages and the lambda schedule (paper Sec. 3, Sec. 5, App. G.2)."""

from __future__ import annotations

import torch
from torch import Tensor


def group_advantages(rewards: Tensor, norm_by_std: bool, eps: float = 1e-6) -> Tensor:
    """GRPO group-relative outcome advantage A^(k) (paper Sec. 5, "group-standardized advantage").

    A = r - mean_group(r), divided by (std_group(r) + eps) when ``norm_by_std``.
    ``std`` is the *unbiased* (Bessel-corrected) std, as ``torch.std`` in verl's
    ``compute_grpo_outcome_advantage``. Following verl exactly, a group of size 1 uses
    mean = 0 and std = 1, so its advantage is r (or r / (1 + eps) when normalized).
    GRPO in the paper disables std norm (Dr.GRPO); RLSD/RLRT enable it (Table 5).

    Args:
        rewards: (G, n) float, one row per prompt group of n rollouts.
        norm_by_std: divide by the group std.
        eps: added to the std.
    Returns:
        (G, n) advantages, no gradient.
    """
    r = rewards.detach().to(torch.float32) if not rewards.is_floating_point() else rewards.detach()
    if r.shape[-1] == 1:
        mean = torch.zeros_like(r)
        std = torch.ones_like(r)
    else:
        mean = r.mean(dim=-1, keepdim=True)
        std = r.std(dim=-1, keepdim=True)
    adv = r - mean
    if norm_by_std:
        adv = adv / (std + eps)
    return adv


def linear_decay(step: int, init: float, decay_steps: int | None) -> float:
    """Mixing-coefficient schedule lambda(step) (App. G.2 "Mixing decay steps").

    lambda = init * max(0, 1 - step / decay_steps); ``decay_steps`` None or 0 means
    no decay (constant ``init``).
    """
    if not decay_steps:
        return float(init)
    return float(init) * max(0.0, 1.0 - step / decay_steps)


def entropy_advantage(token_adv: Tensor, entropy: Tensor, response_mask: Tensor, alpha: float, kappa: float) -> Tensor:
    """GRPO+EB's entropy-based advantage (Cheng et al., "Reasoning with Exploration: an Entropy Perspective"):

        A_t' = A_t + psi_t,   psi_t = min(alpha * H_t, |A_t| / kappa),   H_t detached.

    The clip |A_t|/kappa (kappa > 1) keeps the term from flipping the sign of a negative advantage and makes it
    vanish where A_t = 0 (groups with no signal); H_t is the rollout policy's entropy at position t.

    Args:
        token_adv: (N, T) token advantages.
        entropy: (N, T) per-token entropy of the rollout policy.
        response_mask: (N, T).
        alpha, kappa: > 0.
    Returns:
        (N, T) shaped advantages, zero outside the mask.
    """
    psi = torch.minimum(alpha * entropy.detach(), token_adv.abs() / kappa)
    return (token_adv + psi) * response_mask.to(token_adv.dtype)


entropy_advantage.formula = "1 (A_t + min(alpha H_t, |A_t|/kappa))"
entropy_advantage.direction = "uniform token-level entropy"
