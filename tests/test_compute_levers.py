"""Issue 34's compute levers (``bench/bench_levers.py``): the side-by-side timing and its ratios, what the bf16
and optimizer variants change in the numbers (logits close to fp32, master weights fp32, the same numbers twice),
and ``performance.md``'s section with its pays / does-not-pay verdicts. Tiny models: a few seconds in all."""

from __future__ import annotations

import time

import pytest
import torch

from rlrt import docs

from test_resume import tok  # noqa: F401 (fixture: a small trained tokenizer)

from conftest import bench_script
ARCH = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2}


@pytest.fixture(scope="module")
def levers():
    return bench_script("bench_levers")


@pytest.fixture()
def ids(tok):  # noqa: F811
    return torch.randint(0, len(tok), (4, 12), generator=torch.Generator().manual_seed(0))


def test_the_bench_times_the_engines_own_model(levers, tok):  # noqa: F811
    from rlrt.backends.local.model import build_model

    model = levers.make_model(ARCH, tok)
    torch.manual_seed(0)
    ref = build_model(ARCH, tok)
    assert model.training and model.config.vocab_size == len(tok)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), ref.parameters()))


def test_alternate_reports_median_ratios_of_the_same_repeat(levers):
    """A variant twice as slow as the base gets a speed-up near 0.5, the base itself exactly 1."""
    res = levers.alternate({"base": lambda: time.sleep(0.002), "slow": lambda: time.sleep(0.004)}, 3, 2, "base")
    assert res["base"]["speedup"] == 1.0
    assert 0.3 < res["slow"]["speedup"] < 0.8
    assert res["slow"]["median_s"] > res["base"]["median_s"]


def test_bf16_step_keeps_fp32_master_weights_and_close_logits(levers, tok, ids):  # noqa: F811
    rec = levers.step_bench(ARCH, tok, ids, repeats=1)
    assert rec["master_weights"] == "float32"
    assert 0 < rec["max_logit_diff"] < 0.05 * max(rec["logit_scale"], 1.0)  # bf16 rounds, it does not break
    assert rec["fp32_s"] > 0 and rec["bf16_s"] > 0 and rec["bf16_speedup"] > 0
    assert 0 < rec["matmul_share"] < 1  # a training step is more than its matrix products
    assert 1 < rec["bound_if_matmul_2x"] < rec["bound_if_matmul_free"] == pytest.approx(1 / (1 - rec["matmul_share"]))


def test_bf16_autocast_step_gives_the_same_numbers_twice(levers, tok, ids):  # noqa: F811
    """Same weights, same batch => bit-identical loss and gradients under bf16 autocast on CPU (what adopting it
    would need: the same config gives the same numbers); the gradients themselves stay fp32."""
    model = levers.make_model(ARCH, tok)
    runs = []
    for _ in range(2):
        loss = levers.step_fn(model, ids, autocast=True)()
        runs.append((loss, [p.grad.clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    assert all(g.dtype == torch.float32 for g in runs[0][1])


def test_optimizer_variants_step_the_same_weights(levers, tok):  # noqa: F811
    rec = levers.optimizer_bench(ARCH, tok, step_s=1.0, repeats=1)
    assert rec["for_loop"]["speedup"] == 1.0 and rec["for_loop"]["max_weight_diff_vs_for_loop"] == 0.0
    for kind in ("foreach", "fused"):
        assert rec[kind]["max_weight_diff_vs_for_loop"] < 1e-6  # same update up to float rounding
    assert rec["n_tensors"] > 0 and rec["n_params"] > 0


def test_gemm_shapes_are_the_architectures_projections(levers):
    rec = levers.gemm_bench(ARCH, tokens=8, vocab=96, repeats=1)
    assert {k: (r["k"], r["n"]) for k, r in rec.items()} == {
        "qkv": (32, 64), "o": (32, 32), "gate_up": (32, 128), "down": (64, 32), "lm_head": (32, 96)}
    assert all(r["m"] == 8 and r["bf16_speedup"] > 0 for r in rec.values())


def _levers_json(bf16_step: float, cold_s: float, fused: float) -> dict:
    bb = {"batch": 32, "length": 72,
          "gemm": {"qkv": {"bf16_speedup": 0.19}, "down": {"bf16_speedup": 0.23}},
          "step": {"bf16_speedup": bf16_step, "max_logit_diff": 0.0108, "logit_scale": 1.65, "matmul_share": 0.44,
                   "bound_if_matmul_2x": 1 / 0.78, "bound_if_matmul_free": 1 / 0.56},
          "compile": {"speedup": 1.4, "compile_cold_s": cold_s, "compile_warm_s": 1.6,
                      "break_even_steps_cold": cold_s / 0.08, "break_even_steps_warm": 20.0, "job_steps": 1000},
          "optimizer": {"for_loop": {"speedup": 1.0, "share_of_step": 0.015}, "foreach": {"speedup": 1.05},
                        "fused": {"speedup": fused}}}
    return {"cpu_features": {"avx512_bf16": False, "amx_bf16": False}, "threads": 1, "repeats": 7,
            "torch": "2.13.0+cpu", "backbones": {"S-base": bb}}


def test_levers_section_renders_the_figures_and_verdicts():
    text = "\n".join(docs.levers_section(_levers_json(0.30, 122.0, 3.5), "2027-01-15, 2 cores, CPU, commit `x`"))
    assert "CPU features: avx512_bf16 no, amx_bf16 no." in text
    assert "| bf16 matrix products, slowest to fastest projection | 0.19x to 0.23x |" in text
    assert "| bf16 autocast training step | 0.30x |" in text
    assert "| fp32 step's time in matrix products; step bound if they ran 2x faster / free | 44 %; 1.28x / 1.79x |" \
        in text
    assert "| bf16 pays (step ≥ 1.30x) | **no** |" in text
    assert "| compile time, cold / warm inductor cache | 122.0 s / 1.6 s |" in text
    assert "| break-even steps, cold / warm cache (the backbone's job) | 1,525 / 20 (1,000 steps) |" in text
    assert "| compile pays in one job from a cold cache | **no** |" in text
    assert "| AdamW `foreach` / `fused` over the for-loop | 1.05x / 3.50x |" in text
    assert "| fused AdamW pays (saves ≥ 5 % of the step) | **no** (1.1 %) |" in text
    paying = "\n".join(docs.levers_section(_levers_json(1.6, 40.0, 3.5), "s"))
    assert "| bf16 pays (step ≥ 1.30x) | yes |" in paying
    assert "| compile pays in one job from a cold cache | yes |" in paying


def test_performance_doc_carries_the_levers_section_when_the_bench_has_it():
    from test_docs import PIPELINE

    assert "## Compute levers" not in docs.performance_doc(PIPELINE, "p.json")
    doc = docs.performance_doc({**PIPELINE, "levers": _levers_json(0.30, 122.0, 3.5)}, "p.json")
    assert "## Compute levers" in doc and "2027-01-15, 2 cores, Test CPU 9000, Linux 6.1, commit `abc1234`" in doc


def test_bench_pipeline_records_the_levers_in_its_summary():
    from test_docs import PIPELINE

    pipeline = bench_script("bench_pipeline")
    base = {"date": "2026-11-24", "machine": "2 cores, X", "commit": "335e8ef", "wall_s": 3642, "jobs": 125,
            "job_seconds_total": 7239, "job_seconds_by_stage": {}}
    text = pipeline.summary_md({**PIPELINE, "levers": _levers_json(0.30, 122.0, 3.5)}, base)
    assert "## Compute levers" in text and "| bf16 autocast training step | 0.30x |" in text
    assert "## Compute levers" not in pipeline.summary_md(PIPELINE, base)


def test_rl_compile_bench_runs_both_arms_on_the_same_rollouts(levers, tmp_path, monkeypatch):
    """The RL-update arm's bookkeeping, with ``torch.compile`` replaced by the identity (the bench's logic, not
    inductor, is under test; CI cannot afford a compile): both arms replay each step from the same weights, batch
    and seed, so their losses agree exactly; the first step's extra time and the break-even follow from the
    recorded times; a backbone without a checkpoint starts from a fresh model of its architecture."""
    from rlrt.config import load_overlay

    cfg = load_overlay(str(levers.ROOT / "config" / "ci.yaml"))
    cfg["rl"] = {**cfg["rl"], "question_batch": 2, "n_rollouts": 2, "mini_batch": 1}
    cfg["backbones"]["S-base"] = {**cfg["backbones"]["S-base"], "max_response_length": 8, "rl": {}}
    calls = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: calls.append(kw) or model)
    rec = levers.rl_compile_bench(cfg, "S-base", tmp_path / "no-checkpoint", 3)
    assert calls == [{"dynamic": True}, {"dynamic": True}]  # the cold arm, then the warm restart
    assert rec["source"] == "fresh model (no checkpoint)" and rec["steps"] == 3 and rec["question_batch"] == 2
    assert rec["max_loss_diff"] == 0.0
    assert rec["update_eager_s"] > 0 and rec["update_compiled_s"] > 0
    assert rec["saving_per_step_s"] == pytest.approx(rec["update_eager_s"] - rec["update_compiled_s"])
    assert rec["job_saving_s_warm"] == pytest.approx(rec["job_steps"] * rec["saving_per_step_s"]
                                                     - rec["compile_warm_s"])


def test_levers_section_says_whether_compiling_the_rl_update_pays():
    lev = _levers_json(0.30, 122.0, 3.5)
    rc = {"backbone": "M-base", "question_batch": 32, "n_rollouts": 8, "steps": 4, "speedup": 1.29,
          "update_eager_s": 2.13, "update_compiled_s": 1.65, "compile_cold_s": 94.1, "compile_warm_s": 24.8,
          "saving_per_step_s": 0.48, "break_even_steps_warm": 52.0, "job_steps": 80, "job_saving_s_warm": 13.6,
          "max_loss_diff": 3.7e-09}
    text = "\n".join(docs.levers_section({**lev, "rl_compile": rc}, "s"))
    assert "makes the update 1.29x faster (2.13 s to 1.65 s per step) and costs 94 s in a job's first step" in text
    assert "break-even 52 steps warm, so a job of 80 steps would save 14 s with a warm cache" in text
    assert "would save 14 s with a warm cache (8 % of its update time;" in text
    assert "Compile of RL does **not** pay" in text  # 13.6 s < 10 % of 80 x 2.13 s
    paying = {**rc, "compile_warm_s": 1.0, "break_even_steps_warm": 2.1, "job_saving_s_warm": 37.4}
    assert "Compile of RL pays" in "\n".join(docs.levers_section({**lev, "rl_compile": paying}, "s"))
    losing = {**rc, "update_compiled_s": 2.2, "saving_per_step_s": -0.07, "break_even_steps_warm": None,
              "job_saving_s_warm": -30.4}
    assert "break-even never steps warm, so a job of 80 steps would lose 30 s" in \
        "\n".join(docs.levers_section({**lev, "rl_compile": losing}, "s"))
    assert "PPO update of real RL steps" not in "\n".join(docs.levers_section(lev, "s"))
