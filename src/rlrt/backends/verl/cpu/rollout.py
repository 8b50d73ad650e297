"""The ``hf`` rollout: verl's server-mode rollout interface served by ``transformers`` forward passes, on CPU.

CPU scaffolding only (``rlrt.backends.verl.cpu``; registered when verl loads that package). Three pieces, mirroring
verl's vLLM rollout in hybrid mode (``verl/workers/rollout/vllm_rollout``):

* :class:`HFServer` -- a Ray actor holding its own copy of the model. ``generate(request_id, prompt_ids=,
  sampling_params=)`` samples up to the rollout's response length (temperature / top-k / top-p as verl passes
  them; stops at the model's EOS) and returns verl's ``TokenOutput`` with the sampled tokens' log-probs under the
  sampling distribution (vLLM's ``processed_logprobs``). ``load_weights`` takes a full state dict. The memory
  calls (sleep, wake_up, kv cache) are no-ops;
* :class:`HFReplica` -- the ``RolloutReplica`` verl's ``LLMServerManager`` builds (``RolloutReplicaRegistry``):
  starts one named :class:`HFServer` per replica;
* :class:`HFServerAdapter` -- the ``BaseRollout`` inside the actor worker (``get_rollout_class``): its
  ``update_weights`` receives verl's per-tensor weight generator after each update (checkpoint engine ``naive``)
  and sends the full state dict to the replica's server (no CUDA IPC, no shared memory segment).
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Generator

import torch

log = logging.getLogger("rlrt.verl.cpu.rollout")

NAME = "hf"


def server_name(replica_rank: int) -> str:
    return f"rlrt_hf_rollout_server_{int(replica_rank)}"


def _eos_ids(model) -> set[int]:
    ids = getattr(model.generation_config, "eos_token_id", None)
    if ids is None:
        ids = model.config.eos_token_id
    return set(ids if isinstance(ids, (list, tuple)) else [ids]) - {None}


def sample_next(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
                gen: torch.Generator) -> tuple[int, float]:
    """One token from ``logits`` [V] as vLLM samples it (temperature, then top-k, then top-p; temperature 0 =
    greedy); returns (token, its log-prob under the processed distribution)."""
    logits = logits.float()
    if temperature <= 0:
        lp = torch.log_softmax(logits, -1)
        tok = int(torch.argmax(logits))
        return tok, float(lp[tok])
    logits = logits / float(temperature)
    if top_k and top_k > 0 and top_k < logits.numel():
        kth = torch.topk(logits, int(top_k)).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0 < top_p < 1:
        probs = torch.softmax(logits, -1)
        sp, idx = torch.sort(probs, descending=True)
        drop = (torch.cumsum(sp, -1) - sp) > float(top_p)
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, idx, drop), float("-inf"))
    lp = torch.log_softmax(logits, -1)
    tok = int(torch.multinomial(lp.exp(), 1, generator=gen))
    return tok, float(lp[tok])


class HFServer:
    """A Ray actor serving one replica's generations from a ``transformers`` model (see the module docstring)."""

    def __init__(self, config, model_config, replica_rank: int):
        from transformers import AutoModelForCausalLM

        self.config, self.model_config, self.replica_rank = config, model_config, int(replica_rank)
        path = getattr(model_config, "local_path", None) or model_config.path
        self.model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32,
                                                          attn_implementation="eager").eval()
        self.eos = _eos_ids(self.model)
        self.gen = torch.Generator().manual_seed(int(getattr(config, "seed", 0) or 0) + 1000 * self.replica_rank)
        self.global_steps = None
        self.weight_updates = 0

    def load_weights(self, state_dict: dict[str, torch.Tensor], global_steps: Any = None) -> int:
        """The actor's weights (HF names); every model parameter must be among them (tied ones excepted)."""
        missing, unexpected = self.model.load_state_dict(state_dict, strict=False)
        tied = {k for k in missing if "lm_head" in k and getattr(self.model.config, "tie_word_embeddings", False)}
        if unexpected or set(missing) - tied:
            raise RuntimeError(f"hf rollout: weight update does not match the model (missing "
                               f"{sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]})")
        self.global_steps = global_steps
        self.weight_updates += 1
        return len(state_dict)

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any],
                       **kwargs: Any):
        from verl.workers.rollout.replica import TokenOutput

        sp = dict(sampling_params)
        prompt_len, response_len = int(self.config.prompt_length), int(self.config.response_length)
        max_tokens = sp.pop("max_tokens", sp.pop("max_new_tokens", None))
        if max_tokens is None:
            max_tokens = min(response_len, prompt_len + response_len - len(prompt_ids))
        max_tokens = max(1, int(max_tokens))
        temperature = float(sp.get("temperature", 1.0))
        top_k, top_p = int(sp.get("top_k", -1) or -1), float(sp.get("top_p", 1.0) or 1.0)
        ids = torch.tensor([list(prompt_ids)], dtype=torch.long)
        out, lps = [], []
        with torch.no_grad():
            past = None
            step_in = ids
            for _ in range(max_tokens):
                res = self.model(input_ids=step_in, past_key_values=past, use_cache=True)
                past = res.past_key_values
                tok, lp = sample_next(res.logits[0, -1], temperature, top_k, top_p, self.gen)
                out.append(tok)
                lps.append(lp)
                if tok in self.eos:
                    break
                step_in = torch.tensor([[tok]], dtype=torch.long)
        return TokenOutput(token_ids=out, log_probs=lps if sp.get("logprobs") else None, stop_reason="completed",
                           extra_fields={"global_steps": self.global_steps})

    def stats(self) -> dict:
        return {"weight_updates": self.weight_updates, "global_steps": self.global_steps}

    # verl's replica / checkpoint manager calls: nothing to free on CPU
    async def sleep(self, *a, **k):
        return None

    async def wake_up(self, *a, **k):
        return None

    async def clear_kv_cache(self, *a, **k):
        return None

    async def release_kv_cache(self, *a, **k):
        return None

    async def resume_kv_cache(self, *a, **k):
        return None

    async def abort_all_requests(self, *a, **k):
        return {"aborted_count": 0, "request_ids": []}

    async def resume_generation(self, *a, **k):
        return None

    async def wait_for_requests_to_drain(self, *a, **k):
        return None

    async def start_profile(self, *a, **k):
        return None

    async def stop_profile(self, *a, **k):
        return None


@functools.cache
def _replica_class():
    import ray
    from verl.workers.rollout.replica import RolloutMode, RolloutReplica

    class HFReplica(RolloutReplica):
        """One :class:`HFServer` per replica (hybrid mode: the weights come from the actor worker's adapter)."""

        async def launch_servers(self):
            name = server_name(self.replica_rank)
            server = ray.remote(HFServer).options(name=name, num_cpus=0, max_concurrency=self.max_concurrency)
            self.servers = [server.remote(config=self.config, model_config=self.model_config,
                                          replica_rank=self.replica_rank)]
            await self.servers[0].stats.remote()  # started
            self._server_handle = self.servers[0]
            self._server_address = name
            if self.rollout_mode not in (RolloutMode.HYBRID, RolloutMode.COLOCATED):
                log.warning("hf rollout: %s mode has no weight sync on CPU", self.rollout_mode)

    return HFReplica


@functools.cache
def _adapter_class():
    from verl.workers.rollout.base import BaseRollout

    class HFServerAdapter(BaseRollout):
        """The worker-side rollout: forwards the actor's weights to this rank's replica server."""

        def __init__(self, config, model_config, device_mesh, *args, **kwargs):
            super().__init__(config, model_config, device_mesh)
            import torch.distributed as dist

            c = self.config
            world = int(c.tensor_model_parallel_size) * int(c.data_parallel_size) * int(
                c.pipeline_model_parallel_size)
            rank = dist.get_rank() if dist.is_initialized() else 0
            self.replica_rank, self.is_leader = rank // world, rank % world == 0
            self.sleep_level = 2

        async def resume(self, tags: list[str]):
            return None

        async def release(self):
            return None

        async def update_weights(self, weights: Generator[tuple[str, torch.Tensor], None, None],
                                 wire_format: str = "named_tensors", **kwargs):
            import ray

            if wire_format != "named_tensors":
                raise NotImplementedError(f"hf rollout: wire format {wire_format!r}")
            state = {}
            for name, tensor in weights:
                if hasattr(tensor, "full_tensor"):  # a DTensor shard (FSDP2)
                    tensor = tensor.full_tensor()
                state[name] = tensor.detach().to("cpu", torch.float32).clone()
            if not self.is_leader:
                return None
            server = ray.get_actor(server_name(self.replica_rank))
            await server.load_weights.remote(state, kwargs.get("global_steps"))
            return None

    return HFServerAdapter


def __getattr__(name):  # the classes subclass verl's, built on first use
    if name == "HFReplica":
        return _replica_class()
    if name == "HFServerAdapter":
        return _adapter_class()
    raise AttributeError(name)


def register_rollout() -> None:
    """``rollout.name=hf``: the replica (trainer side) and the worker-side adapter."""
    from verl.workers.rollout import base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    base._ROLLOUT_REGISTRY[(NAME, "async")] = f"{__name__}.HFServerAdapter"
    RolloutReplicaRegistry.register(NAME, _replica_class)
