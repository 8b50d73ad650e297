"""One typed settings object per method: the single place a method's hyper-parameters and their defaults live.

The defaults are the RLRT paper's Table 5 (or, for the exploration baselines, their own papers'); the config's
``methods.<name>`` block and ``method_overrides.<kind>.<name>`` only override fields, and a key that is not a field
of the method's class is refused with a message naming it (``rlrt.config``). The schema checks each key's type and
range; this module says which keys a method has and what they mean (one docstring per field, as open-instruct's
config does).

A sweep point ``rlrt@eps_w=0.5`` is the same object with one field replaced, so every sweep key is a field here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class MethodSettings:
    """Fields every method has."""

    norm_adv_by_std: bool = False
    """Divide the group advantage by the group's (unbiased) std. GRPO in the paper: no (Dr.GRPO); RLSD/RLRT: yes."""
    lr_scale: float = 1.0
    """The method's learning rate is ``rl.lr * lr_scale`` (SDPO and SRPO use ×10 and ×5 of GRPO's, Table 5)."""
    lr: Optional[float] = None
    """An absolute learning rate; overrides ``rl.lr * lr_scale`` when set."""

    def learning_rate(self, base_lr: float) -> float:
        return float(self.lr) if self.lr is not None else float(base_lr) * float(self.lr_scale)


@dataclass(frozen=True)
class GRPOSettings(MethodSettings):
    """GRPO with the DAPO recipe (clip-higher, token-mean, no KL); the loop's settings live in the ``rl`` block."""


@dataclass(frozen=True)
class TokenWeightSettings(MethodSettings):
    """Methods that reweight A per token with a teacher view, Eq. 7: A_t = A·[(1−λ) + λ·clip(w_t, 1−ε_w, 1+ε_w)]."""

    norm_adv_by_std: bool = True
    context: str = "sibling"
    """The teacher's privileged context: ``sibling`` (another correct rollout), ``reference`` (the data set's
    solution) or ``answer`` (the gold answer in the reference template: RLSD where the data has no solution)."""
    lambda_init: float = 0.5
    """λ at step 0: the share of the token weight in the mix (0 recovers GRPO exactly)."""
    lambda_decay_steps: Optional[int] = None
    """λ decays linearly to 0 over this many steps; null = constant λ."""
    eps_w: float = 1.0
    """Clip range of the token weight, [max(0, 1−ε_w), 1+ε_w]."""


@dataclass(frozen=True)
class RLSDSettings(TokenWeightSettings):
    """RLSD (Table 5): reference-solution teacher, ε_w 0.2, λ 0.5 → 0 over 50 steps."""

    context: str = "reference"
    lambda_decay_steps: Optional[int] = 50
    eps_w: float = 0.2


@dataclass(frozen=True)
class RLRTSettings(TokenWeightSettings):
    """RLRT (Table 5, base models): sibling teacher, ε_w 1.0, constant λ 0.5 (instruct/thinking: see overrides)."""


@dataclass(frozen=True)
class SDPOSettings(MethodSettings):
    """SDPO (Table 5): top-K generalized JSD toward the frozen initial policy shown a correct sibling."""

    lr_scale: float = 10.0
    context: str = "sibling"
    """The teacher's privileged context (``sibling`` in the paper)."""
    topk: int = 100
    """Support of the divergence: the student's top-K tokens at each position."""
    tail: bool = True
    """Add the remaining probability mass of each distribution as one extra bucket."""
    alpha: float = 0.5
    """Generalized JSD mixture weight: 0 = KL(T‖S), 1 = KL(S‖T), 0.5 = symmetric JSD."""
    is_clip: float = 2.0
    """Upper clamp of the detached importance ratio π_θ/π_old that multiplies each token's divergence."""
    ema_rate: float = 0.0
    """EMA rate of the teacher toward the policy after each step; 0 = frozen initial teacher (the paper)."""


@dataclass(frozen=True)
class SRPOSettings(SDPOSettings):
    """SRPO (Table 5): GRPO on r = 1 rollouts, entropy-weighted SDPO on r = 0 rollouts with a correct sibling."""

    lr_scale: float = 5.0
    beta: float = 0.5
    """Token weight exp(−β·H_T) of the routed tokens, normalised to mean 1 (β = 0: plain SDPO); swept {0, 0.5, 1}."""


@dataclass(frozen=True)
class GRPOEBSettings(MethodSettings):
    """GRPO+EB: GRPO with an entropy term (Cheng et al., "Reasoning with Exploration: an Entropy Perspective")."""

    variant: str = "advantage"
    """``advantage``: A_t + min(α·H_t, |A_t|/κ), H_t detached (Cheng et al.); ``loss``: loss − entropy_coeff·H."""
    alpha: float = 0.4
    """α of the entropy advantage ψ = min(α·H_t, |A_t|/κ): 0.4 for GRPO (0.1 for PPO), as a public reimplementation
    (lucidrains/PaLM-rlhf-pytorch) states for Cheng et al.; not checked against the paper's own text."""
    kappa: float = 2.0
    """κ of ψ (> 1): the entropy term never exceeds |A_t|/κ, so it cannot flip the sign of a negative advantage."""
    entropy_coeff: float = 0.01
    """Coefficient of the loss-level entropy bonus (``variant: loss``, verl's ``entropy_coeff``)."""


@dataclass(frozen=True)
class DIVERSettings(MethodSettings):
    """DIVER: a sequence-level diversity bonus added to the verifiable score before the group advantage."""

    variant: str = "equation"
    """``equation``: share of a rollout's equations no sibling has; ``bleu``: 1 − mean pairwise BLEU."""
    diversity_scale: float = 1.0
    """Scale of the bonus."""
    diversity_cap: float = 0.68
    """Cap on the novel-equation share D (equation variant)."""
    diversity_decay_steps: Optional[int] = None
    """Cosine decay of the equation bonus to 0 over this many steps; null = no decay."""
    bleu_steps: Optional[int] = None
    """The BLEU bonus is paid only during the first this-many steps; null = every step."""


# Which settings class each method reads: the registry (rlrt.methods.registry) wires each method to the class named
# here, and the config checks read this map without importing the registry's torch functions.
METHOD_SETTINGS: dict[str, type[MethodSettings]] = {
    "grpo": GRPOSettings, "sdpo": SDPOSettings, "srpo": SRPOSettings, "rlsd": RLSDSettings, "rlrt": RLRTSettings,
    "grpo_eb": GRPOEBSettings, "diver": DIVERSettings, "rlrt_all": RLRTSettings,
}


def settings_class(method: str) -> type[MethodSettings]:
    """The settings class of ``method``; KeyError naming the known methods otherwise."""
    try:
        return METHOD_SETTINGS[method]
    except KeyError:
        raise KeyError(f"unknown method {method!r}; registered: {sorted(METHOD_SETTINGS)}") from None


def make_settings(method: str, values: dict | None = None, where: str | None = None) -> MethodSettings:
    """``method``'s settings from the defaults with ``values`` overriding; an unknown key raises KeyError naming it."""
    return build_settings(settings_class(method), dict(values or {}), where or f"methods.{method}")


def field_names(cls: type[MethodSettings]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def field_doc(cls: type[MethodSettings], name: str) -> str:
    """The docstring line under a field (read from the source, like Sphinx's attribute docstrings)."""
    import ast
    import inspect

    for klass in cls.__mro__:
        if not dataclasses.is_dataclass(klass):
            continue
        tree = ast.parse(inspect.getsource(klass))
        body = tree.body[0].body
        for a, b in zip(body, body[1:]):
            if (isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and a.target.id == name
                    and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant)):
                return str(b.value.value)
    return ""


# The values a string field may take, per field name (the schema's enums are the union over methods).
CHOICES: dict[tuple[type, str], tuple[str, ...]] = {
    (TokenWeightSettings, "context"): ("sibling", "reference", "answer"),
    (SDPOSettings, "context"): ("sibling", "reference", "answer"),
    (GRPOEBSettings, "variant"): ("advantage", "loss"),
    (DIVERSettings, "variant"): ("equation", "bleu"),
}


def build_settings(cls: type[MethodSettings], values: dict[str, Any], where: str = "settings") -> MethodSettings:
    """``cls`` with ``values`` overriding its defaults. An unknown key raises ``KeyError``, a value outside the
    field's choices ``ValueError``; both name the key as ``<where>.<key>``."""
    allowed = field_names(cls)
    for key in values:
        if key not in allowed:
            raise KeyError(f"{where}.{key}: not a setting of this method; its settings: {allowed}")
    out = cls(**values)
    for (owner, key), choices in CHOICES.items():
        if issubclass(cls, owner) and getattr(out, key) not in choices:
            raise ValueError(f"{where}.{key}: {getattr(out, key)!r} is not one of {list(choices)} for this method")
    return out


def as_dict(settings: MethodSettings) -> dict[str, Any]:
    return dataclasses.asdict(settings)
