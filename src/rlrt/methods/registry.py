"""One registry of RL methods: each is GRPO's surrogate plus (context c, per-token weight w_t, gate, objective).

RLRT paper, Appendix G.1 / Table 4: every self-distillation baseline applies
``A_t = A * [(1 - lam) + lam * clip(w_t, 1 - eps_w, 1 + eps_w)]`` and differs only in the privileged context
``c``, the weight ``w_t`` and the trajectory-level gate. SDPO and SRPO replace (part of) the surrogate by a
logit-level distillation loss (their registered objectives, ``rlrt.methods.objectives``); GRPO+EB shapes the
advantage with the token entropy (``advantages.entropy_advantage``) and DIVER adds a diversity reward before the
group normalisation (``rlrt.methods.diversity``).

A spec holds *functions and fields*, never free-text: Table 4 (``table4_rows``) is read from the functions a method
is wired to (their ``formula`` / ``direction`` attributes), so wiring RLSD to RLRT's weight shows up in the table.
A method's hyper-parameters and defaults live in its settings class (``rlrt.methods.settings``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from rlrt.methods.advantages import entropy_advantage
from rlrt.methods.diversity import diversity_bonus
from rlrt.methods.objectives import Objective, get_objective
from rlrt.methods.settings import METHOD_SETTINGS as METHOD_NAMES
from rlrt.methods.settings import MethodSettings, TokenWeightSettings, as_dict, make_settings, settings_class
from rlrt.methods.weights import rlrt_weight, rlsd_weight

WeightFn = Callable[[Tensor, Tensor], Tensor]


def gate_all(rewards: Tensor) -> Tensor:
    """Every rollout (with a context) is reweighted. (N,) -> (N,) bool."""
    return torch.ones_like(rewards, dtype=torch.bool)


def gate_correct(rewards: Tensor) -> Tensor:
    """Only correct rollouts (r = 1) are reweighted: RLRT's trajectory-level gate. (N,) -> (N,) bool."""
    return rewards > 0.5


gate_all.label, gate_correct.label = "all", "r=1 only"

# teacher: whose distribution P_T is -- "self" = θ_old shown the context (one no-grad pass per step, token weights),
# "frozen" = a separate copy of the initial policy shown the context (its logits inside the update), "none".
TEACHERS = ("none", "self", "frozen")
CONTEXT_LABELS = {"sibling": "correct rollout", "reference": "ground truth"}


@dataclass(frozen=True)
class MethodSpec:
    """How one method turns rewards into per-token losses.

    name:            config key (``methods.<name>``), ``label`` its display name.
    settings:        its settings class (fields, defaults, one docstring each).
    teacher:         "none" | "self" (θ_old with the context: token weights) | "frozen" (initial policy: logits).
    weight_fn:       (delta (N,T), adv (N,)) -> w (N,T), or None (no token weight).
    gate:            (rewards (N,)) -> (N,) bool, the rollouts the weight applies to (with ``weight_fn``).
    objective:       name of a registered objective (``rlrt.methods.objectives``).
    reward_bonus:    (texts, rewards, step, settings) -> (n,) added to one group's scores before the advantage.
    advantage_bonus: (token_adv, entropy, mask, alpha, kappa) -> token_adv', applied with ``settings.variant ==
                     "advantage"`` (GRPO+EB).
    paper_table4:    a row of the paper's Table 4 (the others are this repo's extra runs: EB, DIVER, ablation).
    """

    name: str
    label: str
    settings: type[MethodSettings]
    teacher: str = "none"
    weight_fn: Optional[WeightFn] = None
    gate: Callable[[Tensor], Tensor] = gate_all
    objective: str = "pg"
    reward_bonus: Optional[Callable] = None
    advantage_bonus: Optional[Callable] = None
    paper_table4: bool = False

    def __post_init__(self):
        if self.teacher not in TEACHERS:
            raise ValueError(f"method {self.name!r}: teacher must be one of {TEACHERS}")
        if self.weight_fn is not None and not issubclass(self.settings, TokenWeightSettings):
            raise ValueError(f"method {self.name!r}: a token weight needs TokenWeightSettings (λ, ε_w, context)")
        if self.weight_fn is not None and self.teacher != "self":
            raise ValueError(f"method {self.name!r}: token weights are scored by θ_old (teacher='self')")
        if get_objective(self.objective).uses_teacher_logits and self.teacher != "frozen":
            raise ValueError(f"method {self.name!r}: objective {self.objective!r} needs teacher='frozen'")

    @property
    def display(self) -> str:
        return self.label

    @property
    def objective_fn(self) -> Objective:
        return get_objective(self.objective)

    @property
    def needs_teacher(self) -> bool:
        """A teacher-view pass over the sampled tokens (log P_T(y_t)) is needed for the token weights."""
        return self.weight_fn is not None

    @property
    def needs_teacher_logits(self) -> bool:
        """A separate (frozen / EMA) teacher whose logits enter the update (logit-level distillation)."""
        return self.teacher == "frozen"

    def default_settings(self) -> MethodSettings:
        return self.settings()

    def make_settings(self, values: dict | None = None, where: str | None = None) -> MethodSettings:
        """Settings from the defaults with ``values`` overriding; an unknown key raises KeyError naming it."""
        return make_settings(self.name, values, where)

    @property
    def defaults(self) -> dict:
        """The default settings as a dict (Table 5)."""
        return as_dict(self.settings())


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
register(MethodSpec("grpo", "GRPO", settings_class("grpo"), paper_table4=True))
register(MethodSpec("sdpo", "SDPO", settings_class("sdpo"), teacher="frozen", objective="sdpo",
                    paper_table4=True))
register(MethodSpec("srpo", "SRPO", settings_class("srpo"), teacher="frozen", objective="srpo",
                    paper_table4=True))
register(MethodSpec("rlsd", "RLSD", settings_class("rlsd"), teacher="self", weight_fn=rlsd_weight, gate=gate_all,
                    paper_table4=True))
register(MethodSpec("rlrt", "RLRT", settings_class("rlrt"), teacher="self", weight_fn=rlrt_weight,
                    gate=gate_correct, paper_table4=True))
# Exploration baselines (Sec. 6.4) and the gate ablation (Sec. 6.5).
register(MethodSpec("grpo_eb", "GRPO+EB", settings_class("grpo_eb"), advantage_bonus=entropy_advantage))
register(MethodSpec("diver", "DIVER", settings_class("diver"), reward_bonus=diversity_bonus))
register(MethodSpec("rlrt_all", "RLRT-all", settings_class("rlrt_all"), teacher="self", weight_fn=rlrt_weight,
                    gate=gate_all))


if set(METHODS) != set(METHOD_NAMES):  # rlrt.methods.settings.METHOD_SETTINGS names the same methods
    raise RuntimeError(f"methods registered {sorted(METHODS)} != those with settings {sorted(METHOD_NAMES)}")


def objective_name(spec: MethodSpec, settings: MethodSettings) -> str:
    """The registered objective a run uses: the spec's, or GRPO+EB's loss-level variant (``variant: loss``)."""
    if spec.advantage_bonus is not None and getattr(settings, "variant", "advantage") == "loss":
        return "pg_entropy"
    return spec.objective


def table4_rows() -> list[dict[str, str]]:
    """Table 4 from the registry: one row per method, the paper's rows first, every cell read off the functions
    and fields the method is wired to."""
    rows = []
    for s in sorted(METHODS.values(), key=lambda s: not s.paper_table4):  # stable: keeps registration order
        obj = s.objective_fn
        d = s.default_settings()
        shaping = s.advantage_bonus or s.reward_bonus
        if s.weight_fn is not None:
            weight, gate, direction = s.weight_fn.formula, s.gate.label, s.weight_fn.direction
        elif shaping is not None:
            weight, gate, direction = shaping.formula, "-", shaping.direction
        elif obj.uses_teacher_logits:
            weight, gate, direction = obj.description, obj.gate, obj.direction
        else:
            weight, gate, direction = "1", "-", "-"
        rows.append({
            "Method": s.display,
            "Context c": CONTEXT_LABELS.get(getattr(d, "context", ""), "-") if s.teacher != "none" else "-",
            "Per-token weight w_t": weight, "Gate": gate, "Direction": direction,
            "Objective": f"{s.objective}: {obj.description}",
            "Teacher": s.teacher,
            "In paper's Table 4": "yes" if s.paper_table4 else "no (Sec. 6.4-6.5)",
            "Defaults (Table 5)": ", ".join(f"{k}={v}" for k, v in as_dict(d).items()),
        })
    return rows
