"""Pure-math floor: advantages, token weights, losses.

The re-exports below resolve on first use (PEP 562), so importing a torch-free submodule
(``rlrt.methods.settings``: what the config checks read) does not import torch."""

from importlib import import_module

_EXPORTS = {
    "group_advantages": "advantages",
    "linear_decay": "advantages",
    "agg_loss": "losses",
    "clipped_surrogate": "losses",
    "entropy_from_logits": "losses",
    "token_logprobs": "losses",
    "log_ratio": "weights",
    "mixed_weight": "weights",
    "reweight_advantages": "weights",
    "rlrt_weight": "weights",
    "rlsd_weight": "weights",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"rlrt.methods.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'rlrt.methods' has no attribute {name!r}")
