"""One registry of RL methods: each is GRPO's surrogate plus (context c, per-token weight w_t, gate).

RLRT paper, Appendix G.1 / Table 4: every self-distillation baseline applies
``A_t = A * [(1 - lam) + lam * clip(w_t, 1 - eps_w, 1 + eps_w)]`` and differs only in the privileged context
``c``, the weight ``w_t`` and the trajectory-level gate. Table 4 is generated from this registry
(``rlrt.stages.tables``), so the table and the code cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from rlrt.methods.weights import mixed_weight, reweight_advantages, rlrt_weight, rlsd_weight

WeightFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class MethodSpec:
    """How one method turns sequence advantages into token advantages.

    name:       config key (``methods.<name>``).
    context:    privileged context kind for the teacher view: "none" | "sibling" | "reference".
    weight_fn:  (delta (N,T), adv (N,)) -> w (N,T), or None (no teacher pass, w = 1).
    gate:       "all" (every rollout) or "correct" (only r = 1 rollouts are reweighted).
    table4:     the Table 4 cells: (context, per-token weight, gate, direction).
    defaults:   hyper-parameters (Table 5) that config may override.
    """

    name: str
    context: str
    weight_fn: Optional[WeightFn]
    gate: str
    table4: tuple[str, str, str, str]
    defaults: dict = field(default_factory=dict)

    @property
    def needs_teacher(self) -> bool:
        return self.weight_fn is not None and self.context != "none"


METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    if spec.name in METHODS:
        raise ValueError(f"method {spec.name!r} registered twice")
    METHODS[spec.name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; registered: {sorted(METHODS)}") from None


register(MethodSpec(
    name="grpo", context="none", weight_fn=None, gate="all",
    table4=("-", "1", "-", "-"),
    defaults={"norm_adv_by_std": False},
))
register(MethodSpec(
    name="rlsd", context="reference", weight_fn=rlsd_weight, gate="all",
    table4=("ground truth", "(P_T(y_t)/P_S(y_t))^sign(A)", "all", "teacher = magnitude"),
    defaults={"norm_adv_by_std": True, "lambda_init": 0.5, "lambda_decay_steps": 50, "eps_w": 0.2},
))
register(MethodSpec(
    name="rlrt", context="sibling", weight_fn=rlrt_weight, gate="correct",
    table4=("correct rollout", "(P_S(y_t)/P_T(y_t))^sign(A)", "r=1 only", "amplify self-driven"),
    defaults={"norm_adv_by_std": True, "lambda_init": 0.5, "lambda_decay_steps": None, "eps_w": 1.0},
))


def token_advantages(
    spec: MethodSpec,
    adv: torch.Tensor,
    response_mask: torch.Tensor,
    rewards: torch.Tensor | None = None,
    delta: torch.Tensor | None = None,
    has_context: torch.Tensor | None = None,
    lam: float = 0.0,
    eps_w: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token advantages for ``spec`` (Eq. 7 / Table 4) and the weights actually applied.

    adv (N,), response_mask (N,T), rewards (N,) in {0,1}, delta (N,T) = sg(log P_T - log P_S),
    has_context (N,) bool. Returns (token_adv (N,T), weight (N,T)) where weight is the clipped-and-mixed
    multiplier ``token_adv / A`` (1 where unweighted), zeroed outside the response mask.
    """
    mask = response_mask.to(adv.dtype)
    if spec.weight_fn is None or delta is None:
        tok = adv[:, None] * mask
        return tok, mask.clone()
    apply = has_context.bool() if has_context is not None else torch.ones_like(adv, dtype=torch.bool)
    if spec.gate == "correct":
        if rewards is None:
            raise ValueError(f"method {spec.name!r} gates on r=1 and needs rewards")
        apply = apply & (rewards > 0.5)
    w = spec.weight_fn(delta, adv)
    tok = reweight_advantages(adv, w, lam, eps_w, apply) * mask
    eff = torch.where(apply[:, None], mixed_weight(w, lam, eps_w), torch.ones_like(w)) * mask
    return tok, eff
