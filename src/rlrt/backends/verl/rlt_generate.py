"""The RLT teacher's completions on vLLM (distillation data, reward-rank candidates) and its own process.

:func:`teacher_completions` is the paper-scale twin of the local engine's ``write_explanations``. Each request
gets its own sampling seed, derived from the run's seed and the question (:func:`request_seed`): one seed for
every request would correlate the samples of different questions, and a seed from the question (not its
position) keeps a question's samples the same whatever else is in the batch.

:func:`completions_in_subprocess` runs it as ``python -m rlrt.backends.verl.rlt_generate`` and waits for that
process to exit, so that vLLM's GPU memory is released before a caller loads other models on the same GPU
(the reward-rank stage scores the candidates with two HF models afterwards).

NEVER RUN with vLLM (no GPU here): tested with stand-in engines and a stand-in subprocess runner.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from rlrt.io import atomic_path


def request_seed(seed: int, question: str) -> int:
    """A vLLM request's seed: a hash of (run seed, question text), in [0, 2**31)."""
    h = hashlib.sha256(f"{int(seed)}\x00{question}".encode()).digest()
    return int.from_bytes(h[:4], "big") & 0x7FFFFFFF


def teacher_completions(model: str, rows: Sequence[dict], n: int, max_new_tokens: int, temperature: float, seed: int,
                        gpus: int = 1, *, llm_factory=None, sampling_params_factory=None,
                        tokenizer=None, length_key: str = "rlt.teacher_rl.max_new_tokens") -> list[list[str]]:
    """``n`` raw teacher completions per (question, solution) row with vLLM.

    Prompts are the local engine's teacher prompt ids (``teacher_prompt``: the chat's generation prompt, then the
    solution block and the open explanation tag), handed to vLLM as token ids so that no template or special token
    differs; sampling as the local sampler's (temperature, no top-p / top-k cut), one ``SamplingParams`` per
    request with :func:`request_seed`. ``llm_factory(model, tensor_parallel_size=, seed=)`` /
    ``sampling_params_factory(**kw)`` default to vLLM (tests pass stand-ins); ``tokenizer`` to the model's. A
    missing or short output raises (a shifted list would pair explanations with the wrong questions).

    vLLM stops a completion at ``max_model_len`` whatever ``max_tokens`` says, so the engine gets
    ``max_model_len`` = longest prompt + ``max_new_tokens`` (never the model's whole context, which would reserve
    KV cache for nothing), and a run that does not fit the model's context (``config.json``) is refused naming
    ``length_key`` and both numbers -- never cut short silently."""
    from rlrt.backends.local.rlt import encode, teacher_prompt
    from rlrt.backends.verl.context import model_context
    from rlrt.backends.verl.evaluate import context_plan, default_llm_factory, default_sampling_params_factory

    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model))
    prompts = [{"prompt_token_ids": encode(tokenizer, teacher_prompt(tokenizer, r["question"], r["solution"]))}
               for r in rows]
    longest = max(len(p["prompt_token_ids"]) for p in prompts)
    plan = context_plan(model_context(model), longest, {"max_new_tokens": int(max_new_tokens), "rope_scaling": None},
                        str(model), keys=(length_key, "rope scaling (no key for the RLT teacher: a longer-context model)"))
    make_sp = sampling_params_factory or default_sampling_params_factory
    sps = [make_sp(n=int(n), temperature=float(temperature), top_p=1.0, top_k=-1, max_tokens=int(max_new_tokens),
                   seed=request_seed(seed, r["question"])) for r in rows]
    llm = (llm_factory or default_llm_factory)(str(model), tensor_parallel_size=int(gpus), seed=int(seed),
                                               max_model_len=plan["max_model_len"])
    outputs = llm.generate(prompts, sps)
    if len(outputs) != len(rows):
        raise ValueError(f"vLLM returned {len(outputs)} outputs for {len(rows)} teacher prompts")
    out = []
    for i, o in enumerate(outputs):
        texts = [c.text for c in o.outputs]
        if len(texts) != n:
            raise ValueError(f"teacher prompt {i} (id {rows[i].get('id')!r}): {len(texts)} completions, expected {n}")
        out.append(texts)
    return out


def completions_in_subprocess(model: str, rows: Sequence[dict], n: int, max_new_tokens: int, temperature: float,
                              seed: int, gpus: int, work_dir: str | os.PathLike,
                              runner: Callable[..., Any] = subprocess.run,
                              length_key: str = "rlt.teacher_rl.max_new_tokens") -> list[list[str]]:
    """:func:`teacher_completions` in a child process (``python -m rlrt.backends.verl.rlt_generate``) that has
    exited, and so freed the GPU, when this returns. ``runner`` is ``subprocess.run`` (tests pass a stand-in)."""
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    req, res = work / "generate_request.json", work / "generate_result.json"
    with atomic_path(req) as tmp:
        Path(tmp).write_text(json.dumps({"model": str(model), "rows": [dict(r) for r in rows], "n": int(n),
                                         "max_new_tokens": int(max_new_tokens), "temperature": float(temperature),
                                         "seed": int(seed), "gpus": int(gpus), "length_key": length_key}))
    res.unlink(missing_ok=True)
    runner([sys.executable, "-m", "rlrt.backends.verl.rlt_generate", "--request", str(req), "--result", str(res)],
           check=True)
    out = json.loads(res.read_text())["completions"]
    req.unlink()
    res.unlink()
    if len(out) != len(rows):
        raise ValueError(f"teacher generation process wrote {len(out)} groups for {len(rows)} rows ({res})")
    return out


def main(argv: list[str] | None = None, **factories) -> None:
    """The child process: read the request, generate, write the result atomically, exit (freeing the GPU)."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--request", required=True)
    p.add_argument("--result", required=True)
    args = p.parse_args(argv)
    r = json.loads(Path(args.request).read_text())
    out = teacher_completions(r["model"], r["rows"], r["n"], r["max_new_tokens"], r["temperature"], r["seed"],
                              r["gpus"], length_key=r["length_key"], **factories)
    with atomic_path(args.result) as tmp:
        Path(tmp).write_text(json.dumps({"completions": out}))


if __name__ == "__main__":
    main()
