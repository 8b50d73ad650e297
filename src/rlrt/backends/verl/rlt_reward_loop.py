"""The RLT reward inside verl 0.9.1's reward loop: the reward manager and the reward-loop workers' resources.

verl 0.9.1's reward path (read from the wheel): ``RewardLoopManager`` (``verl/experimental/reward_loop``) starts
``reward.num_workers`` Ray actors; each loads a manager class (here by file path:
``reward.reward_manager.source=importlib``) and calls ``await run_single(data)`` once per sample. Without a reward
model, verl computes rewards while it rolls out: each finished sample goes to a randomly chosen worker as its own
``DataProto`` with unpadded ``prompts`` (1, P) and ``responses`` (1, R) (``experimental/agent_loop/agent_loop.py``
``_compute_score``), so concurrent samples have different widths. The scalar ``reward_score`` of each is put on
the last valid response token by ``assemble_rm_scores``. Since a model forward per sample is wasteful,
:class:`RLTRewardManager` gathers a worker's concurrent ``run_single`` calls into micro-batches of *texts*
(each sample decoded from its own tensors; the scorer's builders pad them), never concatenating verl tensors.

NEVER RUN inside verl's Ray reward workers (no GPU here); tested on CPU through verl's own agent-loop reward call.
"""

from __future__ import annotations

import asyncio
from typing import Any

from rlrt.backends.verl.rlt_scorer import RLTRewardSettings, RLTScorer

REWARD_MANAGER = "rlt"  # verl ``reward.reward_manager.name`` in its registry

try:  # verl is a test / GPU extra: without it the scorer and the builders still work, the manager does not
    from verl.experimental.reward_loop.reward_manager import register as _register
    from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase as _ManagerBase
except ImportError:
    _register, _ManagerBase = None, object


class RLTRewardManager(_ManagerBase):
    """verl reward manager for the RLT teacher: settings under ``reward.reward_kwargs`` (``teacher_path``,
    ``student_path``, the :class:`RLTRewardSettings` keys and ``batch_wait_s``). One :class:`RLTScorer` per
    worker process (class-level, loaded on first use).

    ``run_single`` calls of one worker wait until ``micro_batch`` have arrived or ``batch_wait_s`` has passed,
    then are scored together; each sample keeps its own lengths (module docstring).
    """

    scorer: RLTScorer | None = None

    def __init__(self, config, tokenizer, compute_score=None, reward_router_address=None,
                 reward_model_tokenizer=None, scorer: RLTScorer | None = None):
        super().__init__(config, tokenizer, compute_score)
        kw = dict(config.reward.get("reward_kwargs", {}) or {})
        self.batch_wait_s = float(kw.get("batch_wait_s", 0.05))
        if scorer is not None:
            type(self).scorer = scorer
        elif type(self).scorer is None:
            for k in ("teacher_path", "student_path"):
                if not kw.get(k):
                    raise KeyError(f"RLT reward manager: reward.reward_kwargs.{k} is not set")
            type(self).scorer = RLTScorer.from_paths(kw["teacher_path"], kw["student_path"],
                                                     RLTRewardSettings.from_dict(kw))
        self._pending: list[tuple[Any, asyncio.Future]] = []
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None

    async def run_single(self, data) -> dict:
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((data, fut))
        if len(self._pending) >= self.scorer.settings.micro_batch:
            await self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(
                self.batch_wait_s, lambda: asyncio.ensure_future(self._flush()))
        return await fut

    async def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            async with self._lock:
                results = await asyncio.get_running_loop().run_in_executor(
                    None, self.scorer.score_samples, [d for d, _ in batch])
            for (_, fut), res in zip(batch, results, strict=True):
                fut.set_result(res)
        except Exception as exc:  # every waiting sample fails loudly, none hangs
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)


if _register is not None:
    from verl.experimental.reward_loop.reward_manager.registry import REWARD_MANAGER as _REGISTERED

    if REWARD_MANAGER not in _REGISTERED:  # verl's workers load this file by path (a second module object)
        _register(REWARD_MANAGER)(RLTRewardManager)


def reward_loop_manager_class(num_cpus: float):
    """verl's ``RewardLoopManager`` whose reward-loop workers each hold one GPU and ``num_cpus`` CPUs.

    verl 0.9.1 starts them as plain Ray actors (no ``num_gpus``, one CPU): Ray then hides every GPU from them
    (the RLT reward's passes would run on CPU) and sets ``OMP_NUM_THREADS=1``. With GPUs left outside the
    trainer's pool (the job asks for ``trainer.n_gpus_per_node`` + ``reward.num_workers``) each worker gets its
    own GPU, :class:`RLTScorer` loads the two models there (bf16), and the host-side work (tokenising, decoding)
    gets ``num_cpus`` threads. verl's agent loop sends each sample to a random worker, so the workers share the
    scoring."""
    import ray
    from verl.experimental.reward_loop import RewardLoopManager

    class RLTRewardLoopManager(RewardLoopManager):
        def _init_reward_loop_workers(self):
            self.reward_loop_workers = [
                self.reward_loop_workers_class.options(name=f"reward_loop_worker_{i}", num_gpus=1.0,
                                                       num_cpus=float(num_cpus))
                .remote(self.config, self.reward_router_address)
                for i in range(int(self.config.reward.num_workers))]
            ray.get([w.__ray_ready__.remote() for w in self.reward_loop_workers])  # fail now if no GPU is free

    return RLTRewardLoopManager
