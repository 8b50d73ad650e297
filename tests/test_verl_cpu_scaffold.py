"""Fast checks of the verl CPU smoke's scaffolding (rlrt.backends.verl.cpu) and of the trainer fix it found.

The smoke itself (Ray, FSDP2 on gloo, the hf rollout, 2 steps of GRPO / RLRT / SDPO) is
tests/test_verl_cpu_smoke.py (``make verl-cpu-smoke``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("verl")


def test_task_runner_builds_our_trainer_after_ray_pickles_it():
    """Ray ships the task runner to its actor with cloudpickle, which copies the (local) class and verl's base
    class by value, each function with its own globals: patching ``main_ppo_v0.RayPPOTrainer`` alone left the
    copied ``run`` building verl's plain trainer (the CPU smoke trained GRPO without our method step and no
    history row). ``point_runner_at`` must reach the copy's globals."""
    import ray.cloudpickle as cloudpickle
    import verl.trainer.main_ppo_v0 as v0

    from rlrt.backends.verl.trainer import _task_runner, point_runner_at

    shipped = cloudpickle.loads(cloudpickle.dumps(_task_runner().__ray_metadata__.modified_class))
    base = next(k for k in shipped.__mro__ if "run" in k.__dict__ and k.__name__ == "TaskRunner")
    assert base.run.__globals__ is not vars(v0)  # the copy Ray's actor runs

    class Ours:
        pass

    saved = v0.RayPPOTrainer
    try:
        v0.RayPPOTrainer = Ours  # what the old code did: the copy does not see it
        assert base.run.__globals__["RayPPOTrainer"] is saved
        assert point_runner_at(shipped, Ours) >= 1
        assert base.run.__globals__["RayPPOTrainer"] is Ours
    finally:
        v0.RayPPOTrainer = saved


def test_backend_string_dedupe():
    from rlrt.backends.verl.cpu import _dedupe_backend

    assert _dedupe_backend("cpu:gloo,cpu:gloo") == "cpu:gloo"
    assert _dedupe_backend("cpu:gloo,cuda:nccl") == "cpu:gloo,cuda:nccl"
    assert _dedupe_backend("gloo") == "gloo"
    assert _dedupe_backend(None) is None


def test_sample_next_follows_vllm_order():
    from rlrt.backends.verl.cpu.rollout import sample_next

    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([0.0, 3.0, 1.0, 2.0])
    tok, lp = sample_next(logits, 0.0, -1, 1.0, g)  # greedy
    assert tok == 1 and lp == pytest.approx(float(torch.log_softmax(logits, -1)[1]))
    assert {sample_next(logits, 1.0, 1, 1.0, g)[0] for _ in range(20)} == {1}  # top-k 1
    assert {sample_next(logits, 1.0, -1, 0.5, g)[0] for _ in range(20)} == {1}  # top-p inside the top token
    draws = [sample_next(logits, 2.0, 2, 1.0, g) for _ in range(200)]
    assert {t for t, _ in draws} == {1, 3}  # top-2 only
    z = torch.tensor([3.0, 2.0]) / 2.0  # the log-prob is under the processed (tempered, truncated) distribution
    assert dict(draws)[3] == pytest.approx(float(torch.log_softmax(z, -1)[1]), abs=1e-6)


def test_cpu_platform_and_hf_rollout_register_in_a_fresh_process():
    """What every Ray worker of the smoke does at ``import verl``: the cpu platform (gloo, fake GPU resource) and
    the hf rollout on both registries; without the env the GPU defaults are untouched."""
    from rlrt.backends.verl.cpu import cpu_env

    code = ("import verl\n"
            "from verl.utils.device import get_device_name, get_nccl_backend, get_resource_name\n"
            "from verl.workers.rollout.base import get_rollout_class\n"
            "from verl.workers.rollout.replica import get_rollout_replica_class\n"
            "print(get_device_name(), get_nccl_backend(), get_resource_name(),\n"
            "      get_rollout_class('hf', 'async').__name__, get_rollout_replica_class('hf').__name__)\n")
    env = cpu_env()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-5:] == ["cpu", "gloo", "GPU", "HFServerAdapter", "HFReplica"]
    plain = {k: v for k, v in os.environ.items() if not k.startswith("VERL_")}
    out = subprocess.run([sys.executable, "-c", "import verl\nfrom verl.workers.rollout.replica import "
                          "RolloutReplicaRegistry as R\nprint(sorted(R._registry))"],
                         env=plain, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "hf" not in out.stdout  # the GPU path never sees the CPU rollout


def test_first_step_time_starts_at_fit_not_at_worker_start(monkeypatch):
    """history's step_time of step 1 counted from the trainer's construction, i.e. with the workers' start-up
    (78-98 s of a 2 s step in the CPU smoke); it starts at ``fit`` now."""
    import time

    import verl.trainer.ppo.ray_trainer as rt

    from rlrt.backends.verl.trainer import _trainer_class

    cls = _trainer_class()
    trainer = object.__new__(cls)
    trainer._rlrt_t0 = 0.0  # what __init__ set, long before
    seen = {}
    monkeypatch.setattr(rt.RayPPOTrainer, "fit", lambda self: seen.setdefault("t0", self._rlrt_t0))
    before = time.perf_counter()
    cls.fit(trainer)
    assert seen["t0"] >= before
