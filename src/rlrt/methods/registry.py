"""One registry of RL methods: each is GRPO's surrogate plus (context c, per-token weight w_t, gate).

RLRT paper, Appendix G.1 / Table 4: every self-distillation baseline applies
``A_t = A * [(1 - lam) + lam * clip(w_t, 1 - eps_w, 1 + eps_w)]`` and differs only in the privileged context
``c``, the weight ``w_t`` and the trajectory-level gate. SDPO and SRPO replace (part of) the surrogate by a
logit-level distillation loss (``rlrt.methods.distill``); GRPO+EB adds an entropy bonus (``losses``) and DIVER a
diversity reward before normalisation (``rlrt.methods.diversity``). Table 4 is generated from this registry
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
    gate:       "all" (every rollout) or "correct" (only r = 1 rollouts are reweighted) or "route" (SRPO).
    table4:     the Table 4 cells: (context, per-token weight, gate, direction).
    defaults:   hyper-parameters (Table 5) that config may override.
    objective:  "pg" (clipped surrogate on token advantages), "sdpo" (top-K JSD toward the teacher view on every
                rollout with a context) or "srpo" (pg on r = 1, entropy-weighted SDPO on r = 0 with a context).
    entropy_bonus: subtract ``entropy_coeff * H`` from the loss (GRPO+EB).
    diversity:  add DIVER's diversity bonus (variant from settings) to the reward before the group advantage.
    paper_table4: a row of the paper's Table 4 (the others are this repo's additional runs: EB, DIVER, ablations).
    """

    name: str
    context: str
    weight_fn: Optional[WeightFn]
    gate: str
    table4: tuple[str, str, str, str]
    defaults: dict = field(default_factory=dict)
    objective: str = "pg"
    entropy_bonus: bool = False
    diversity: bool = False
    paper_table4: bool = False
    label: str = ""

    @property
    def display(self) -> str:
        return self.label or self.name.upper()

    @property
    def needs_teacher(self) -> bool:
        """A teacher-view pass over the sampled tokens (log P_T(y_t)) is needed for the token weights."""
        return self.weight_fn is not None and self.context != "none"

    @property
    def needs_teacher_logits(self) -> bool:
        """Full teacher-view logits are needed inside the update (logit-level distillation)."""
        return self.objective in ("sdpo", "srpo")


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


# Rows of the paper's Table 4, in its order (defaults = its Table 5).
register(MethodSpec(
    name="grpo", label="GRPO", context="none", weight_fn=None, gate="all", paper_table4=True,
    table4=("-", "1", "-", "-"),
    defaults={"norm_adv_by_std": False},
))
register(MethodSpec(
    name="sdpo", label="SDPO", context="sibling", weight_fn=None, gate="all", objective="sdpo", paper_table4=True,
    table4=("correct rollout", "logit-level JSD(P_S, P_T) over student top-K", "all", "P_S -> P_T"),
    defaults={"norm_adv_by_std": False, "lr_scale": 10.0, "topk": 100, "tail": True, "alpha": 0.5,
              "is_clip": 2.0, "ema_rate": 0.0},
))
register(MethodSpec(
    name="srpo", label="SRPO", context="sibling", weight_fn=None, gate="route", objective="srpo", paper_table4=True,
    table4=("correct rollout", "SDPO loss x exp(-beta H_T) if r=0; 1 if r=1", "route by r", "P_S -> P_T on r=0"),
    defaults={"norm_adv_by_std": False, "lr_scale": 5.0, "topk": 100, "tail": True, "alpha": 0.5,
              "is_clip": 2.0, "ema_rate": 0.0, "beta": 0.5},
))
register(MethodSpec(
    name="rlsd", label="RLSD", context="reference", weight_fn=rlsd_weight, gate="all", paper_table4=True,
    table4=("ground truth", "(P_T(y_t)/P_S(y_t))^sign(A)", "all", "teacher = magnitude"),
    defaults={"norm_adv_by_std": True, "lambda_init": 0.5, "lambda_decay_steps": 50, "eps_w": 0.2},
))
register(MethodSpec(
    name="rlrt", label="RLRT", context="sibling", weight_fn=rlrt_weight, gate="correct", paper_table4=True,
    table4=("correct rollout", "(P_S(y_t)/P_T(y_t))^sign(A)", "r=1 only", "amplify self-driven"),
    defaults={"norm_adv_by_std": True, "lambda_init": 0.5, "lambda_decay_steps": None, "eps_w": 1.0},
))
# Exploration baselines (Sec. 6.4) and the gate ablation (Sec. 6.5).
register(MethodSpec(
    name="grpo_eb", label="GRPO+EB", context="none", weight_fn=None, gate="all", entropy_bonus=True,
    table4=("-", "1 (+ entropy bonus on the loss)", "-", "uniform token-level entropy"),
    defaults={"norm_adv_by_std": False, "entropy_coeff": 0.001},
))
register(MethodSpec(
    name="diver", label="DIVER", context="none", weight_fn=None, gate="all", diversity=True,
    table4=("-", "1 (reward + sequence diversity bonus)", "-", "uniform sequence-level diversity"),
    defaults={"norm_adv_by_std": False, "variant": "equation", "diversity_scale": 1.0, "diversity_cap": 0.68,
              "diversity_decay_steps": None, "bleu_steps": None},
))
register(MethodSpec(
    name="rlrt_all", label="RLRT-all", context="sibling", weight_fn=rlrt_weight, gate="all",
    table4=("correct rollout", "(P_S(y_t)/P_T(y_t))^sign(A)", "all (no gate)", "ablation of the r=1 gate"),
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
    if spec.weight_fn is None or delta is None or spec.gate == "route":
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
