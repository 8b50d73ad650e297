"""The lean sampler against ``transformers``' ``generate`` and a full forward pass: same tokens, same log-probs.

The lean loop (``rlrt.backends.local.sampler``) re-implements Qwen3's decoder over a static KV cache; these tests
are what lets it stand in for ``generate``: for the same seed it must draw the very same tokens (sampling, top-k /
top-p, greedy), with left-padded prompts of different lengths and rows that finish at different steps (which
leave the lean loop's batch), and its log-probs must be a full forward pass's.
"""

from __future__ import annotations

import random

import pytest
import torch

from rlrt.backends.local import sampler
from rlrt.backends.local.rollout import _generate, left_pad, sample, score_responses


@pytest.fixture(scope="module")
def tok():
    from rlrt.tasks.tokenizer import train_tokenizer

    rng = random.Random(0)
    texts = [f"What is {rng.randint(1, 99)} + {rng.randint(1, 99)}? \\boxed{{{rng.randint(1, 200)}}}" for _ in range(200)]
    return train_tokenizer(texts, 300)


def qwen3(tok, tie: bool = True, eos_boost: float = 0.0, seed: int = 0):
    """A random tiny Qwen3 (GQA: 4 heads, 2 kv heads); ``eos_boost`` raises EOS's logit so rows end early."""
    from rlrt.backends.local.model import build_model

    torch.manual_seed(seed)
    model = build_model({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                         "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": tie}, tok)
    if eos_boost:
        with torch.no_grad():
            model.lm_head.weight[tok.eos_token_id] = model.model.norm.weight * eos_boost
    return model.eval()


def prompts(tok, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    rng = random.Random(1)
    seqs = [tok(f"What is {rng.randint(1, 99)} + {rng.randint(1, 9)}?" + " 1" * rng.randint(0, 5),
                add_special_tokens=False)["input_ids"] for _ in range(n)]
    assert len({len(s) for s in seqs}) > 2, "the test needs prompts of different lengths (left padding)"
    return left_pad(seqs, tok.pad_token_id)


SETTINGS = [dict(temperature=1.0, top_k=0, top_p=1.0), dict(temperature=0.7, top_k=20, top_p=0.8),
            dict(temperature=1.3, top_k=5, top_p=1.0), dict(temperature=0.7, top_k=0, top_p=0.5),
            dict(temperature=0.0, top_k=0, top_p=1.0)]


def test_supports_plain_qwen3_only(tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    assert sampler.supports(qwen3(tok)) and sampler.supports(qwen3(tok, tie=False))
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2))
    assert not sampler.supports(llama)
    sliding = qwen3(tok)
    sliding.config.use_sliding_window = True
    assert not sampler.supports(sliding)


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("kw", SETTINGS, ids=lambda kw: "-".join(f"{k}{v}" for k, v in kw.items()))
def test_same_tokens_as_generate(tok, tie, kw):
    model = qwen3(tok, tie=tie, eos_boost=4.0)
    ids, mask = prompts(tok)
    ids, mask = ids.repeat(4, 1), mask.repeat(4, 1)  # 24 rows
    for seed in (0, 1):
        torch.manual_seed(seed)
        ref = _generate(model, ids, mask, 24, tok.eos_token_id, tok.pad_token_id, **kw)
        torch.manual_seed(seed)
        out, _, _ = sampler.decode(model, ids, mask, 24, tok.eos_token_id, tok.pad_token_id, **kw)
        assert torch.equal(ref, out), f"seed {seed}: {(ref != out).sum()} tokens differ"
        if seed == 0:
            ends = {int((row == tok.eos_token_id).nonzero()[0]) if (row == tok.eos_token_id).any() else -1
                    for row in out}
            assert len(ends) > 3 or kw["temperature"] == 0.0, \
                "rows must end at different steps so that finished rows leave the batch"
        # the torch RNG advanced exactly as generate's did
        torch.manual_seed(seed)
        _generate(model, ids, mask, 24, tok.eos_token_id, tok.pad_token_id, **kw)
        after_ref = torch.rand(3)
        torch.manual_seed(seed)
        sampler.decode(model, ids, mask, 24, tok.eos_token_id, tok.pad_token_id, **kw)
        assert torch.equal(after_ref, torch.rand(3))


def test_logp_equals_full_forward(tok):
    model = qwen3(tok, eos_boost=3.0)
    ids, mask = prompts(tok)
    for temperature in (1.0, 0.7):
        torch.manual_seed(0)
        out, logp, ent = sampler.decode(model, ids, mask, 20, tok.eos_token_id, tok.pad_token_id,
                                        temperature=temperature)
        from rlrt.backends.local.rollout import response_mask_from_ids

        rmask = response_mask_from_ids(out, tok.eos_token_id)
        full, full_ent = score_responses(model, ids, mask, out, rmask, temperature, with_entropy=True)
        assert torch.allclose(logp * rmask, full, atol=1e-5), (logp * rmask - full).abs().max()
        assert torch.allclose(ent * rmask, full_ent, atol=1e-5), (ent * rmask - full_ent).abs().max()
        assert float(full_ent.max()) > 0.5  # a real distribution, not a one-hot
        assert float((logp * (1 - rmask)).abs().sum()) == 0.0  # nothing after EOS
        assert float((ent * (1 - rmask)).abs().sum()) == 0.0


def test_draw_is_torch_multinomial():
    probs = torch.rand(16, 50).softmax(-1)
    torch.manual_seed(7)
    ref = torch.multinomial(probs, 1).squeeze(1)
    torch.manual_seed(7)
    assert torch.equal(sampler.draw(probs, torch.empty_like(probs).exponential_(1)), ref)


def test_exponential_noise_is_torch_s_exponential():
    """The decode loop's noise is ``exponential_(1)``'s, value for value, and leaves the generator where it leaves
    it (so ``generate``'s stream goes on the same); 2 M draws over seeds and shapes, 1 and 2 threads."""
    threads = torch.get_num_threads()
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            for seed, (rows, cols) in enumerate([(512, 1528), (256, 382), (3, 5), (1, 1)] * 2):
                torch.manual_seed(seed)
                ref, after_ref = torch.empty(rows, cols).exponential_(1), torch.rand(4)
                torch.manual_seed(seed)
                got, after = sampler.exponential_noise(rows, cols), torch.rand(4)
                assert got.dtype == torch.float32 and torch.equal(got, ref), (rows, cols, (got != ref).sum())
                assert torch.equal(after, after_ref)
    finally:
        torch.set_num_threads(threads)


def test_warp_matches_transformers_warpers():
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

    torch.manual_seed(0)
    logits = torch.randn(8, 100) * 3
    for t, k, p in [(0.7, 20, 0.8), (1.0, 5, 1.0), (1.5, 0, 0.3), (1.0, 0, 1.0)]:
        ref = logits.clone()
        if t != 1.0:
            ref = TemperatureLogitsWarper(t)(None, ref)
        if k:
            ref = TopKLogitsWarper(k)(None, ref)
        if p < 1.0:
            ref = TopPLogitsWarper(p)(None, ref)
        assert torch.equal(sampler.warp(logits, t, k, p), ref)


def test_sample_engines(tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    model = qwen3(tok, eos_boost=4.0)
    texts = ["What is 1 + 2?", "What is 30 + 4?"]
    a = sample(model, tok, texts, 3, 16, temperature=0.7, top_k=20, top_p=0.8, seed=5, engine="lean")
    b = sample(model, tok, texts, 3, 16, temperature=0.7, top_k=20, top_p=0.8, seed=5, engine="generate")
    c = sample(model, tok, texts, 3, 16, temperature=0.7, top_k=20, top_p=0.8, seed=5, batch_size=4)  # auto
    assert torch.equal(a.response_ids, b.response_ids) and torch.equal(a.response_ids, c.response_ids)
    assert a.texts == b.texts
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2,
                                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))
    with pytest.raises(ValueError, match="lean sampler does not support LlamaForCausalLM"):
        sample(llama, tok, texts, 2, 4, engine="lean")
    assert sample(llama, tok, texts, 2, 4).response_ids.shape[0] == 4  # auto falls back to generate
    with pytest.raises(ValueError, match="engine must be"):
        sample(model, tok, texts, 2, 4, engine="vllm")


def test_model_jobs_start_without_scikit_learn(tmp_path):
    """``lean_transformers`` keeps ``transformers`` from importing scikit-learn and ``scipy.optimize`` at start-up:
    a checkpoint loads, samples with both engines, takes a training step through ``transformers``' causal-LM loss,
    and neither was ever imported (a fresh interpreter, as a job starts)."""
    import subprocess
    import sys

    code = f"""
import sys, random
from rlrt.backends.local.model import build_model, load_checkpoint, save_checkpoint
from rlrt.backends.local.rollout import sample
from rlrt.tasks.tokenizer import train_tokenizer
tok = train_tokenizer(["What is 1 + 2? \\\\boxed{{3}}"] * 20, 280)
model = build_model({{"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}}, tok)
save_checkpoint(model, tok, {str(tmp_path / 'm')!r})
model, tok = load_checkpoint({str(tmp_path / 'm')!r})
for engine in ("lean", "generate"):
    assert sample(model, tok, ["What is 1 + 2?"], 2, 4, engine=engine).response_ids.shape[0] == 2
ids = tok(["What is 1 + 2? 3"], return_tensors="pt").input_ids
loss = model(input_ids=ids, labels=ids).loss
loss.backward()
assert loss.item() > 0
assert "sklearn" not in sys.modules, "scikit-learn was imported"
assert "scipy.optimize" not in sys.modules, "scipy.optimize was imported"
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_old_logprobs_from_the_sampler_equal_a_recompute(tok):
    """``old_logp: rollout`` (the RL loops' default) gives θ_old's log-probs and entropy as the sampler recorded
    them; they must be ``score_responses``' values over several chunks of different widths, zero past each
    response, and ``generate``'s rollouts (which carry none) are recomputed."""
    from rlrt.backends.local.rollout import old_logprobs

    model = qwen3(tok, eos_boost=1.0)
    texts = ["What is 1 + 2?", "What is 30 + 4?", "What is 7 + 8 + 9?"]
    ro = sample(model, tok, texts, 4, 16, temperature=0.9, seed=3, batch_size=5, engine="lean")  # 3 chunks
    assert ro.logp is not None and ro.logp.shape == ro.response_ids.shape == ro.entropy.shape
    assert len(set(ro.lengths.tolist())) > 2  # rows of different lengths, padding inside the chunks
    rec_logp, rec_ent = old_logprobs(model, ro, "recompute", 0.9, 4, with_entropy=True)
    got_logp, got_ent = old_logprobs(model, ro, "rollout", 0.9, 4, with_entropy=True)
    assert got_logp is ro.logp  # no second pass
    assert torch.allclose(got_logp, rec_logp, atol=1e-5), (got_logp - rec_logp).abs().max()
    assert torch.allclose(got_ent, rec_ent, atol=1e-5), (got_ent - rec_ent).abs().max()
    assert float(rec_logp.abs().sum()) > 1.0 and float(got_ent.sum()) > 1.0
    pad = ~ro.response_mask.bool()
    assert float(got_logp[pad].abs().sum()) == 0.0 and float(got_ent[pad].abs().sum()) == 0.0
    gen = sample(model, tok, texts, 2, 8, temperature=0.9, seed=3, engine="generate")
    assert gen.logp is None
    logp, ent = old_logprobs(model, gen, "rollout", 0.9, 4)
    assert ent is None and torch.equal(logp, old_logprobs(model, gen, "recompute", 0.9, 4)[0])
    with pytest.raises(ValueError, match="old_logp must be rollout or recompute"):
        old_logprobs(model, ro, "sampler", 0.9, 4)


def test_prefill_runs_each_distinct_prompt_once(tok, monkeypatch):
    """A group's n rollouts share one prompt: the prefill runs the distinct prompts only (3 here, not 12) and
    every row still gets its own prompt's cache and next-token logits (the same as prefilling all 12 rows)."""
    model = qwen3(tok)
    ids, mask = prompts(tok, 3)
    order = torch.tensor([2, 0, 1, 1, 0, 2, 2, 1, 0, 0, 1, 2])  # repeated, in no sorted order
    seen = []
    real_qkv = sampler.Decoder._qkv
    monkeypatch.setattr(sampler.Decoder, "_qkv", lambda self, layer, h, cos, sin: (
        seen.append(h.shape[0]), real_qkv(self, layer, h, cos, sin))[1])
    dec = sampler.Decoder(model, 4)
    logits = dec.prefill(ids[order], mask[order])
    assert set(seen) == {3}
    ref = sampler.Decoder(model, 4)
    ref_logits = torch.cat([ref.prefill(ids[i:i + 1], mask[i:i + 1]) for i in order.tolist()])
    assert torch.allclose(logits, ref_logits, atol=1e-5)
    for i, row in enumerate(order.tolist()):
        one = sampler.Decoder(model, 4)
        one.prefill(ids[row:row + 1], mask[row:row + 1])
        assert torch.allclose(dec.k_cache[0][i], one.k_cache[0][0], atol=1e-5)
        assert torch.allclose(dec.v_cache[-1][i], one.v_cache[-1][0], atol=1e-5)
        assert torch.equal(dec.next_pos[i], one.next_pos[0]) and torch.equal(dec.key_ok[i], one.key_ok[0])
