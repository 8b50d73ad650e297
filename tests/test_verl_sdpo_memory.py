"""SDPO / SRPO on verl at paper scale: the chunked teacher top-K and the memory it needs (issue 31 §2).

* ``rlrt.methods.distill.logprobs_at`` equals the full log-softmax's gather (float64) for any chunk size;
* ``WorkerLoss`` with the chunked teacher (chunk 1, 3, whole) gives the loss and the student's gradients of the
  local engine's micro-batch, whose teacher is the full (b, R, V) logits (float64, 1e-9), through verl's own
  no-padding layout (the reference test is ``tests/test_verl_backend.py``'s);
* no tensor of the teacher's full-vocabulary logits beyond one chunk is ever built (a torch dispatch mode records
  every op's output): the old code built (b, P' + R, V);
* the per-GPU memory estimate (``rlrt.backends.verl.memory``) and the config check that refuses an SDPO / SRPO
  setting over ``resources.rl.gpu_mem_gb``; docs/paper-scale.md's table equals the function's output.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from rlrt.methods.distill import logprobs_at, sdpo_token_loss, student_topk


def test_logprobs_at_equals_the_full_log_softmax_for_every_chunk_size():
    g = torch.Generator().manual_seed(0)
    N, T, H, V, K = 3, 5, 8, 37, 6
    hidden = torch.randn(N, T, H, generator=g, dtype=torch.float64)
    head = torch.nn.Linear(H, V, bias=True).double()
    idx = torch.randint(0, V, (N, T, K), generator=g)
    want = torch.log_softmax(head(hidden) / 0.7, -1).gather(-1, idx)
    for chunk in (1, 2, 4, 7, 15, 100):
        got = logprobs_at(hidden, head, idx, temperature=0.7, chunk=chunk)
        assert got.dtype == torch.float64 and got.shape == (N, T, K)
        assert torch.allclose(got, want, atol=1e-12, rtol=0), chunk
    with pytest.raises(ValueError, match="chunk"):
        logprobs_at(hidden, head, idx, chunk=0)


def test_logprobs_at_keeps_the_heads_dtype_and_calls_it_per_chunk():
    """A bf16 head gives bf16 chunk logits (the activation dtype), called once per chunk of positions; the result
    is float32 and close to the float64 reference."""
    g = torch.Generator().manual_seed(1)
    N, T, H, V, K = 2, 9, 16, 50, 4
    hidden = torch.randn(N, T, H, generator=g)
    head = torch.nn.Linear(H, V, bias=False)
    idx = torch.randint(0, V, (N, T, K), generator=g)
    want = torch.log_softmax(head.double()(hidden.double()), -1).gather(-1, idx)
    head = head.to(torch.bfloat16)
    calls = []
    head.register_forward_hook(lambda m, i, o: calls.append((tuple(o.shape), o.dtype)))
    got = logprobs_at(hidden.to(torch.bfloat16), head, idx, chunk=4)
    assert calls == [((4, V), torch.bfloat16)] * 4 + [((2, V), torch.bfloat16)]
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), want, atol=0.1)


def test_sdpo_token_loss_with_teacher_logprobs_equals_the_full_teacher():
    g = torch.Generator().manual_seed(2)
    N, T, H, V = 2, 4, 8, 30
    hidden = torch.randn(N, T, H, generator=g, dtype=torch.float64)
    head = torch.nn.Linear(H, V).double()
    zs = torch.randn(N, T, V, generator=g, dtype=torch.float64, requires_grad=True)
    lp = torch.log_softmax(zs.detach() / 0.5, -1)[..., 0]
    old = lp - 0.1
    for tail in (True, False):
        full = sdpo_token_loss(zs, head(hidden).detach(), lp, old, topk=5, tail=tail, temperature=0.5)
        gf, = torch.autograd.grad(full.sum(), zs)
        chunked = sdpo_token_loss(zs, None, lp, old, topk=5, tail=tail, temperature=0.5,
                                  teacher_logprobs=lambda idx: logprobs_at(hidden, head, idx, temperature=0.5,
                                                                           chunk=3))
        gc, = torch.autograd.grad(chunked.sum(), zs)
        assert torch.allclose(full, chunked, atol=1e-12) and torch.allclose(gf, gc, atol=1e-12)
    _, idx = student_topk(zs, 5, 0.5)
    assert idx.shape == (N, T, 5)


def test_student_logprobs_chunked_equals_the_full_log_softmax_with_gradients():
    from rlrt.methods.distill import student_logprobs

    g = torch.Generator().manual_seed(4)
    N, T, V, K = 2, 5, 23, 4
    z = torch.randn(N, T, V, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, V, (N, T), generator=g)
    w1 = torch.randn(N, T, generator=g, dtype=torch.float64)
    w2 = torch.randn(N, T, K, generator=g, dtype=torch.float64)
    full = torch.log_softmax(z / 0.7, -1)
    top = full.topk(K, -1)
    want = (full.gather(-1, y[..., None])[..., 0] * w1).sum() + (top.values * w2).sum()
    gw, = torch.autograd.grad(want, z)
    for chunk in (1, 3, 100):
        logp, top_s, idx = student_logprobs(z, y, K, temperature=0.7, chunk=chunk)
        assert torch.equal(idx, top.indices)
        got = (logp * w1).sum() + (top_s * w2).sum()
        gg, = torch.autograd.grad(got, z)
        assert abs(float(got - want)) < 1e-12 and torch.allclose(gg, gw, atol=1e-12), chunk


def test_student_logprobs_keeps_no_float32_full_vocabulary_tensor_through_backward():
    """bf16 logits (the activation dtype): forward and backward build float32 (rows, V) tensors of one chunk at most
    (the old path kept a float32 copy and two float32 log-softmaxes of every position)."""
    from rlrt.methods.distill import student_logprobs

    g = torch.Generator().manual_seed(5)
    N, T, V, K, chunk = 3, 8, 41, 5, 4
    z = torch.randn(N, T, V, generator=g).to(torch.bfloat16).requires_grad_(True)
    y = torch.randint(0, V, (N, T), generator=g)
    with _VocabTensors(V, [z]) as mode:
        logp, top_s, _ = student_logprobs(z, y, K, chunk=chunk)
        (logp.sum() + top_s.sum()).backward()
    f32 = [r for r, dt in mode.rows if dt == torch.float32]
    assert f32 and max(f32) <= chunk, sorted(f32)[-3:]
    assert z.grad is not None and z.grad.dtype == torch.bfloat16


# ---- WorkerLoss through verl's no-padding layout -----------------------------------------------------------------

pytest.importorskip("verl")


@pytest.fixture(scope="module")
def tok():
    """A byte-level BPE without merges (every byte one token) + ChatML specials; no network."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    t = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=t, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>"])


def _case(tok, objective, dtype=torch.float64):
    """One SDPO / SRPO micro-batch on both engines: student, teacher, the local micro-batch's inputs, loss and
    gradients, verl's no-padding TensorDict, the packed logits verl hands the processor, the config, the
    temperature. Shared with tests/test_verl_backend.py's parity test."""
    from verl import DataProto
    from verl.utils import tensordict_utils as tu
    from verl.workers.config import ActorConfig
    from verl.workers.utils.padding import left_right_2_no_padding

    from rlrt.backends.local.model import build_model
    from rlrt.backends.local.rollout import response_logits
    from rlrt.backends.verl.loss import FIELDS, micro_batch_loss
    from rlrt.backends.verl.teacher_view import build_teacher_batch, left_pad
    from rlrt.methods.objectives import sdpo_plan, srpo_plan
    from rlrt.methods.registry import get_method

    arch = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_heads": 1}
    torch.manual_seed(0)
    student, teacher = build_model(arch, tok).double(), build_model(arch, tok).double().eval()
    g = torch.Generator().manual_seed(3)
    pad, T = tok.pad_token_id, 0.7
    B, R = 4, 7
    prompts = [torch.randint(0, 200, (n,), generator=g).tolist() for n in (5, 3, 6, 4)]
    t_prompts = [torch.randint(0, 200, (n,), generator=g).tolist() for n in (9, 4, 11, 7)]
    lens = [7, 4, 6, 2]
    responses = torch.full((B, R), pad, dtype=torch.long)
    rmask = torch.zeros(B, R, dtype=torch.long)
    for i, n in enumerate(lens):
        responses[i, :n] = torch.randint(0, 200, (n,), generator=g)
        rmask[i, :n] = 1
    settings = get_method(objective).make_settings({"beta": 0.5} if objective == "srpo" else {})
    has = torch.tensor([True, False, True, True])
    rewards = torch.tensor([0.0, 1.0, 0.0, 1.0])
    t_ent = torch.rand(B, R, generator=g, dtype=torch.float64) * rmask
    plan = (sdpo_plan if objective == "sdpo" else srpo_plan)(rewards, has, rmask, t_ent, settings)
    old = (-torch.rand(B, R, generator=g, dtype=torch.float64) * 2) * rmask
    adv = torch.randn(B, R, generator=g, dtype=torch.float64) * rmask

    p_ids, p_mask = left_pad(prompts, pad)
    tp_ids, tp_mask = left_pad(t_prompts, pad)
    logits = response_logits(student, p_ids, p_mask, responses, rmask).double()
    logp = torch.log_softmax(logits / T, -1).gather(-1, responses[..., None])[..., 0]
    t_logits = response_logits(teacher, tp_ids, tp_mask, responses, rmask).double()  # the unchunked teacher
    want, _ = micro_batch_loss(objective, settings, logits=logits, logp=logp, old_logp=old, token_adv=adv,
                               response_mask=rmask, plan=plan, teacher_logits=lambda: t_logits, temperature=T,
                               clip_low=0.2, clip_high=0.28, clip_ratio_c=3.0, loss_agg="token-mean")
    want.backward()
    want_grad = [p.grad.clone() for p in student.parameters()]
    student.zero_grad()

    tv = build_teacher_batch(t_prompts, responses, rmask, rmask, pad).batch
    attn = torch.cat([p_mask, rmask], 1)
    tensors = {"prompts": p_ids, "responses": responses, "response_mask": plan.loss_mask.long(),
               "input_ids": torch.cat([p_ids, responses], 1), "attention_mask": attn,
               "position_ids": (attn.cumsum(1) - 1).clamp(min=0), "old_log_probs": old, "advantages": adv,
               FIELDS["pg_rows"]: plan.pg_rows, FIELDS["distill_rows"]: plan.distill_rows,
               FIELDS["distill_weight"]: plan.distill_weight.double(), FIELDS["loss_mask"]: plan.loss_mask,
               FIELDS["teacher_input_ids"]: tv["input_ids"], FIELDS["teacher_attention_mask"]: tv["attention_mask"],
               FIELDS["teacher_position_ids"]: tv["position_ids"]}
    td = left_right_2_no_padding(DataProto.from_dict(tensors=tensors).to_tensordict())
    tu.assign_non_tensor(td, dp_size=1, batch_num_tokens=int(plan.loss_mask.sum()), global_batch_size=B)
    cfg = ActorConfig(strategy="fsdp", clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=3.0,
                      ppo_micro_batch_size_per_gpu=1, ppo_mini_batch_size=1, rollout_n=1, loss_agg_mode="token-mean")
    full = student(input_ids=tensors["input_ids"], attention_mask=attn, position_ids=tensors["position_ids"],
                   use_cache=False).logits.double()
    packed = (full[attn.bool()] / T).unsqueeze(0)
    return dict(student=student, teacher=teacher, want=want, want_grad=want_grad, td=td, packed=packed, cfg=cfg,
                T=T, settings=settings, B=B, R=R, teacher_len=tv["input_ids"].shape[1], n_real=int(attn.sum()),
                logits=logits, logp=logp, t_logits=t_logits, old=old, adv=adv, rmask=rmask, plan=plan)


@pytest.mark.parametrize("objective", ["sdpo", "srpo"])
@pytest.mark.parametrize("chunk", [1, 3, 1024])
def test_chunked_worker_loss_equals_the_unchunked_local_micro_batch(tok, objective, chunk):
    from rlrt.backends.verl.loss import TOKEN_LOSS, WorkerLoss

    c = _case(tok, objective)
    loss_fn = WorkerLoss(c["cfg"], objective, c["settings"], c["T"], teacher=c["teacher"], chunk=chunk)
    out = loss_fn(student_logits=c["packed"], data=c["td"])
    offsets = c["td"]["input_ids"].offsets()
    model_output = {TOKEN_LOSS: torch.nested.nested_tensor_from_jagged(out[TOKEN_LOSS].squeeze(0), offsets)}
    got, _ = loss_fn(model_output=model_output, data=c["td"], dp_group=None)
    assert abs(float(got) - float(c["want"])) < 1e-9 and float(c["want"]) != 0.0
    got.backward()
    for a, b in zip(c["want_grad"], [p.grad for p in c["student"].parameters()]):
        assert torch.allclose(a, b, atol=1e-9), float((a - b).abs().max())


class _VocabTensors(TorchDispatchMode):
    """Records, for every op output whose last dimension is the vocabulary V (parameters and their views aside),
    its number of rows (numel / V) and dtype."""

    def __init__(self, V: int, params):
        super().__init__()
        self.V, self.rows = V, []
        self.param_storages = {p.untyped_storage().data_ptr() for p in params}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if (isinstance(t, torch.Tensor) and not t.is_nested and t.dim() >= 1 and t.shape[-1] == self.V
                    and t.untyped_storage().data_ptr() not in self.param_storages):
                self.rows.append((t.numel() // self.V, t.dtype))
        return out


@pytest.mark.parametrize("objective", ["sdpo", "srpo"])
def test_the_teachers_full_vocabulary_logits_never_exceed_one_chunk(tok, objective):
    """The processor call builds the student's own (b, R, V) / (nnz, V) tensors, nothing with more rows (the old
    code built the teacher's (b, P' + R, V) logits and a float32 copy of its response part); the teacher part alone
    builds nothing over one chunk of positions."""
    from rlrt.backends.verl.loss import WorkerLoss

    c = _case(tok, objective)
    V, b, R, chunk = c["packed"].shape[-1], c["B"], c["R"], 3
    assert V not in (32, 64, R, c["teacher_len"])  # the vocabulary is told apart by its size
    loss_fn = WorkerLoss(c["cfg"], objective, c["settings"], c["T"], teacher=c["teacher"], chunk=chunk)
    params = list(c["teacher"].parameters()) + list(c["student"].parameters())
    with _VocabTensors(V, params) as mode:
        loss_fn(student_logits=c["packed"], data=c["td"])
    student = max(b * R, c["packed"].shape[1])  # its padded (b, R, V) view, verl's packed (nnz, V) logits
    assert mode.rows and max(r for r, _ in mode.rows) <= student, sorted(mode.rows)[-3:]
    assert b * c["teacher_len"] > student  # so the old (b, P' + R, V) teacher logits would have failed the bound
    idx = torch.zeros(b, R, 5, dtype=torch.long)
    with _VocabTensors(V, params) as mode:
        got = loss_fn._teacher_logprobs(c["td"], R)(idx)
    assert got.shape == (b, R, 5)
    assert mode.rows and max(r for r, _ in mode.rows) <= chunk, sorted(mode.rows)[-3:]
    calls = math.ceil(b * R / chunk)
    assert len([r for r, _ in mode.rows if r > 0]) >= calls  # the head ran per chunk, not once over everything


def test_teacher_parts_refuses_a_logit_postprocessing_model(tok):
    from rlrt.backends.local.model import build_model
    from rlrt.backends.verl.loss import teacher_parts

    m = build_model({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "num_key_value_heads": 1}, tok)
    decoder, head = teacher_parts(m)
    assert head is m.lm_head and decoder is m.model
    m.config.final_logit_softcapping = 30.0
    with pytest.raises(ValueError, match="final_logit_softcapping"):
        teacher_parts(m)


# ---- the token budgets, the memory estimate and the config check ------------------------------------------------

def _paper():
    from conftest import ROOT
    from rlrt.config import load_overlay

    return load_overlay(ROOT / "config" / "paper.yaml")


def test_estimate_terms_by_hand():
    from rlrt.backends.verl.memory import QWEN3_4B, QWEN3_8B, sdpo_gpu_memory

    assert round(QWEN3_8B.params / 1e9, 2) == 8.19 and round(QWEN3_4B.params / 1e9, 2) == 4.02  # the model cards'
    e = sdpo_gpu_memory(QWEN3_8B, n_gpus=2, gpu_mem_gb=180, gpu_memory_utilization=0.6, update_tokens=24576,
                        teacher_view_tokens=43008)
    N, V = QWEN3_8B.params, 151936
    assert e.terms["optimizer"] == round(8 * N / 2 / 1e9, 2) and e.terms["teacher"] == round(2 * N / 1e9, 2)
    assert e.terms["vllm"] == 108.0 and e.terms["student_logits"] == round(24576 * V * 12 / 1e9, 2)
    assert e.rollout == round(4 * N / 2e9 + 8 * N / 2e9 + 2 * N / 1e9 + 3.0 + 108.0, 2)
    assert e.peak == max(e.update, e.log_prob, e.rollout)
    # more GPUs shard the actor; the teacher is unsharded; offloading helps the rollout phase only
    e4 = sdpo_gpu_memory(QWEN3_8B, n_gpus=4, gpu_mem_gb=180, gpu_memory_utilization=0.6, update_tokens=24576,
                         teacher_view_tokens=43008)
    assert e4.terms["teacher"] == e.terms["teacher"] and e4.terms["optimizer"] < e.terms["optimizer"]
    off = sdpo_gpu_memory(QWEN3_8B, n_gpus=2, gpu_mem_gb=180, gpu_memory_utilization=0.6, update_tokens=24576,
                          teacher_view_tokens=43008, param_offload=True, optimizer_offload=True)
    assert off.rollout < e.rollout and off.update == e.update


def test_log_prob_budget_is_raised_to_one_teacher_view_for_teacher_methods():
    from rlrt.backends.verl.overrides import hydra_overrides
    from rlrt.plan import run_config

    cfg = _paper()
    for run, want in (("sdpo", 43008), ("rlrt", 43008), ("grpo", 24576)):
        j = {"rl": cfg["rl"], "method": run, "run": run, "method_cfg": run_config(cfg, "Qwen3-8B", run),
             "backbone": {"name": "Qwen3-8B", "kind": "thinking"}, "max_response_length": 20480, "seed": 0,
             "tracking": None, "verl": cfg["verl"]}
        o = hydra_overrides(j, model_path="/m", train_file="/t.parquet", val_file="/t.parquet", ckpt_dir="/c",
                            n_gpus=2, experiment_name="x")
        assert "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=24576" in o
        assert f"actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu={want}" in o, run
        assert f"actor_rollout_ref.ref.log_prob_max_token_len_per_gpu={want}" in o, run
    j["verl"] = {**cfg["verl"], "ppo_max_token_len_per_gpu": 20000}
    with pytest.raises(ValueError, match="ppo_max_token_len_per_gpu: 20000 is below one student sequence"):
        hydra_overrides(j, model_path="/m", train_file="/t.parquet", val_file="/t.parquet", ckpt_dir="/c",
                        n_gpus=2, experiment_name="x")


def test_config_accepts_the_paper_setting_and_refuses_one_over_the_gpu():
    import copy

    from rlrt.backends.verl.memory import run_memory
    from rlrt.config import ConfigError, validate
    from rlrt.plan import rl_settings

    cfg = _paper()
    validate(copy.deepcopy(cfg))  # accepted: SDPO / SRPO on Qwen3-4B-Instruct-2507 and Qwen3-8B fit 180 GB
    assert cfg["resources"]["rl"]["gpu_mem_gb"] == 180
    b4 = "Qwen3-4B-Instruct-2507"  # the first SDPO backbone checked
    peak = run_memory(cfg["verl"], rl_settings(cfg, b4), cfg["backbones"][b4], 2, 80).peak

    bad = copy.deepcopy(cfg)
    bad["resources"]["rl"]["gpu_mem_gb"] = 80  # an 80 GB H100 / A100
    with pytest.raises(ConfigError) as e:
        validate(bad)
    msg = str(e.value)
    assert "'resources.rl.gpu_mem_gb'" in msg and "gpu_mem_gb = 80" in msg and "verl.ppo_max_token_len_per_gpu" in msg
    assert f"run 'sdpo' on '{b4}' needs about {peak:.1f} GB per GPU" in msg and peak > 80

    bad = copy.deepcopy(cfg)  # the former budget, 45,056 tokens per update micro-batch: over 180 GB on Qwen3-8B
    bad["verl"]["ppo_max_token_len_per_gpu"] = 45056
    with pytest.raises(ConfigError, match=r"'resources.rl.gpu_mem_gb': run '(sdpo|srpo)[^']*' on 'Qwen3-8B'"):
        validate(bad)

    bad = copy.deepcopy(cfg)  # a backbone's own resources.rl.gpu_mem_gb is named as such
    bad["backbones"]["Qwen3-8B"]["resources"] = {"rl": {"gpu_mem_gb": 100}}
    with pytest.raises(ConfigError, match=r"'backbones.Qwen3-8B.resources.rl.gpu_mem_gb'.*gpu_mem_gb = 100"):
        validate(bad)

    bad = copy.deepcopy(cfg)  # an architecture the estimate does not know
    bad["backbones"]["Qwen3-8B"]["hub_id"] = "someone/Other-8B"
    with pytest.raises(ConfigError, match="'backbones.Qwen3-8B.hub_id'"):
        validate(bad)
    bad["resources"]["rl"]["gpu_mem_gb"] = None  # no gpu_mem_gb: no estimate asked for
    validate(bad)

    bad = copy.deepcopy(cfg)
    bad["verl"]["ppo_max_token_len_per_gpu"] = 16384
    with pytest.raises(ConfigError, match="'verl.ppo_max_token_len_per_gpu': 16384 is below one student sequence"):
        validate(bad)


def test_the_docs_memory_table_is_the_functions_output():
    from conftest import ROOT
    from rlrt.backends.verl.memory_table import sdpo_memory_table
    from rlrt.config import load

    doc = (ROOT / "docs" / "paper-scale.md").read_text()
    start = doc.index("<!-- sdpo-memory-table")
    start = doc.index("\n", start) + 1
    table = doc[start:doc.index("<!-- /sdpo-memory-table -->")].strip()
    want = sdpo_memory_table(load(ROOT / "config" / "config.yaml", ROOT / "config" / "paper.yaml"))
    assert table == want
    assert "| Qwen3-8B |" in table and "| Qwen3-4B-Instruct-2507 |" in table  # SDPO / SRPO's backbones
