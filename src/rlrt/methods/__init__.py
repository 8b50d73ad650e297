"""Pure-math floor: advantages, token weights, losses."""

from rlrt.methods.advantages import group_advantages, linear_decay
from rlrt.methods.losses import agg_loss, clipped_surrogate, entropy_from_logits, token_logprobs
from rlrt.methods.weights import log_ratio, mixed_weight, reweight_advantages, rlrt_weight, rlsd_weight

__all__ = [
    "group_advantages",
    "linear_decay",
    "log_ratio",
    "rlsd_weight",
    "rlrt_weight",
    "mixed_weight",
    "reweight_advantages",
    "agg_loss",
    "clipped_surrogate",
    "entropy_from_logits",
    "token_logprobs",
]
