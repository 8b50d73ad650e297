"""GPU smoke test of the paper-scale backend: 2 verl RLRT steps + a vLLM evaluation of 8 problems on one GPU.

Run it in the GPU environment (envs/gpu.yaml or envs/gpu.def) on a node with one GPU and a small local model
folder (e.g. Qwen3-0.6B; no download is attempted):

    RLRT_SMOKE_MODEL=/path/to/model python bench/gpu_smoke.py [--method rlrt|sdpo|srpo|...] [--work DIR] [--out JSON]
    python bench/gpu_smoke.py --dry-run      # anywhere: prints the verl overrides and the request count

``--method sdpo`` (or ``srpo``) runs the distilling objectives' path instead: the actor's loss replaced by
``rlrt.backends.verl.loss.WorkerLoss`` and the teacher views in the update batch (also never run on a GPU).

What it does: writes a tiny arithmetic train split (32 problems) and test split (8) as normalised parquet; builds
the rl job config the workflow would build (config/config.yaml + config/paper.yaml, with sizes shrunk to one GPU:
``SMOKE``); trains ``rl.steps = 2`` steps of the method (RLRT by default) through the project's verl backend
(``rlrt.backends.verl.train.run``, which calls verl's trainer with ``rlrt.backends.verl.overrides``); evaluates the
trained model (the base model if training wrote none) with ``rlrt.backends.verl.evaluate``; prints the step times
and writes a small JSON (timings, step times, eval metrics, the overrides).

Training and evaluation run as two processes (``--phase train``, then ``--phase eval``, started by the default
``--phase all``): vLLM must not start in the process whose verl workers (Ray) held the GPU, and it starts only once
the GPU has no compute process left (:func:`wait_gpu_released`, polling ``nvidia-smi``; a GPU still busy after
``--gpu-wait`` seconds stops the smoke test naming the processes). Each phase writes its part of the summary
(``smoke_train.json``, ``smoke_eval.json`` in the work folder); ``all`` joins them.

Exit status 2 with one clear line when a precondition is missing (no model folder, no GPU, no vLLM, no verl, no
verl backend module); ``--dry-run`` needs none of them. This script has NOT run on a GPU yet (its orchestration is
tested on CPU with stand-in phase commands and a stand-in GPU probe: tests/test_gpu_smoke_phases.py).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # runnable from a checkout without `pip install -e`
    sys.path.insert(0, str(ROOT / "src"))

from rlrt.backends.verl.overrides import format_command, hydra_overrides  # noqa: E402
from rlrt.config import load_overlay, merge_configs  # noqa: E402
from rlrt.io import PROBLEM_COLUMNS, write_json, write_problems  # noqa: E402

N_TRAIN, N_TEST = 32, 8
METHOD = "rlrt"  # the default; --method picks another registered method
# One GPU, short responses: only what differs from config/paper.yaml (merged over it like an overlay).
SMOKE: dict[str, Any] = {
    "rl": {"steps": 2, "question_batch": 8, "mini_batch": 4, "n_rollouts": 4, "save_steps": [], "resume_every": 2},
    "verl": {"rollout": {"tensor_model_parallel_size": 1, "gpu_memory_utilization": 0.4},  # verl run_single_gpu.sh
             "max_prompt_length": 512, "max_reprompt_length": 2048, "ppo_max_token_len_per_gpu": 4096,
             "save_freq": 2},
    "eval": {"max_problems": N_TEST, "max_new_tokens": 1024},
}
MAX_RESPONSE_LENGTH = 1024


def problems(n: int, seed: int, source: str) -> list[dict[str, str]]:
    """``n`` two-term additions as normalised problem rows (``rlrt.io.PROBLEM_COLUMNS``)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        row = {"id": f"{source}-{i}", "question": f"What is {a} + {b}?", "answer": str(a + b),
               "solution": f"{a} + {b} = {a + b}", "source": source}
        rows.append({c: row.get(c, "") for c in PROBLEM_COLUMNS})  # any further column of the schema: empty
    return rows


def configs(model: str, gpus: int = 1, method: str = METHOD) -> tuple[dict[str, Any], dict[str, Any]]:
    """The rl job config and the eval config the workflow would pass (rules/common.smk rl_cfg / eval_cfg)."""
    from rlrt.plan import method_config

    cfg = merge_configs(load_overlay(ROOT / "config" / "paper.yaml"), copy.deepcopy(SMOKE))
    backend = {"backend": "verl", "verl": cfg["verl"], "gpus": gpus}
    job = {"rl": cfg["rl"], "method": method, "run": method,
           "method_cfg": method_config(cfg, "Qwen3-4B-Instruct-2507", method),
           "backbone": {"name": Path(model).name or "smoke", "kind": "instruct"},
           "max_response_length": MAX_RESPONSE_LENGTH, "seed": cfg["seed"],
           "grader_workers": cfg["rl"].get("grader_workers", 1), "tracking": None, **backend}
    ev = {**cfg["eval"], "backbone": job["backbone"]["name"], "method": method, "seed": cfg["seed"],
          "grader_workers": cfg["rl"].get("grader_workers", 1), "tracking": None, **backend}
    return job, ev


def write_data(work: Path) -> tuple[Path, Path]:
    train, test = work / "data" / "train.parquet", work / "data" / "smoke_test.parquet"
    write_problems(train, problems(N_TRAIN, 0, "smoke_train"))
    write_problems(test, problems(N_TEST, 1, "smoke_test"))
    return train, test


def fail(msg: str) -> None:
    print(f"gpu_smoke: {msg}", file=sys.stderr)
    raise SystemExit(2)


def preconditions(model: str | None) -> str:
    if not model:
        fail("set RLRT_SMOKE_MODEL to a local model folder (e.g. Qwen3-0.6B); nothing is downloaded")
    if not (Path(model) / "config.json").is_file():
        fail(f"RLRT_SMOKE_MODEL={model}: not a model folder (no config.json)")
    try:
        import torch
    except ImportError:
        fail("torch is not installed: run in the GPU environment (envs/gpu.yaml)")
    if not torch.cuda.is_available():
        fail("no CUDA GPU visible (torch.cuda.is_available() is False)")
    for mod, what in (("vllm", "vLLM"), ("verl", "verl 0.9.1")):
        if importlib.util.find_spec(mod) is None:
            fail(f"{what} is not installed: run in the GPU environment (envs/gpu.yaml / envs/gpu.def)")
    if importlib.util.find_spec("rlrt.backends.verl.train") is None:
        fail("rlrt.backends.verl.train (the verl RL entry point) is missing from this checkout")
    return model


def gpu_pids(run: Callable[..., Any] = subprocess.run) -> list[int] | None:
    """PIDs of the compute processes on this job's GPUs (``nvidia-smi --query-compute-apps``, restricted to
    ``CUDA_VISIBLE_DEVICES``); None when nvidia-smi is not there."""
    cmd = ["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        cmd += ["-i", visible]
    try:
        r = run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if r.returncode != 0:
        return None
    return [int(x) for x in r.stdout.split() if x.strip().isdigit()]


def wait_gpu_released(probe: Callable[[], list[int] | None] = gpu_pids, timeout_s: float = 300.0,
                      poll_s: float = 2.0, sleep: Callable[[float], None] = time.sleep,
                      clock: Callable[[], float] = time.monotonic) -> float:
    """Wait until the GPU has no compute process (the training phase's Ray workers gone); returns the seconds
    waited. No nvidia-smi: a warning, no wait. Still busy after ``timeout_s``: ``SystemExit`` naming the PIDs."""
    t0 = clock()
    while True:
        pids = probe()
        if pids is None:
            print("gpu_smoke: nvidia-smi not found; cannot check that training released the GPU", file=sys.stderr)
            return clock() - t0
        if not pids:
            return clock() - t0
        if clock() - t0 >= timeout_s:
            raise SystemExit(f"gpu_smoke: the GPU still has compute processes {pids} {timeout_s:.0f} s after "
                             "training ended; evaluation not started")
        sleep(poll_s)


def run_phases(cmds: Sequence[Sequence[str]], wait: Callable[[], float] = wait_gpu_released,
               run: Callable[..., Any] = subprocess.run) -> list[float]:
    """Run each phase command as its own process, in order, waiting for the GPU to be released between two;
    a phase that fails stops the rest (``SystemExit`` with its exit status). Returns the waits (seconds)."""
    waits = []
    for i, cmd in enumerate(cmds):
        if i:
            waits.append(wait())
        r = run(list(cmd))
        if r.returncode != 0:
            raise SystemExit(f"gpu_smoke: phase {' '.join(cmd[2:4])} failed (exit status {r.returncode})")
    return waits


def phase_command(phase: str, args: argparse.Namespace) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--method", args.method,
            "--work", str(Path(args.work).resolve())]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="print the verl overrides and the request count; no GPU")
    p.add_argument("--method", default=METHOD, help="a registered method (sdpo / srpo: the worker-side loss)")
    p.add_argument("--work", default=str(ROOT / "results-smoke"), help="scratch folder (data, checkpoints, outputs)")
    p.add_argument("--out", default=None, help="summary JSON (default <work>/gpu_smoke.json)")
    p.add_argument("--phase", choices=["all", "train", "eval"], default="all",
                   help="all (default): train, wait for the GPU, evaluate -- each phase its own process")
    p.add_argument("--gpu-wait", type=float, default=300.0, help="seconds to wait for the GPU after training")
    args = p.parse_args(argv)
    work = Path(args.work).resolve()
    model = os.environ.get("RLRT_SMOKE_MODEL")
    if not args.dry_run:
        model = preconditions(model)
    model = model or "<RLRT_SMOKE_MODEL>"
    job, ev = configs(model, method=args.method)
    train_file, test_file = work / "data" / "train.parquet", work / "data" / "smoke_test.parquet"
    if args.phase == "all":
        train_file, test_file = write_data(work)
    overrides = hydra_overrides(job, model_path=model, train_file=str(train_file), val_file=str(test_file),
                                ckpt_dir=str(work / "verl_checkpoints"), n_gpus=int(job["gpus"]),
                                experiment_name=f"smoke-{args.method}")
    n_requests = min(N_TEST, ev["max_problems"] or N_TEST)
    if args.dry_run:
        print(format_command(overrides))
        print("\n".join(overrides))
        print(f"eval requests: {n_requests} prompts x n={ev['n']} samples = {n_requests * int(ev['n'])} responses "
              f"(max_tokens {ev['max_new_tokens']})")
        return 0
    out_model, metrics = work / "model", work / "metrics.json"
    if args.phase == "train":
        from rlrt.backends.verl.train import run

        t0 = time.perf_counter()
        run(job, model=model, data=str(train_file), out=str(out_model), metrics=str(metrics),
            checkpoints=str(work / "checkpoints"), gpus=int(job["gpus"]))
        history = json.loads(metrics.read_text()).get("history", []) if metrics.is_file() else []
        for h in history:
            print(f"step {h.get('step')}: {h.get('step_time')} s, reward {h.get('reward_mean')}")
        write_json(work / "smoke_train.json", {"train_wall_s": time.perf_counter() - t0,
                                               "step_times": [h.get("step_time") for h in history]})
        return 0
    if args.phase == "eval":
        from rlrt.backends.verl.evaluate import evaluate

        eval_model = str(out_model) if (out_model / "config.json").is_file() else model
        t1 = time.perf_counter()
        result = evaluate(ev, model=eval_model, data_paths=[str(test_file)], out=str(work / "eval.json"))
        write_json(work / "smoke_eval.json", {"evaluated": eval_model, "eval_wall_s": time.perf_counter() - t1,
                                              "eval": result["splits"][test_file.stem]["metrics"]})
        return 0
    waits = run_phases([phase_command("train", args), phase_command("eval", args)],
                       wait=lambda: wait_gpu_released(timeout_s=args.gpu_wait))
    tr, evr = (json.loads((work / f"smoke_{k}.json").read_text()) for k in ("train", "eval"))
    summary = {"model": model, **tr, **evr, "gpu_release_wait_s": waits[0], "eval_requests": n_requests * int(ev["n"]),
               "overrides": overrides}
    write_json(args.out or work / "gpu_smoke.json", summary)
    print(f"train {tr['train_wall_s']:.0f}s (steps {tr['step_times']}), GPU released after {waits[0]:.0f}s, "
          f"eval {evr['eval_wall_s']:.0f}s: {evr['eval']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
