"""The verl CPU smoke's fixtures and driver: a tiny Qwen3 with the pipeline's tokenizer, taught to answer four
additions about half the time, four prompts, and ``rlrt.backends.verl.train.run`` on CPU.

Used by tests/test_verl_cpu_smoke.py (``make verl-cpu-smoke``); runnable alone for one method:
``python tests/verl_cpu/smoke.py WORKDIR METHOD``. The CPU scaffolding (platform, ``hf`` rollout, patches) is
``rlrt.backends.verl.cpu``, switched on by :func:`rlrt.backends.verl.cpu.cpu_env` only.
"""

from __future__ import annotations

import copy
import os
import random
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]

QUESTIONS = [(2, 3), (4, 1), (3, 3), (1, 6)]  # the four train problems (answers 5, 5, 6, 7)
ARCH = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1, "max_position_embeddings": 512}
MAX_RESPONSE = 10  # answers take 8 tokens with the EOS
N_ROLLOUTS = 4
BACKBONE = "Qwen3-4B-Instruct-2507"  # the method settings of an instruct backbone (eps_w, lambda decay)

# rl sizes for two CPU steps: 4 questions x 4 rollouts, one mini-batch, a checkpoint after every step
SMOKE: dict[str, Any] = {
    "rl": {"steps": 2, "question_batch": 4, "mini_batch": 4, "n_rollouts": N_ROLLOUTS, "save_steps": [],
           "resume_every": 1},
    "verl": {"rollout": {"name": "hf", "tensor_model_parallel_size": 1, "gpu_memory_utilization": 0.5},
             "max_prompt_length": 128, "max_reprompt_length": 256, "ppo_max_token_len_per_gpu": 512,
             "use_dynamic_bsz": True, "save_freq": 1, "attn_implementation": "eager", "param_offload": False,
             "optimizer_offload": False},
}


def tokenizer():
    from rlrt.tasks.tokenizer import train_tokenizer

    rng = random.Random(0)
    texts = [f"What is {a} + {b}? {a} + {b} = {a + b}. So the answer is \\boxed{{{a + b}}}."
             for a, b in ((rng.randint(0, 99), rng.randint(0, 99)) for _ in range(300))]
    return train_tokenizer(texts, 272)


def problems() -> list[dict[str, str]]:
    from rlrt.io import PROBLEM_COLUMNS

    rows = []
    for i, (a, b) in enumerate(QUESTIONS):
        row = {"id": f"cpu-{i}", "question": f"What is {a} + {b}?", "answer": str(a + b),
               "solution": f"{a} + {b} = {a + b}", "source": "cpu_smoke"}
        rows.append({c: row.get(c, "") for c in PROBLEM_COLUMNS})
    return rows


def build_checkpoint(path: Path, seed: int = 0, steps: int = 150) -> Path:
    """A tiny Qwen3 trained (teacher forcing on the chat-templated prompt) to answer each question with the right
    boxed answer about half the time and a wrong one otherwise: groups of 4 rollouts then mix rewards, so GRPO has
    non-zero advantages and RLRT has correct rows with correct siblings to score with the teacher view."""
    from rlrt.backends.local.model import build_model, save_checkpoint
    from rlrt.tasks.prompts import user_message

    tok = tokenizer()
    torch.manual_seed(seed)
    model = build_model(ARCH, tok)
    seqs = []
    for a, b in QUESTIONS:
        prompt = tok.apply_chat_template([{"role": "user", "content": user_message(f"What is {a} + {b}?")}],
                                         add_generation_prompt=True, tokenize=False)
        for ans in (a + b, a + b + 1):  # right, wrong
            ids = tok(prompt + f"\\boxed{{{ans}}}" + tok.eos_token, add_special_tokens=False)["input_ids"]
            n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
            seqs.append((ids, n_prompt))
    L = max(len(ids) for ids, _ in seqs)  # one right-padded batch; the loss on the answer tokens only
    x = torch.full((len(seqs), L), tok.pad_token_id, dtype=torch.long)
    att = torch.zeros_like(x)
    target = torch.full_like(x, -100)
    for i, (ids, n_prompt) in enumerate(seqs):
        x[i, :len(ids)], att[i, :len(ids)] = torch.tensor(ids), 1
        target[i, n_prompt:len(ids)] = torch.tensor(ids[n_prompt:])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        logits = model(input_ids=x, attention_mask=att).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    save_checkpoint(model, tok, path)
    return path


def job_config(method: str, model: str | os.PathLike) -> dict[str, Any]:
    """The rl job config the workflow would pass (rules/common.smk rl_cfg), config.yaml + paper.yaml + SMOKE."""
    from rlrt.backends.verl.cpu import cpu_overrides
    from rlrt.config import load_overlay, merge_configs
    from rlrt.plan import method_config

    cfg = merge_configs(load_overlay(ROOT / "config" / "paper.yaml"), copy.deepcopy(SMOKE))
    dump = Path(model).parent / f"dump_{method}"  # each step's rollouts and advantages (rlrt.dump_dir)
    cfg["verl"]["extra_overrides"] = cpu_overrides() + [f"++rlrt.dump_dir='{dump}'"]
    return {"rl": cfg["rl"], "method": method, "run": method, "method_cfg": method_config(cfg, BACKBONE, method),
            "backbone": {"name": Path(model).name, "kind": "instruct"}, "max_response_length": MAX_RESPONSE,
            "seed": cfg["seed"], "grader_workers": 1, "tracking": None, "backend": "verl", "verl": cfg["verl"],
            "gpus": 1}


def run(workdir: str | os.PathLike, method: str, model: str | os.PathLike | None = None) -> Path:
    """``rlrt.backends.verl.train.run`` for ``method`` on CPU; returns the output folder (HF model)."""
    from rlrt.backends.verl.cpu import cpu_env
    from rlrt.backends.verl.train import run as verl_run
    from rlrt.io import write_problems

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    if model is None:
        model = work / "tiny"
        if not (Path(model) / "config.json").exists():
            build_checkpoint(Path(model))
    data = work / "train.parquet"
    if not data.exists():
        write_problems(data, problems())
    os.environ.update(cpu_env())
    out = work / f"rl_{method}"
    verl_run(job_config(method, model), model=str(model), data=str(data), out=str(out),
             metrics=str(work / f"rl_{method}.json"), checkpoints=None, gpus=1)
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    print(run(sys.argv[1], sys.argv[2]))
