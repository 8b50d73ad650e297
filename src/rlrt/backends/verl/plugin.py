"""verl plugin entry point (``[project.entry-points."verl.plugins"]``): registrations happen on import.

``import verl`` imports this module in the driver and in every Ray worker (and swallows its import errors, so a
broken plugin would surface only as "unknown loss mode" on the cluster: ``tests/test_verl_plugin.py`` imports it
strictly). It registers the policy-loss names ``rlrt.backends.verl.overrides`` may choose (``rlrt_sdpo``,
``rlrt_srpo``: ``rlrt.backends.verl.loss.worker_loss_only``, a name only -- their loss is the trainer's
``set_loss_fn``). The token-weight
methods need no registration: they use verl's built-in ``grpo`` estimator and ``vanilla`` loss, with the
advantages rewritten by ``rlrt.backends.verl.trainer``.

Light on purpose: no Ray, no GPU, no trainer import (verl calls this while ``import verl`` is still running, so
only ``verl.trainer.ppo.core_algos`` is touched, from inside :func:`register`).
"""

from __future__ import annotations

REGISTERED: list[str] = []


def register() -> list[str]:
    """Register our names with verl's policy-loss registry (idempotent); returns them."""
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, register_policy_loss

    from rlrt.backends.verl.loss import LOSS_MODES, worker_loss_only

    for name in LOSS_MODES.values():
        if POLICY_LOSS_REGISTRY.get(name) is not worker_loss_only:
            register_policy_loss(name)(worker_loss_only)
        if name not in REGISTERED:
            REGISTERED.append(name)
    return list(REGISTERED)


register()
