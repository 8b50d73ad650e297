"""Batched sampling (``rlrt.backends.local.sampler``'s lean loop, or ``generate``) and log-prob passes over
(prompt ⊕ response) sequences.

Layout used everywhere in the local engine (the same as verl's DataProto batches):

* ``prompt_ids``  (B, P) left-padded with ``pad_id``, ``prompt_mask`` (B, P) 1 on real tokens;
* ``response_ids`` (B, R) right-padded, ``response_mask`` (B, R) 1 up to and including the first EOS.

The teacher view reuses the student's ``response_ids`` *exactly* and only swaps the prompt: see
``rlrt.teacher`` for which context goes where.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from rlrt.methods.losses import entropy_from_logits, token_logprobs


@dataclass
class Rollouts:
    """A batch of sampled responses; rows are grouped: the ``n`` samples of prompt ``i`` are rows ``i*n..i*n+n-1``."""

    prompt_ids: torch.Tensor  # (B, P)
    prompt_mask: torch.Tensor  # (B, P)
    response_ids: torch.Tensor  # (B, R)
    response_mask: torch.Tensor  # (B, R)
    texts: list[str]  # decoded responses (special tokens removed), len B
    # the sampler's log P(y_t) and entropy at the sampling temperature (B, R), 0 past response_mask: what
    # ``score_responses`` recomputes for θ_old; None where the sampler did not give them (``generate``)
    logp: Optional[torch.Tensor] = None
    entropy: Optional[torch.Tensor] = None

    @property
    def lengths(self) -> torch.Tensor:  # (B,)
        return self.response_mask.sum(-1)


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists to (B, L) ids and mask."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids, mask


def response_mask_from_ids(response_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(B, R) mask: 1 up to and including the first ``eos_id``; a response without EOS is kept whole (truncated)."""
    is_eos = (response_ids == eos_id).long()
    # number of EOS strictly before position t; a position is valid while none came before it
    before = torch.cumsum(is_eos, dim=-1) - is_eos
    return (before == 0).long()


def _generate(model, ids, mask, max_new_tokens, eos_id, pad_id, temperature, top_k, top_p) -> torch.Tensor:
    """The new tokens (b, r) of ``transformers``' ``generate`` for left-padded ``ids``/``mask``: the reference the
    lean sampler is tested against, and the fallback for a model it does not support."""
    from transformers import GenerationConfig

    greedy = temperature == 0.0
    gen_cfg = GenerationConfig(
        do_sample=not greedy, max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=eos_id, use_cache=True,
        **({} if greedy else {"temperature": temperature, "top_p": top_p, "top_k": top_k}),
    )
    return model.generate(input_ids=ids, attention_mask=mask, generation_config=gen_cfg)[:, ids.shape[1]:]


@torch.no_grad()
def sample(
    model,
    tokenizer,
    prompts: list[str],
    n: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
    engine: str = "auto",
) -> Rollouts:
    """Sample ``n`` responses per prompt, ``batch_size`` sequences at a time; ``temperature == 0`` is greedy.

    Prompts are already chat-templated strings. Returns grouped rows: B = len(prompts) * n.
    Deterministic for a fixed ``seed`` and torch thread count.

    engine: ``"lean"`` = ``rlrt.backends.local.sampler`` (static KV cache, finished rows leave the batch; the
    same draws as ``generate`` for the same seed), ``"generate"`` = ``transformers``' ``generate``, ``"auto"`` =
    lean where it supports the model (a plain Qwen3), else ``generate``.
    """
    from rlrt.backends.local import sampler

    if engine not in ("auto", "lean", "generate"):
        raise ValueError(f"engine must be auto, lean or generate, not {engine!r}")
    lean = engine == "lean" or (engine == "auto" and sampler.supports(model))
    if lean and not sampler.supports(model):
        raise ValueError(f"the lean sampler does not support {type(model).__name__}; use engine='generate'")
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    enc = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    rows = [ids for ids in enc for _ in range(n)]
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    chunks = range(0, len(rows), batch_size)
    if progress:
        from rlrt.progress import progress as bar

        chunks = bar(chunks, desc="sampling", unit="batch", leave=False)
    resp_chunks, logp_chunks, ent_chunks = [], [], []
    for start in chunks:
        ids, mask = left_pad(rows[start:start + batch_size], pad_id)
        if lean:
            out, lp, ent = sampler.decode(model, ids, mask, max_new_tokens, eos_id, pad_id, temperature, top_k,
                                          top_p)
            logp_chunks.append(lp)
            ent_chunks.append(ent)
        else:
            out = _generate(model, ids, mask, max_new_tokens, eos_id, pad_id, temperature, top_k, top_p)
        resp_chunks.append(out)
    model.train(was_training)
    width = max(max(c.shape[1] for c in resp_chunks), 1)
    response_ids = _stack_right_padded(resp_chunks, width, pad_id, torch.long)
    response_mask = response_mask_from_ids(response_ids, eos_id)
    response_ids = torch.where(response_mask.bool(), response_ids, torch.full_like(response_ids, pad_id))
    logp = ent = None
    if lean:  # the sampler's values past each row's EOS are 0 already; the mask makes that explicit
        logp = _stack_right_padded(logp_chunks, width, 0.0, torch.float32) * response_mask
        ent = _stack_right_padded(ent_chunks, width, 0.0, torch.float32) * response_mask
    prompt_ids, prompt_mask = left_pad(rows, pad_id)
    texts = tokenizer.batch_decode(response_ids, skip_special_tokens=True)
    return Rollouts(prompt_ids, prompt_mask, response_ids, response_mask, texts, logp, ent)


def _stack_right_padded(chunks: list[torch.Tensor], width: int, fill, dtype) -> torch.Tensor:
    """Row-wise concatenation of (b_i, r_i) chunks into (sum b_i, width), right-padded with ``fill``."""
    out = torch.full((sum(c.shape[0] for c in chunks), width), fill, dtype=dtype)
    at = 0
    for c in chunks:
        out[at:at + c.shape[0], : c.shape[1]] = c
        at += c.shape[0]
    return out


def used_columns(prompt_mask: torch.Tensor, response_mask: torch.Tensor) -> tuple[int, int]:
    """(p_keep, r_keep): the prompt columns (from the right) and response columns (from the left) that some row
    of the batch uses; the rest is padding every row has. r_keep >= 1 so an all-empty batch keeps a column."""
    return max(int(prompt_mask.sum(1).max()), 1), max(int(response_mask.sum(1).max()), 1)


def response_logits(model, prompt_ids, prompt_mask, response_ids, response_mask) -> torch.Tensor:
    """Logits (B, R, V) that predict each response token given prompt ⊕ response prefix.

    Position ids are recomputed from the attention mask so left padding and a swapped (teacher) prompt of a
    different length give the same positions a single unpadded sequence would get. Padding columns that every
    row of the batch has are not computed (the prompts' common left padding, the responses' common right
    padding: their logits are 0), nor are the prompt positions' logits (``logits_to_keep``); the real tokens see
    the same inputs and positions either way.
    """
    R = response_ids.shape[1]
    p_keep, r_keep = used_columns(prompt_mask, response_mask)
    input_ids = torch.cat([prompt_ids[:, -p_keep:], response_ids[:, :r_keep]], dim=1)
    attn = torch.cat([prompt_mask[:, -p_keep:], response_mask[:, :r_keep]], dim=1)
    pos = (torch.cumsum(attn, dim=1) - 1).clamp(min=0)
    # the logits of the last prompt position and of every response position but the last predict the response
    logits = model(input_ids=input_ids, attention_mask=attn, position_ids=pos, use_cache=False,
                   logits_to_keep=r_keep + 1).logits[:, :r_keep].float()
    if r_keep < R:
        logits = torch.nn.functional.pad(logits, (0, 0, 0, R - r_keep))
    return logits


def shared_prefix_logits(model, prompt_ids, prompt_mask, response_ids, response_mask) -> torch.Tensor:
    """``response_logits`` with each distinct prompt of the batch run once: (B, R, V).

    The passes over rollouts see the same prompt many times (a group's n rollouts share the student prompt;
    RLRT's teacher rows of a group share one or two sibling contexts, which are most of a teacher row's tokens).
    So the distinct prompts are prefilled once (left-padded, positions from the mask as in ``response_logits``),
    their KV cache is repeated to the rows, and the responses are run on top of it: the same positions, mask and
    attention as one pass over prompt ⊕ response, in fewer FLOPs. The logit of the first response token is the
    prompt's last position's. Under autograd the rows' gradients flow back through the repeated cache into the
    one prompt pass and add up there, as they would over the rows' own copies (the PPO update uses it too).
    """
    B, R = response_ids.shape
    p_keep, r_keep = used_columns(prompt_mask, response_mask)
    p_ids, p_mask = prompt_ids[:, -p_keep:], prompt_mask[:, -p_keep:]
    r_ids, r_mask = response_ids[:, :r_keep], response_mask[:, :r_keep]
    index: dict[tuple, int] = {}  # distinct prompt (its real tokens) -> its index among the distinct prompts
    rep, inv = [], []  # a row holding each distinct prompt; each row's distinct prompt
    for i in range(B):
        key = tuple(p_ids[i][p_mask[i].bool()].tolist())
        if key not in index:
            index[key] = len(rep)
            rep.append(i)
        inv.append(index[key])
    inv = torch.tensor(inv)
    u_ids, u_mask = p_ids[rep], p_mask[rep]
    u_pos = (torch.cumsum(u_mask, dim=1) - 1).clamp(min=0)
    pre = model(input_ids=u_ids, attention_mask=u_mask, position_ids=u_pos, use_cache=True, logits_to_keep=1)
    cache = pre.past_key_values
    cache.reorder_cache(inv)  # (U, ...) -> (B, ...): each row gets its prompt's keys and values
    attn = torch.cat([u_mask[inv], r_mask], dim=1)
    pos = (torch.cumsum(attn, dim=1) - 1).clamp(min=0)[:, p_keep:]
    logits = pre.logits[inv, -1:].float()  # (B, 1, V): predicts the first response token
    if r_keep > 1:
        out = model(input_ids=r_ids[:, :-1], attention_mask=attn[:, :-1], position_ids=pos[:, :-1],
                    past_key_values=cache, use_cache=True)
        logits = torch.cat([logits, out.logits.float()], dim=1)
    if r_keep < R:
        logits = torch.nn.functional.pad(logits, (0, 0, 0, R - r_keep))
    return logits


@torch.no_grad()
def score_responses(
    model, prompt_ids, prompt_mask, response_ids, response_mask, temperature: float = 1.0,
    micro_batch: int = 64, with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """No-grad log P(y_t | prompt, y_<t) for every response token: (B, R) and optionally entropy (B, R).

    Used for θ_old (student prompt) and for the teacher view (privileged prompt, same response ids).
    Logits are divided by the rollout temperature, as verl does. Rows are scored in micro-batches, sorted by
    prompt length (longest first; stable, so a group's rows, which share their prompt, stay together): each
    micro-batch pads to its own longest row, and its distinct prompts run once (``shared_prefix_logits``).
    """
    was_training = model.training
    model.eval()
    B, R = response_ids.shape
    logp = torch.zeros((B, R))
    ent = torch.zeros((B, R)) if with_entropy else None
    order = torch.argsort(prompt_mask.sum(1), descending=True, stable=True)
    for s in range(0, B, micro_batch):
        rows = order[s:s + micro_batch]
        r_keep = used_columns(prompt_mask[rows], response_mask[rows])[1]
        logits = shared_prefix_logits(model, prompt_ids[rows], prompt_mask[rows], response_ids[rows, :r_keep],
                                      response_mask[rows, :r_keep])
        logp[rows, :r_keep] = token_logprobs(logits, response_ids[rows, :r_keep], temperature)
        if with_entropy:
            ent[rows, :r_keep] = entropy_from_logits(logits / temperature)
    model.train(was_training)
    logp = logp * response_mask
    ent = ent * response_mask if with_entropy else None
    return logp, ent


def old_logprobs(model, ro: Rollouts, source: str, temperature: float, micro_batch: int,
                 with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """θ_old's log P(y_t) (B, R) (and entropy (B, R) if ``with_entropy``) of the rollouts ``ro``.

    source: ``"rollout"`` = the sampler's own values (``ro.logp`` / ``ro.entropy``, recorded at the sampling
    temperature as it drew each token: the same model in the same precision, so ``score_responses``' numbers up
    to rounding, without a second pass); ``"recompute"`` = ``score_responses``. Rollouts without the sampler's
    values (``generate``) are recomputed either way.
    """
    if source not in ("rollout", "recompute"):
        raise ValueError(f"old_logp must be rollout or recompute, not {source!r}")
    if source == "rollout" and ro.logp is not None and (ro.entropy is not None or not with_entropy):
        return ro.logp, (ro.entropy if with_entropy else None)
    return score_responses(model, ro.prompt_ids, ro.prompt_mask, ro.response_ids, ro.response_mask, temperature,
                           micro_batch, with_entropy=with_entropy)
