"""A lean decoding loop for ``Qwen3ForCausalLM`` on CPU: static KV cache, fused projections, no per-token
processors. Same distribution as ``transformers``' ``generate`` (and the same random stream).

Why: on the embedded default's 1M-parameter models, ``generate`` spends almost all of its time in per-token
Python overhead (cache objects, mask building, logits processors, module dispatch), not in arithmetic. This
loop reads the model's own weights once (q/k/v and gate/up fused into one matmul each), pre-allocates the KV
cache for prompt + ``max_new_tokens``, prefills each distinct prompt once (a group's n samples share it), and
runs each decode step as a handful of tensor ops. It records each drawn token's log-probability and the entropy
at the sampling temperature, so the RL loops need no second pass for θ_old (``rollout.old_logprobs``).

What it must keep (tests/test_sampler.py checks each against ``generate`` and a full forward pass):

* the architecture of ``transformers``' Qwen3: pre-norm RMSNorm, q/k RMSNorm over the head dim, rotary
  embedding with the model's own ``inv_freq``, grouped-query attention, SwiGLU MLP, tied or untied LM head;
* left-padded prompts: positions are ``cumsum(mask) - 1``, padded keys are never attended to;
* ``generate``'s sampling: logits / temperature (skipped at 1.0), top-k, then top-p (keeping at least one
  token), ``torch.multinomial`` over the whole batch every step (finished rows included), pad after EOS, stop
  when every row has finished -- so for a fixed seed the draws consume the torch RNG exactly as ``generate``'s;
* greedy decoding (``temperature == 0``) picks the arg-max, as ``generate(do_sample=False)``.

Anything that is not a plain Qwen3 (another architecture, sliding-window layers, a non-default rope) makes
``supports(model)`` false and the caller falls back to ``generate``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rlrt.methods.losses import entropy_from_logits


def supports(model) -> bool:
    """True when ``model`` is a ``Qwen3ForCausalLM`` this loop reproduces exactly (full attention, default rope)."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) != "qwen3":
        return False
    if getattr(cfg, "use_sliding_window", False) or getattr(cfg, "attention_bias", False):
        return False
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") != "default":
        return False
    rotary = getattr(getattr(model, "model", None), "rotary_emb", None)
    return rotary is not None and float(getattr(rotary, "attention_scaling", 1.0)) == 1.0


class _Layer:
    """One decoder layer's weights, fused for the decode loop."""

    def __init__(self, layer) -> None:
        att, mlp = layer.self_attn, layer.mlp
        self.ln1, self.eps1 = layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon
        self.ln2, self.eps2 = layer.post_attention_layernorm.weight, layer.post_attention_layernorm.variance_epsilon
        self.qkv = torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]).t().contiguous()
        self.q_out, self.k_out = att.q_proj.weight.shape[0], att.k_proj.weight.shape[0]
        # q and k heads side by side (B, T, Hq + Hkv, D): one RMSNorm (each head with its own weight) and one rope
        self.q_heads = self.q_out // att.head_dim
        self.k_heads = self.k_out // att.head_dim
        self.qk_norm = torch.cat([att.q_norm.weight.expand(self.q_heads, -1), att.k_norm.weight.expand(self.k_heads, -1)])
        self.qk_eps = att.q_norm.variance_epsilon
        assert att.k_norm.variance_epsilon == self.qk_eps
        self.o = att.o_proj.weight.t().contiguous()
        self.gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).t().contiguous()
        self.inter = mlp.gate_proj.weight.shape[0]
        self.down = mlp.down_proj.weight.t().contiguous()


def _rms(x: Tensor, w: Tensor, eps: float) -> Tensor:
    """Qwen3RMSNorm over the last dim (bit-identical to it in float32); ``w`` broadcasts over leading dims."""
    if w.dim() == 1:
        return F.rms_norm(x, (x.shape[-1],), w, eps)
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


class Decoder:
    """Prefill + one-token steps over a static KV cache for a batch of left-padded prompts.

    ``prefill(ids (B, P), mask (B, P)) -> logits (B, V)`` of the next token; ``step(tokens (B,)) -> logits (B, V)``.
    The cache holds ``P + max_new`` positions per row; keys of padding are masked out everywhere.
    """

    def __init__(self, model, max_new: int) -> None:
        cfg = model.config
        self.embed = model.model.embed_tokens.weight
        self.norm, self.norm_eps = model.model.norm.weight, model.model.norm.variance_epsilon
        self.lm_head = model.lm_head.weight.t().contiguous()
        self.layers = [_Layer(layer) for layer in model.model.layers]
        self.inv_freq = model.model.rotary_emb.inv_freq.float()
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = self.layers[0].q_out // self.heads
        self.groups = self.heads // self.kv_heads
        self.scale = self.head_dim ** -0.5
        self.max_new = max_new

    def _rope(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        """cos, sin (B, 1, T, D) for positions (B, T)."""
        freqs = pos.float()[..., None] * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)[:, None]
        return emb.cos(), emb.sin()

    def _qkv(self, layer: _Layer, h: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, T, _ = h.shape
        qkv = h @ layer.qkv
        qk, v = qkv.split([layer.q_out + layer.k_out, layer.k_out], dim=-1)
        qk = _rms(qk.view(B, T, self.heads + self.kv_heads, self.head_dim), layer.qk_norm, layer.qk_eps)
        qk = _rotate(qk.transpose(1, 2), cos, sin)
        v = v.view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        return qk[:, : self.heads], qk[:, self.heads:], v

    def _mlp(self, layer: _Layer, x: Tensor) -> Tensor:
        gate, up = (_rms(x, layer.ln2, layer.eps2) @ layer.gate_up).split(layer.inter, dim=-1)
        return x + (F.silu(gate) * up) @ layer.down

    def _logits(self, x: Tensor) -> Tensor:
        return _rms(x, self.norm, self.norm_eps) @ self.lm_head

    @torch.no_grad()
    def prefill(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Run the prompts ``ids``/``mask`` (B, P) into the cache; the next token's logits (B, V).

        Rows that hold the same prompt (a group's n samples, an evaluation's n samples per problem) are run once:
        the distinct rows' keys, values and last logits are copied to every row that holds them."""
        B, P = ids.shape
        total = P + self.max_new
        distinct, inv = torch.unique(torch.cat([ids, mask.long()], 1), dim=0, return_inverse=True)
        u_ids, u_mask = distinct[:, :P], distinct[:, P:]
        U = u_ids.shape[0]
        spread = not torch.equal(inv, torch.arange(B))  # unique sorts: rows all distinct may still move
        self.key_ok = torch.ones((B, total), dtype=torch.bool)
        self.key_ok[:, :P] = mask.bool()
        self.t = P
        pos = (u_mask.cumsum(1) - 1).clamp(min=0)
        self.next_pos = pos[inv, -1:] + 1
        cos, sin = self._rope(pos)
        # causal over real keys; a padding query sees itself only (so no row is all -inf)
        attend = torch.ones((P, P), dtype=torch.bool).tril()[None] & u_mask.bool()[:, None, :]
        attend = (attend | torch.eye(P, dtype=torch.bool)[None])[:, None]
        # keys are cached transposed (B, kv, D, T): a decode step's q @ K is then a plain batched matmul
        self.k_cache, self.v_cache = [], []
        x = self.embed[u_ids]
        for layer in self.layers:
            q, k, v = self._qkv(layer, _rms(x, layer.ln1, layer.eps1), cos, sin)
            k_cache = self.embed.new_zeros((U, self.kv_heads, self.head_dim, total))
            v_cache = self.embed.new_zeros((U, self.kv_heads, total, self.head_dim))
            k_cache[:, :, :, :P] = k.transpose(2, 3)
            v_cache[:, :, :P] = v
            self.k_cache.append(k_cache[inv] if spread else k_cache)
            self.v_cache.append(v_cache[inv] if spread else v_cache)
            k = k.repeat_interleave(self.groups, dim=1)
            v = v.repeat_interleave(self.groups, dim=1)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=attend, scale=self.scale)
            x = x + a.transpose(1, 2).reshape(U, P, -1) @ layer.o
            x = self._mlp(layer, x)
        logits = self._logits(x[:, -1])
        return logits[inv] if spread else logits

    def keep(self, slots: Tensor) -> None:
        """Keep only the decoder slots where ``slots`` (b,) is true (finished rows leave the batch)."""
        self.k_cache = [c[slots] for c in self.k_cache]
        self.v_cache = [c[slots] for c in self.v_cache]
        self.key_ok, self.next_pos = self.key_ok[slots], self.next_pos[slots]

    @torch.no_grad()
    def step(self, tokens: Tensor) -> Tensor:
        B = tokens.shape[0]
        t = self.t
        cos, sin = self._rope(self.next_pos)
        keys = self.key_ok[:, None, None, : t + 1]
        x = self.embed[tokens][:, None]
        for i, layer in enumerate(self.layers):
            q, k, v = self._qkv(layer, _rms(x, layer.ln1, layer.eps1), cos, sin)
            self.k_cache[i][:, :, :, t: t + 1] = k.transpose(2, 3)
            self.v_cache[i][:, :, t: t + 1] = v
            # grouped-query attention with one query: fold each kv head's query heads into the query length
            # (CPU's fused attention kernel costs more than these three small batched matmuls at one query)
            qg = q.reshape(B, self.kv_heads, self.groups, self.head_dim)
            scores = (qg @ self.k_cache[i][:, :, :, : t + 1]) * self.scale
            a = scores.masked_fill(~keys, float("-inf")).softmax(-1) @ self.v_cache[i][:, :, : t + 1]
            x = x + a.reshape(B, 1, -1) @ layer.o
            x = self._mlp(layer, x)
        self.t += 1
        self.next_pos = self.next_pos + 1
        return self._logits(x[:, 0])


def warp(logits: Tensor, temperature: float, top_k: int, top_p: float) -> Tensor:
    """``generate``'s sampling warpers in its order: temperature (skipped at 1.0), top-k, top-p. (B, V) -> (B, V)."""
    if temperature not in (0.0, 1.0):
        logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cum <= (1 - top_p)
        remove[..., -1:] = False  # keep at least the most likely token
        logits = logits.masked_fill(remove.scatter(1, order, remove), float("-inf"))
    return logits


def exponential_noise(rows: int, cols: int) -> Tensor:
    """``torch.empty(rows, cols).exponential_(1)``: the same values from the same random stream, about 2x faster.

    On CPU that op is a serial loop (ATen's ``exponential_kernel``): per element a double-precision uniform ``u``
    from the generator's 64-bit stream, then ``-log1p(-u)`` rounded to float32. ``torch.rand(..., dtype=float64)``
    draws the same ``u`` in the same order, and ``log1p`` over the whole tensor is vectorised. Its double result may
    differ from the scalar one in the last bit; rounded to float32 the two agree except in the rare case of a
    double within an ulp of a float32 rounding boundary (``tests/test_sampler.py`` compares millions of draws
    bitwise, and fails if a torch release changes how ``exponential_`` draws)."""
    return torch.log1p(torch.rand((rows, cols), dtype=torch.float64).neg_()).neg_().float()


def draw(probs: Tensor, noise: Tensor) -> Tensor:
    """``torch.multinomial(probs, 1)`` given its exponential noise: argmax(p / q), q ~ Exp(1) (torch's own
    one-sample algorithm). ``noise`` (B, V) is drawn for the whole batch so that the RNG advances exactly as
    ``generate``'s multinomial does, even when only some rows (``probs`` (b, V) = those rows) are still decoding."""
    return (probs / noise).argmax(-1)


@torch.no_grad()
def decode(model, ids: Tensor, mask: Tensor, max_new_tokens: int, eos_id: int, pad_id: int, temperature: float = 1.0,
           top_k: int = 0, top_p: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """Sample up to ``max_new_tokens`` after left-padded prompts ``ids``/``mask`` (B, P).

    Returns ``tokens`` (B, R) with ``pad_id`` after each row's EOS (R = steps until every row finished, as
    ``generate`` returns), ``logp`` (B, R): log-softmax(logits / temperature) of each sampled token, and
    ``entropy`` (B, R): the entropy of that softmax (both 0 after EOS; unwarped: top-k / top-p do not enter
    them), i.e. what ``score_responses`` recomputes with a full forward pass (``with_entropy=True``).

    Rows that have finished leave the batch (their cache rows are dropped once a quarter of the batch has
    finished), so a batch whose answers are mostly short costs what its tokens cost, not B x the longest.
    """
    dec = Decoder(model, max_new_tokens)
    logits = dec.prefill(ids, mask)
    B = ids.shape[0]
    tokens = torch.full((B, max_new_tokens), pad_id, dtype=torch.long)
    logp = torch.zeros((B, max_new_tokens))
    ent = torch.zeros((B, max_new_tokens))
    rows = torch.arange(B)  # the batch row each decoder slot holds
    alive = torch.ones(B, dtype=torch.bool)  # per slot: still decoding
    width = 0
    for i in range(max_new_tokens):
        logits = logits.float()
        scaled = logits / temperature if temperature not in (0.0, 1.0) else logits
        if temperature == 0.0:
            nxt = logits.argmax(-1)
        else:
            noise = exponential_noise(B, logits.shape[-1])
            nxt = draw(warp(logits, temperature, top_k, top_p).softmax(dim=-1), noise[rows])
        lp = scaled.log_softmax(-1).gather(1, nxt[:, None]).squeeze(1)
        tokens[rows[alive], i] = nxt[alive]
        logp[rows[alive], i] = lp[alive]
        ent[rows[alive], i] = entropy_from_logits(scaled[alive])
        width = i + 1
        alive = alive & (nxt != eos_id)
        if not alive.any() or width == max_new_tokens:
            break
        if (~alive).sum() * 4 >= alive.numel():
            dec.keep(alive)
            rows, nxt, alive = rows[alive], nxt[alive], alive[alive]
        logits = dec.step(torch.where(alive, nxt, torch.full_like(nxt, pad_id)))
    return tokens[:, :width], logp[:, :width], ent[:, :width]
