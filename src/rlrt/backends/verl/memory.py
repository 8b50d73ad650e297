"""Per-GPU memory of an SDPO / SRPO run on verl, estimated from the config alone (pure: no verl, no torch).

Why an estimate: SDPO / SRPO keep a frozen teacher beside the FSDP actor and vLLM, and their loss needs full-
vocabulary logits; a setting that cannot fit should stop at validation (``rlrt.config``), not hours into a queued
job. The accounting below is an upper-bound model of what ``rlrt.backends.verl.loss.WorkerLoss`` and verl 0.9.1's
FSDP engine hold, read from their code; it has NOT been compared with a measured peak (no GPU here). GB = 10^9 bytes.

One GPU of ``n`` (FSDP full sharding over the job's GPUs, one node), N parameters, V vocabulary, H hidden size:

* actor state, sharded: fp32 parameters 4N/n, fp32 gradients 4N/n, AdamW's two fp32 moments 8N/n; during forward /
  backward FSDP also holds two layers' bf16 parameters unsharded (the current one and the prefetched one);
* the frozen teacher, unsharded in bf16 on every GPU: 2N (``WorkerLoss`` loads the initial policy once per worker);
* update pass: verl's packed student logits over the micro-batch's tokens (at most ``ppo_max_token_len_per_gpu``,
  S) -- the logits, their temperature-scaled copy, the loss's padded (b, R, V) view and the gradients of the three,
  all in bf16: :data:`STUDENT_LOGIT_BYTES` per (token, vocabulary entry); one chunk of positions' full-vocabulary
  working set (:data:`CHUNK_LOGIT_BYTES`, ``TEACHER_CHUNK`` positions; the student's float32 log-softmax and the
  teacher's logits never exist beyond one chunk); the student's activations under gradient checkpointing (each
  layer's bf16 input, S x H x 2 per layer, plus one layer recomputed: S x (8H + 3I) x 2); the teacher's
  no-gradient forward over one teacher view (it runs row by row: at most ``max_reprompt_length +
  max_response_length`` tokens, T x (4H + 3I) x 2);
* log-prob pass (θ_old on student rows, and on teacher views): bf16 logits plus two float32 full-vocabulary
  temporaries (log-softmax, entropy) over the pass's budget L, :data:`LOGPROB_LOGIT_BYTES`; L = S for student rows,
  max(S, teacher view) for teacher views (``rlrt.backends.verl.overrides`` sets it so);
* rollout: vLLM wakes with ``gpu_memory_utilization`` x the GPU's memory (its weights and KV cache) while the
  actor's parameters and optimizer moments stay resident unless offloaded (``verl.param_offload`` /
  ``verl.optimizer_offload``; verl loads them back for the update, so offloading helps the rollout only) and the
  teacher stays resident;
* :data:`OVERHEAD_GB` for the CUDA context, NCCL buffers and allocator fragmentation, in every phase.

The peak is the largest of the three phases (update, log-prob, rollout).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

GB = 1e9
STUDENT_LOGIT_BYTES = 12
"""Update pass, per (student token, vocabulary entry): packed logits, temperature copy, padded view (bf16, 2 bytes
each) and the gradient of each (2 bytes each)."""
CHUNK_LOGIT_BYTES = 14
"""Per (chunk position, vocabulary entry): bf16 logits (2), their float32 copy (4), the float32 log-softmax (4) and
its float32 gradient during the checkpointed recompute (4)."""
LOGPROB_LOGIT_BYTES = 10
"""Log-prob pass, per (token, vocabulary entry): bf16 logits (2) and two float32 temporaries (4 + 4)."""
OVERHEAD_GB = 3.0
"""CUDA context, NCCL buffers and allocator fragmentation, per GPU (an allowance, not measured here)."""
TEACHER_CHUNK = 1024
"""Positions per chunk of the full-vocabulary working set, the student's and the teacher's
(``rlrt.backends.verl.loss.WorkerLoss``'s default): at V = 151,936 one chunk's bf16 logits are 0.31 GB."""


@dataclass(frozen=True)
class Architecture:
    """A decoder-only transformer's sizes (Qwen3 / Llama layout: GQA attention, gated MLP, RMSNorm)."""

    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool

    @property
    def layer_params(self) -> int:
        attn = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)  # q, o, k, v
        return attn + 3 * self.hidden * self.intermediate + 2 * self.hidden + 2 * self.head_dim  # MLP, norms, q/k norm

    @property
    def params(self) -> int:
        embed = self.vocab * self.hidden
        return embed * (1 if self.tied else 2) + self.layers * self.layer_params + self.hidden


# The model cards' config.json values (Qwen/Qwen3-4B*, Qwen/Qwen3-8B*): 4.02 B and 8.19 B parameters.
QWEN3_4B = Architecture(hidden=2560, layers=36, intermediate=9728, vocab=151936, heads=32, kv_heads=8, head_dim=128,
                        tied=True)
QWEN3_8B = Architecture(hidden=4096, layers=36, intermediate=12288, vocab=151936, heads=32, kv_heads=8, head_dim=128,
                        tied=False)
ARCHITECTURES = {
    "Qwen/Qwen3-4B": QWEN3_4B, "Qwen/Qwen3-4B-Base": QWEN3_4B, "Qwen/Qwen3-4B-Instruct-2507": QWEN3_4B,
    "Qwen/Qwen3-4B-Thinking-2507": QWEN3_4B, "Qwen/Qwen3-8B": QWEN3_8B, "Qwen/Qwen3-8B-Base": QWEN3_8B,
}
"""Hub id -> architecture, for the backbones the memory check knows (others are refused when the check runs)."""


@dataclass(frozen=True)
class MemoryEstimate:
    """GB per GPU: each term, each phase's total and the peak (the largest phase)."""

    terms: dict[str, float]
    update: float
    log_prob: float
    rollout: float

    @property
    def peak(self) -> float:
        return max(self.update, self.log_prob, self.rollout)


def sdpo_gpu_memory(arch: Architecture, *, n_gpus: int, gpu_mem_gb: float, gpu_memory_utilization: float,
                    update_tokens: int, teacher_view_tokens: int, chunk: int = TEACHER_CHUNK,
                    param_offload: bool = False, optimizer_offload: bool = False) -> MemoryEstimate:
    """Per-GPU memory (GB) of an SDPO / SRPO run on verl (the module docstring's accounting).

    Args:
        arch: the backbone's architecture.
        n_gpus: GPUs of the job (FSDP shards over them).
        gpu_mem_gb: one GPU's memory (GB); vLLM reserves ``gpu_memory_utilization`` of it.
        update_tokens: the update's micro-batch token budget S (``verl.ppo_max_token_len_per_gpu``).
        teacher_view_tokens: the longest teacher view, ``max_reprompt_length + max_response_length``.
        chunk: positions per full-vocabulary chunk.
        param_offload, optimizer_offload: verl's FSDP offload switches.
    """
    if n_gpus < 1:
        raise ValueError(f"n_gpus must be >= 1, got {n_gpus}")
    N, V, H, I = arch.params, arch.vocab, arch.hidden, arch.intermediate
    S, T, L = int(update_tokens), int(teacher_view_tokens), max(int(update_tokens), int(teacher_view_tokens))
    t = {
        "actor_params": 4 * N / n_gpus / GB,
        "actor_grads": 4 * N / n_gpus / GB,
        "optimizer": 8 * N / n_gpus / GB,
        "fsdp_gathered_layers": 2 * 2 * arch.layer_params / GB,
        "teacher": 2 * N / GB,
        "student_logits": S * V * STUDENT_LOGIT_BYTES / GB,
        "chunk_working_set": chunk * V * CHUNK_LOGIT_BYTES / GB,
        "student_activations": (S * H * 2 * arch.layers + S * (8 * H + 3 * I) * 2) / GB,
        "teacher_forward": T * (4 * H + 3 * I) * 2 / GB,
        "log_prob_logits": L * V * LOGPROB_LOGIT_BYTES / GB,
        "vllm": gpu_memory_utilization * gpu_mem_gb,
        "overhead": OVERHEAD_GB,
    }
    resident = t["actor_params"] + t["optimizer"] + t["teacher"] + t["overhead"]
    update = resident + sum(t[k] for k in ("actor_grads", "fsdp_gathered_layers", "student_logits",
                                           "chunk_working_set", "student_activations", "teacher_forward"))
    log_prob = resident + t["fsdp_gathered_layers"] + t["log_prob_logits"]
    rollout = ((0.0 if param_offload else t["actor_params"]) + (0.0 if optimizer_offload else t["optimizer"])
               + t["teacher"] + t["overhead"] + t["vllm"])
    return MemoryEstimate({k: round(v, 2) for k, v in t.items()}, round(update, 2), round(log_prob, 2),
                          round(rollout, 2))


def run_memory(verl: Mapping[str, Any], rl: Mapping[str, Any], backbone: Mapping[str, Any], n_gpus: int,
               gpu_mem_gb: float) -> Optional[MemoryEstimate]:
    """The estimate for one backbone's SDPO / SRPO runs from the config's ``verl`` block, the backbone's ``rl``
    settings and ``backbones.<b>`` (None when its ``hub_id`` is not in :data:`ARCHITECTURES`)."""
    arch = ARCHITECTURES.get(str(backbone.get("hub_id") or ""))
    if arch is None:
        return None
    R = int(backbone["max_response_length"])
    return sdpo_gpu_memory(arch, n_gpus=int(n_gpus), gpu_mem_gb=float(gpu_mem_gb),
                           gpu_memory_utilization=float(verl["rollout"]["gpu_memory_utilization"]),
                           update_tokens=update_token_budget(verl, rl, R),
                           teacher_view_tokens=teacher_view_tokens(verl, R),
                           param_offload=bool(verl.get("param_offload", False)),
                           optimizer_offload=bool(verl.get("optimizer_offload", False)))


def teacher_view_tokens(verl: Mapping[str, Any], max_response_length: int) -> int:
    """The longest teacher view: ``verl.max_reprompt_length`` + the backbone's ``max_response_length``."""
    return int(verl["max_reprompt_length"]) + int(max_response_length)


def update_token_budget(verl: Mapping[str, Any], rl: Mapping[str, Any], max_response_length: int) -> int:
    """The update's per-GPU micro-batch token budget: ``verl.ppo_max_token_len_per_gpu`` with dynamic batching,
    else ``rl.micro_batch`` rows of the longest student sequence (``max_prompt_length + max_response_length``)."""
    if verl.get("use_dynamic_bsz"):
        return int(verl["ppo_max_token_len_per_gpu"])
    return int(rl["micro_batch"]) * (int(verl["max_prompt_length"]) + int(max_response_length))


def log_prob_token_budget(verl: Mapping[str, Any], max_response_length: int, uses_teacher: bool) -> int:
    """The log-prob passes' per-GPU token budget (``rollout/ref.log_prob_max_token_len_per_gpu``): the update's,
    raised to one teacher view for a method that scores teacher views (verl refuses a micro-batch budget below
    the longest sequence: ``rearrange_micro_batches``'s assertion)."""
    S = int(verl["ppo_max_token_len_per_gpu"])
    return max(S, teacher_view_tokens(verl, max_response_length)) if uses_teacher else S


def token_budget_problem(verl: Mapping[str, Any], max_response_length: int) -> Optional[str]:
    """With dynamic batching, ``verl.ppo_max_token_len_per_gpu`` below one student sequence
    (``max_prompt_length + max_response_length``) fails verl's first update; the message, or None."""
    if not verl.get("use_dynamic_bsz"):
        return None
    S, P = int(verl["ppo_max_token_len_per_gpu"]), int(verl["max_prompt_length"])
    if S < P + int(max_response_length):
        return (f"{S} is below one student sequence, max_prompt_length {P} + max_response_length "
                f"{int(max_response_length)} = {P + int(max_response_length)} (verl refuses such a micro-batch)")
    return None
