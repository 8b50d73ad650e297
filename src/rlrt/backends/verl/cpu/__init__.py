"""CPU-only scaffolding that lets verl 0.9.1's trainer run without a GPU (the CPU smoke, ``make verl-cpu-smoke``).

NOT part of the GPU path: nothing imports this package unless a process is started with
``VERL_USE_EXTERNAL_MODULES=rlrt.backends.verl.cpu`` (verl imports the named modules at ``import verl``, in the
driver, the task runner and every Ray worker; :func:`cpu_env` sets it with the rest). What it registers:

* a verl platform ``cpu`` (selected by ``VERL_PLATFORM=cpu``): device ``cpu``, collective backend ``gloo``, a
  device module whose memory and stream calls are no-ops, Ray's accelerator resource still ``GPU`` (Ray is started
  with a fake GPU count: ``ray_kwargs.ray_init.num_gpus``);
* a wrapper around ``torch.distributed.init_process_group`` that drops the duplicate ``cpu:gloo`` verl builds
  (``verl/utils/distributed.py``: ``f"cpu:gloo,{device}:{backend}"`` = ``cpu:gloo,cpu:gloo``, refused by torch);
* a server-mode rollout ``hf`` (``actor_rollout_ref.rollout.name=hf``): ``transformers`` forward passes behind the
  interface verl's agent loop calls (``rlrt.backends.verl.cpu.rollout``);
* with ``RLRT_VERL_CPU_FREEZE_AFTER_STEP=k`` only: the trainer stops after step k's checkpoint and waits to be
  killed (:data:`FREEZE_AFTER`; the smoke's kill-and-resume check).

:func:`cpu_env` and :func:`cpu_overrides` are what a CPU run adds to a normal ``rlrt.backends.verl.train.run``
(environment variables and ``verl.extra_overrides``).
"""

from __future__ import annotations

import contextlib
import os
import types
from typing import Any, Optional

import torch

MODULE = __name__


def cpu_env(base: dict | None = None) -> dict:
    """Environment for a verl run on CPU: this package as verl's external module, the ``cpu`` platform, FSDP's
    engine looked up under ``cuda`` (verl registers its FSDP engine for cuda/npu only:
    ``verl/workers/engine/fsdp/transformer_impl.py``), no Ray dashboard / usage report."""
    env = dict(os.environ if base is None else base)
    env.update({"VERL_USE_EXTERNAL_MODULES": MODULE, "VERL_PLATFORM": "cpu", "VERL_ENGINE_DEVICE": "cuda",
                "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0", "TOKENIZERS_PARALLELISM": "false"})
    env.pop("CUDA_VISIBLE_DEVICES", None)  # Ray refuses fake GPUs when it is set (to anything)
    return env


def cpu_overrides(n_cpus: int = 8, n_gpus: int = 1) -> list[str]:
    """Hydra overrides (``verl.extra_overrides``) for CPU: FSDP2 (FSDP1 asks the accelerator for a device id),
    the ``hf`` rollout without sleep mode, Ray with ``n_cpus`` CPUs (each verl worker asks for 3) and ``n_gpus``
    fake GPUs (Ray only counts them)."""
    ro = "actor_rollout_ref.rollout"
    return [
        "actor_rollout_ref.actor.strategy=fsdp2", "actor_rollout_ref.ref.strategy=fsdp2",
        f"{ro}.name=hf", f"++{ro}.enable_sleep_mode=False", f"{ro}.free_cache_engine=False",
        f"{ro}.agent.num_workers=1",
        f"ray_kwargs.ray_init.num_cpus={int(n_cpus)}", f"++ray_kwargs.ray_init.num_gpus={int(n_gpus)}",
    ]


# --- the platform ---------------------------------------------------------------------------------------------


def _device_module() -> types.ModuleType:
    """``torch.cpu`` plus the ``torch.cuda`` calls verl makes on its device module, as CPU no-ops."""
    m = types.ModuleType("rlrt_verl_cpu_device")
    for name in dir(torch.cpu):
        if not name.startswith("_"):
            setattr(m, name, getattr(torch.cpu, name))
    zero = lambda *a, **k: 0  # noqa: E731
    none = lambda *a, **k: None  # noqa: E731
    for name in ("memory_allocated", "memory_reserved", "max_memory_allocated", "max_memory_reserved"):
        setattr(m, name, zero)
    for name in ("empty_cache", "reset_peak_memory_stats", "set_device", "synchronize", "manual_seed",
                 "manual_seed_all", "ipc_collect", "set_per_process_memory_fraction"):
        setattr(m, name, none)
    m.manual_seed = lambda seed: None
    m.is_available = lambda: True
    m.device_count = lambda: 1
    m.current_device = lambda: 0
    m.get_rng_state = lambda *a, **k: torch.get_rng_state()
    m.set_rng_state = lambda state, *a, **k: torch.set_rng_state(state)
    m.memory_stats = lambda *a, **k: {}
    m.get_device_name = lambda *a, **k: "CPU"  # verl's flops counter: no peak-FLOPS entry, MFU 0

    def mem_get_info(*a, **k):
        import psutil

        vm = psutil.virtual_memory()
        return vm.available, vm.total

    m.mem_get_info = mem_get_info
    m.memory = types.SimpleNamespace(_set_allocator_settings=none)
    return m


def _platform_class():
    from verl.plugin.platform.platform_base import PlatformBase
    from verl.plugin.platform.platform_manager import PlatformRegistry

    device = _device_module()

    @PlatformRegistry.register(platform="cpu")
    class PlatformCPU(PlatformBase):
        """verl on CPU: gloo collectives, Ray's (fake) ``GPU`` resource, no-op memory management."""

        device_name = property(lambda self: "cpu")
        vendor_name = property(lambda self: "cpu")
        device_module = property(lambda self: device)

        def is_available(self) -> bool:
            return True

        def current_device(self):
            return torch.device("cpu")  # verl calls model.to(device=get_device_id())

        def device_count(self) -> int:
            return 1

        def set_device(self, device_index: int) -> None:
            return None

        def synchronize(self, device_index: Optional[int] = None) -> None:
            return None

        def manual_seed(self, seed: int) -> None:
            torch.manual_seed(seed)

        def manual_seed_all(self, seed: int) -> None:
            torch.manual_seed(seed)

        def set_allocator_settings(self, settings: str) -> None:
            return None

        def empty_cache(self) -> None:
            return None

        def get_device_capability(self, device_index: int = 0):
            return None, None

        def communication_backend_name(self) -> str:
            return "gloo"

        def visible_devices_envvar(self) -> str:
            return "CUDA_VISIBLE_DEVICES"

        @contextlib.contextmanager
        def nvtx_range(self, msg: str):
            yield

        def profiler_start(self) -> None:
            return None

        def profiler_stop(self) -> None:
            return None

        def ray_resource_name(self) -> str:
            return "GPU"

        def ray_noset_envvars(self) -> list[str]:
            return []

        def is_ipc_supported(self) -> bool:
            return False

        def cudart(self) -> Any:
            return None

    return PlatformCPU


# --- torch.distributed: verl's "cpu:gloo,cpu:gloo" ------------------------------------------------------------


def _dedupe_backend(backend: Any) -> Any:
    """``cpu:gloo,cpu:gloo`` -> ``cpu:gloo`` (torch refuses a device type named twice); anything else unchanged."""
    if not isinstance(backend, str) or "," not in backend:
        return backend
    seen, parts = set(), []
    for part in backend.split(","):
        dev = part.split(":", 1)[0] if ":" in part else part
        if dev not in seen:
            seen.add(dev)
            parts.append(part)
    return ",".join(parts)


def _patch_init_process_group() -> None:
    import torch.distributed as dist

    if getattr(dist.init_process_group, "_rlrt_cpu", False):
        return
    original = dist.init_process_group

    def init_process_group(*args, **kwargs):
        if "backend" in kwargs:
            kwargs["backend"] = _dedupe_backend(kwargs["backend"])
        elif args:
            args = (_dedupe_backend(args[0]), *args[1:])
        return original(*args, **kwargs)

    init_process_group._rlrt_cpu = True
    dist.init_process_group = init_process_group


FREEZE_AFTER = "RLRT_VERL_CPU_FREEZE_AFTER_STEP"
"""Env: the step after whose checkpoint the trainer writes ``<default_local_dir>/frozen_at_<k>`` and then waits
(sleeps) until it is killed -- how the smoke kills a run at a known point (between steps k and k + 1)."""


def _freeze_after_save(step: int) -> None:
    """Wrap ``RayPPOTrainer._save_checkpoint``: after step ``step``'s save, mark and wait to be killed."""
    import time

    from verl.trainer.ppo.ray_trainer import RayPPOTrainer

    original = RayPPOTrainer._save_checkpoint
    if getattr(original, "_rlrt_cpu", False):
        return

    def _save_checkpoint(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if int(self.global_steps) == step:
            marker = os.path.join(str(self.config.trainer.default_local_dir), f"frozen_at_{step}")
            with open(marker, "w") as f:
                f.write(str(os.getpid()))
            while True:
                time.sleep(5)
        return out

    _save_checkpoint._rlrt_cpu = True
    RayPPOTrainer._save_checkpoint = _save_checkpoint


def register() -> None:
    """Platform, process-group patch and the ``hf`` rollout (idempotent); the freeze hook when asked."""
    _platform_class()
    _patch_init_process_group()
    if os.environ.get(FREEZE_AFTER):
        _freeze_after_save(int(os.environ[FREEZE_AFTER]))
    from rlrt.backends.verl.cpu.rollout import register_rollout

    register_rollout()


register()
