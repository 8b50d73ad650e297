"""Benchmark: the compute levers of the local engine (issue 34), each measured side by side in one process.

Every comparison alternates its variants repeat by repeat (A, B, A, B, ...) so that both see the same machine
state, and reports per variant the median time and the median of the per-repeat ratios; absolute times on a
shared machine mean little, the ratios are what decides. The shapes are the default config's (``--config``):

1. ``gemm``: fp32 against bf16 matrix products at the base backbones' shapes (tokens of a pre-training batch x
   the q/k/v, o, gate/up, down and LM-head projections);
2. ``step``: one training step (forward, next-token loss, backward) of each base backbone's architecture at a
   pre-training batch, fp32 against ``torch.autocast('cpu', dtype=torch.bfloat16)`` (weights and gradients stay
   fp32), with the largest logit difference between the two, and the fp32 step's share of time in matrix products
   (torch profiler) with the step speed-ups it bounds (products 2x faster, products free);
3. ``compile``: the same step eager against ``torch.compile`` (inductor) for one fixed length: the first call's
   extra time with a cold and with a warm inductor cache, the per-step saving, and the break-even step count (a
   job shorter than that loses time);
4. ``optimizer``: ``torch.optim.AdamW`` for-loop (the CPU default) against ``foreach=True`` and ``fused=True`` on
   the backbone's parameters, alone and as a share of the step; with the largest weight difference after the
   repeats (same gradients);
5. ``rl_compile``: the PPO update of real RL steps (``rl_step``, GRPO, at ``--rl-backbone``'s RL sizes, from its
   pipeline checkpoint when there is one), eager against ``torch.compile(dynamic=True)`` of the policy, step by
   step from the same weights and batch: the update's time per step after the first, the first step's extra time
   with a cold and with a warm inductor cache, the break-even in RL steps and what a job of the backbone's RL
   steps would net. The update is most of an RL step since the sampler gives θ_old's log-probs.

The CPU's features that decide whether bf16 can pay (``avx512_bf16``, AMX) are recorded with the machine stamp:
without them torch computes bf16 products by converting to fp32, which is slower than fp32 itself.

The engine adopts none of the three (it trains in fp32, eagerly, with the for-loop AdamW): on the measured
machine bf16 made the step slower, a cold compile took about as long as a whole pre-training job saves, and the
optimizer is a few percent of a step, and compiling the RL update cost more in a job's first step than most RL
jobs save (``performance.md``'s "Compute levers" section states each rule, its measured figures and verdict). A lever that a machine's bench shows paying is adopted behind a config key, with a learning check.

    python bench/bench_levers.py [--config config/config.yaml] [--repeats 7] [--out results/bench/levers.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Callable

import torch

from rlrt.backends.local.model import build_model, set_threads
from rlrt.config import load_overlay

ROOT = Path(__file__).resolve().parents[1]
BASE_BACKBONES = ("S-base", "M-base")


def cpu_features() -> dict[str, bool]:
    """The CPU features bf16 products depend on, as torch sees them."""
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    return {k: bool(caps.get(k, False)) for k in ("avx512_f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni")}


def timed(fn: Callable[[], object], n: int) -> float:
    """Seconds per call of ``fn`` over ``n`` calls."""
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def alternate(variants: dict[str, Callable[[], object]], repeats: int, n: int, base: str) -> dict:
    """Time every variant ``repeats`` times, alternating them within each repeat (after one warm-up call each).

    Returns per variant the median seconds per call and ``speedup``: the median over repeats of base's time over
    the variant's in the same repeat (> 1: the variant is faster)."""
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(repeats):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))  # neither always runs first
        for k in order:
            times[k].append(timed(variants[k], n))
    return {k: {"median_s": statistics.median(v),
                "speedup": statistics.median(b / x for b, x in zip(times[base], v))} for k, v in times.items()}


def gemm_bench(arch: dict, tokens: int, vocab: int, repeats: int) -> dict:
    """fp32 vs bf16 ``a @ b`` at the projections' shapes (M = tokens)."""
    h, inter = int(arch["hidden_size"]), int(arch["intermediate_size"])
    heads, kv = int(arch["num_attention_heads"]), int(arch.get("num_key_value_heads", arch["num_attention_heads"]))
    hd = h // heads
    shapes = {"qkv": (h, (heads + 2 * kv) * hd), "o": (heads * hd, h), "gate_up": (h, 2 * inter),
              "down": (inter, h), "lm_head": (h, vocab)}
    out = {}
    g = torch.Generator().manual_seed(0)
    for name, (k, n) in shapes.items():
        a, b = torch.randn(tokens, k, generator=g), torch.randn(k, n, generator=g)
        a16, b16 = a.bfloat16(), b.bfloat16()
        res = alternate({"fp32": lambda: a @ b, "bf16": lambda: a16 @ b16}, repeats, 10, "fp32")
        gflops = 2 * tokens * k * n / res["fp32"]["median_s"] / 1e9
        out[name] = {"m": tokens, "k": k, "n": n, "fp32_gflops": gflops, "bf16_speedup": res["bf16"]["speedup"]}
    return out


def make_model(arch: dict, tok) -> torch.nn.Module:
    """The engine's own model (``build_model``) of ``arch``, seeded, in training mode."""
    torch.manual_seed(0)
    return build_model(arch, tok).train()


def config_tokenizer(cfg: dict):
    """The pipeline's tokenizer for ``cfg`` (its training split's corpus, ``tokenizer.vocab_size``), as the
    tokenizer stage trains it."""
    from rlrt.stages.tokenizer import corpus
    from rlrt.tasks.arithmetic import generate_splits
    from rlrt.tasks.tokenizer import train_tokenizer

    rows = generate_splits(cfg["data"]["seed"], {"train": cfg["data"]["splits"]["train"]})["train"]
    return train_tokenizer(corpus(rows, cfg["data"]["seed"]), cfg["tokenizer"]["vocab_size"])


def step_fn(model, ids: torch.Tensor, autocast: bool = False) -> Callable[[], float]:
    """One forward + next-token loss + backward on ``ids`` (gradients zeroed first)."""
    def run() -> float:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        return float(loss.detach())
    return run


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def matmul_share(fn: Callable[[], object]) -> float:
    """The share of ``fn``'s operator self-time (torch profiler, CPU) spent in matrix products: the most any
    cheaper matmul can save (Amdahl: a k-times faster product gives at most 1 / (1 - share + share / k))."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS) / total if total else 0.0


def step_bench(arch: dict, tok, ids: torch.Tensor, repeats: int) -> dict:
    model = make_model(arch, tok)
    res = alternate({"fp32": step_fn(model, ids), "bf16": step_fn(model, ids, autocast=True)}, repeats, 2, "fp32")
    share = matmul_share(step_fn(model, ids))
    with torch.no_grad():
        ref = model(input_ids=ids, use_cache=False).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(input_ids=ids, use_cache=False).logits.float()
    return {"fp32_s": res["fp32"]["median_s"], "bf16_s": res["bf16"]["median_s"],
            "bf16_speedup": res["bf16"]["speedup"], "max_logit_diff": float((ref - low).abs().max()),
            "logit_scale": float(ref.abs().max()), "matmul_share": share,
            "bound_if_matmul_2x": 1 / (1 - share / 2), "bound_if_matmul_free": 1 / (1 - share),
            "master_weights": str(next(model.parameters()).dtype).removeprefix("torch.")}


@contextlib.contextmanager
def scratch_inductor_cache():
    """An empty inductor cache (``TORCHINDUCTOR_CACHE_DIR``) for the block, removed after it with dynamo's
    in-memory caches; the caller's setting comes back."""
    import shutil

    import torch._dynamo

    cache = tempfile.mkdtemp(prefix="rlrt-inductor-")
    old = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
    try:
        yield cache
    finally:
        torch._dynamo.reset()
        if old is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = old
        shutil.rmtree(cache, ignore_errors=True)


def compile_bench(arch: dict, tok, ids: torch.Tensor, repeats: int, job_steps: int) -> dict:
    """Eager vs ``torch.compile`` of the step; compile time cold (empty inductor cache) and warm (same cache,
    dynamo reset: what the next job of the same shapes pays)."""
    import torch._dynamo

    with scratch_inductor_cache():
        model = make_model(arch, tok)
        eager = step_fn(model, ids)
        eager()
        eager_s = timed(eager, 2)
        first = {}
        for kind in ("cold", "warm"):
            torch._dynamo.reset()
            compiled = torch.compile(model)
            run = step_fn(compiled, ids)
            t0 = time.perf_counter()
            run()
            run()  # the second call can still compile (e.g. a recompile on the first call's guards)
            first[kind] = time.perf_counter() - t0 - 2 * eager_s
        res = alternate({"eager": eager, "compiled": run}, repeats, 2, "eager")
        saving = res["eager"]["median_s"] - res["compiled"]["median_s"]
        out = {"eager_s": res["eager"]["median_s"], "compiled_s": res["compiled"]["median_s"],
               "speedup": res["compiled"]["speedup"], "compile_cold_s": first["cold"],
               "compile_warm_s": first["warm"], "saving_per_step_s": saving,
               "break_even_steps_cold": first["cold"] / saving if saving > 0 else None,
               "break_even_steps_warm": first["warm"] / saving if saving > 0 else None,
               "job_steps": job_steps, "job_saving_s_warm": job_steps * saving - first["warm"]}
        with torch.no_grad():
            out["max_logit_diff"] = float((model(input_ids=ids, use_cache=False).logits
                                           - compiled(input_ids=ids, use_cache=False).logits).abs().max())
        return out


def optimizer_bench(arch: dict, tok, step_s: float, repeats: int) -> dict:
    """AdamW for-loop vs foreach vs fused on the backbone's parameters (fixed random gradients)."""
    variants, models = {}, {}
    grads = None
    for kind, kw in (("for_loop", {"foreach": False}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        m = make_model(arch, tok)
        if grads is None:
            g = torch.Generator().manual_seed(1)
            grads = [torch.randn(p.shape, generator=g) * 1e-3 for p in m.parameters()]
        for p, gr in zip(m.parameters(), grads):
            p.grad = gr.clone()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.01, **kw)
        variants[kind], models[kind] = opt.step, m
    res = alternate(variants, repeats, 10, "for_loop")
    ref = list(models["for_loop"].parameters())
    out = {"n_tensors": len(ref), "n_params": sum(p.numel() for p in ref)}
    for kind, r in res.items():
        diff = max(float((a - b).detach().abs().max()) for a, b in zip(ref, models[kind].parameters()))
        out[kind] = {"median_s": r["median_s"], "speedup": r["speedup"], "share_of_step": r["median_s"] / step_s,
                     "max_weight_diff_vs_for_loop": diff}
    return out


def rl_compile_bench(cfg: dict, name: str, checkpoint: Path, steps: int) -> dict:
    """Eager vs ``torch.compile(dynamic=True)`` of the policy in ``steps`` GRPO steps on ``name``'s RL sizes
    (variable lengths: one compiled graph must serve them all), each step run by both arms from the same weights
    with the same batch and seed (so the same rollouts); see the module docstring (5)."""
    import copy

    import torch._dynamo

    from rlrt.backends.local import rl as engine
    from rlrt.backends.local.model import load_checkpoint
    from rlrt.methods.registry import get_method
    from rlrt.plan import method_config
    from rlrt.tasks.arithmetic import generate_splits
    from rlrt.tasks.grading import Grader

    bb = cfg["backbones"][name]
    if checkpoint.exists():
        model, tok = load_checkpoint(checkpoint)
    else:
        tok = config_tokenizer(cfg)
        model = make_model(bb["arch"], tok)
    rl_cfg = engine.RLConfig.from_dict({**cfg["rl"], **bb.get("rl", {}),
                                        "max_response_length": bb["max_response_length"]})
    rows = generate_splits(cfg["data"]["seed"], {"train": cfg["data"]["splits"]["train"]})["train"]
    spec = get_method("grpo")
    settings = spec.make_settings(method_config(cfg, name, "grpo"))
    init = copy.deepcopy(model.state_dict())
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    losses: dict[str, list[float]] = {"eager": [], "compiled": []}
    with scratch_inductor_cache():
        torch._dynamo.reset()
        arms = {"eager": model, "compiled": torch.compile(model, dynamic=True)}

        def one_step(arm: str, step: int) -> dict:
            model.load_state_dict(init)
            opt = torch.optim.AdamW(model.parameters(), lr=rl_cfg.lr)
            batch = rows[step * rl_cfg.question_batch:(step + 1) * rl_cfg.question_batch]
            return engine.rl_step(arms[arm], tok, opt, spec, settings, rl_cfg, batch, step, grader.grade_batch)

        with Grader(workers=1) as grader:
            for step in range(steps):
                for arm in arms:
                    m = one_step(arm, step)
                    times[arm].append(m["time_update"])
                    losses[arm].append(m["loss"])
            eager_s = statistics.median(times["eager"][1:])
            compiled_s = statistics.median(times["compiled"][1:])
            cold = times["compiled"][0] - eager_s
            torch._dynamo.reset()  # in-memory caches gone, the inductor cache on disk kept: the next job's start
            arms["compiled"] = torch.compile(model, dynamic=True)
            warm = one_step("compiled", 0)["time_update"] - eager_s
    saving = eager_s - compiled_s
    job_steps = int(rl_cfg.steps)
    return {"backbone": name, "source": str(checkpoint) if checkpoint.exists() else "fresh model (no checkpoint)",
            "steps": steps, "question_batch": rl_cfg.question_batch, "n_rollouts": rl_cfg.n_rollouts,
            "update_eager_s": eager_s, "update_compiled_s": compiled_s,
            "speedup": eager_s / compiled_s if compiled_s > 0 else None, "compile_cold_s": cold,
            "compile_warm_s": warm, "saving_per_step_s": saving,
            "break_even_steps_warm": warm / saving if saving > 0 else None, "job_steps": job_steps,
            "job_saving_s_warm": job_steps * saving - warm,
            "max_loss_diff": max(abs(a - b) for a, b in zip(losses["eager"], losses["compiled"]))}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--length", type=int, default=72, help="tokens per pre-training row (default: a 4-term problem "
                   "with its solution in the chat template, ~72 tokens)")
    p.add_argument("--backbones", nargs="*", default=list(BASE_BACKBONES))
    p.add_argument("--skip", nargs="*", default=[], choices=["gemm", "step", "compile", "optimizer", "rl_compile"])
    p.add_argument("--rl-backbone", default="M-base", help="the backbone whose RL update rl_compile measures")
    p.add_argument("--rl-steps", type=int, default=4, help="RL steps per arm in rl_compile (the first compiles)")
    p.add_argument("--checkpoints", default=str(ROOT / "results" / "checkpoints"),
                   help="the pipeline's backbone checkpoints (rl_compile starts from <dir>/<rl-backbone>)")
    p.add_argument("--out", default=str(ROOT / "results" / "bench" / "levers.json"))
    args = p.parse_args(argv)
    set_threads(1)
    from rlrt.docs import machine

    cfg = load_overlay(args.config)
    tok = config_tokenizer(cfg)
    vocab = len(tok)
    res: dict = {"date": date.today().isoformat(), "machine": f"{machine()}, {platform.system()} {platform.release()}",
                 "cpu_features": cpu_features(), "torch": torch.__version__, "threads": 1, "repeats": args.repeats,
                 "backbones": {}}
    for name in args.backbones:
        bb = cfg["backbones"][name]
        arch, batch = bb["arch"], int(bb["batch_size"])
        ids = torch.randint(len(tok.all_special_ids), vocab, (batch, args.length),
                            generator=torch.Generator().manual_seed(0))
        rec: dict = {"batch": batch, "length": args.length, "arch": arch}
        if "gemm" not in args.skip:
            rec["gemm"] = gemm_bench(arch, batch * args.length, vocab, args.repeats)
        if "step" not in args.skip:
            rec["step"] = step_bench(arch, tok, ids, args.repeats)
        if "compile" not in args.skip:
            rec["compile"] = compile_bench(arch, tok, ids, args.repeats, int(bb.get("steps", 0)))
        if "optimizer" not in args.skip:
            step_s = rec.get("step", {}).get("fp32_s") or timed(step_fn(make_model(arch, tok), ids), 3)
            rec["optimizer"] = optimizer_bench(arch, tok, step_s, args.repeats)
        res["backbones"][name] = rec
    if "rl_compile" not in args.skip:
        res["rl_compile"] = rl_compile_bench(cfg, args.rl_backbone, Path(args.checkpoints) / args.rl_backbone,
                                             args.rl_steps)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
