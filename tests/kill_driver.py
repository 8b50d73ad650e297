"""kill -9 trials of the local training stages (run by tests/test_faults.py in a subprocess of its own).

    python tests/kill_driver.py WORKDIR TRIALS SEED  ->  one JSON line per trial, then one summary line

The driver imports torch once, then forks one child per stage run, so a trial costs a fork, not an interpreter.
Per stage (student SFT = the LM trainer, policy RL with RLRT and with SDPO + an EMA teacher, the RLT teacher's RL)
it first runs the stage uninterrupted (the reference), then per trial: a run killed with SIGKILL at a seeded random
point, sometimes a second kill of its rerun, and a final rerun to completion. The final checkpoint must equal the
reference's byte for byte, the metrics JSON must hold one row per step (none duplicated, none missing) with the
reference's numbers, and nothing may be left beside the outputs.

Kill points come from markers the child writes to a pipe (``step``: a training step starts; ``state`` /
``checkpoint``: the temp file of a resume state / the temp folder of a checkpoint is written and about to be
renamed into place). The child sleeps after the marker of its target write, so that kill lands inside the write
window; after a ``step`` marker the driver waits a seeded random 0-40 ms before killing, a random moment of that
step. Rollout sampling of the teacher is the seeded stand-in of tests/test_resume.py and RL grading a fixed
alternating verifier, so every stage learns something (a random tiny model never scores).
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402

torch.set_num_threads(1)

ARCH = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1}
STAGES = ("sft", "rl_rlrt", "rl_sdpo", "teacher_rl")
HISTORY_KEYS = {"sft": ("loss", "grad_norm", "lr", "nonfinite_skips"),
                "rl_rlrt": ("reward_mean", "loss", "grad_norm", "clip_frac", "entropy", "weight_mean", "lr"),
                "rl_sdpo": ("reward_mean", "loss", "grad_norm", "distill_loss", "entropy", "lr"),
                "teacher_rl": ("reward_mean", "r_ss", "r_kl", "loss", "kl_ref", "grad_norm", "lr")}
STEPS = {"sft": 6, "rl_rlrt": 5, "rl_sdpo": 5, "teacher_rl": 4}


# ---------------------------------------------------------------------------------------------------- inputs


def prepare(work: Path) -> None:
    """Tokenizer, two tiny checkpoints (the model trained, the RLT reward student) and the stages' data files."""
    from rlrt.backends.local.model import build_model, save_checkpoint
    from rlrt.tasks.rlt_format import teacher_text
    from rlrt.tasks.tokenizer import train_tokenizer
    from test_resume import ROWS

    rng = random.Random(0)
    texts = [teacher_text(f"{a} + {b} = {a + b}. So the answer is \\boxed{{{a + b}}}.", f"{b} + {a} = {a + b}.")
             for a, b in ((rng.randint(1, 99), rng.randint(1, 99)) for _ in range(200))]
    tok = train_tokenizer(texts, 320)
    for name, seed in (("base", 0), ("student", 1)):
        torch.manual_seed(seed)
        save_checkpoint(build_model(ARCH, tok), tok, work / name)
    rows = [{"id": f"q{k}", "answer": r["solution"].split("{")[-1].rstrip("}."), **r} for k, r in enumerate(ROWS)]
    (work / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def argv(stage: str, work: Path, out: Path) -> tuple[object, list[str]]:
    """The stage's ``main`` and its command line, outputs under ``out``."""
    from rlrt.stages import rl, rlt_student_sft, rlt_teacher_rl

    if stage == "sft":
        cfg = {"seed": 0, "tracking": None, "student": "S", "data": "reference",
               "student_sft": {"steps": STEPS[stage], "batch_size": 2, "lr": 3e-3, "resume_every": 1}}
        return rlt_student_sft.main, ["--cfg", json.dumps(cfg), "--model", str(work / "base"), "--traces",
                                      str(work / "rows.jsonl"), "--out", str(out / "model"), "--metrics",
                                      str(out / "metrics.json")]
    if stage.startswith("rl_"):
        method = stage[3:]
        cfg = {"seed": 3, "tracking": None, "method": method, "max_response_length": 8,
               "method_cfg": {"ema_rate": 0.5} if method == "sdpo" else {},
               "backbone": {"name": "tiny", "kind": "base"},
               "rl": {"steps": STEPS[stage], "question_batch": 2, "mini_batch": 1, "n_rollouts": 4, "lr": 1e-3,
                      "warmup_steps": 1, "micro_batch": 4, "resume_every": 1, "save_steps": [2]}}
        return rl.main, ["--cfg", json.dumps(cfg), "--model", str(work / "base"), "--data", str(work / "rows.jsonl"),
                         "--out", str(out / "model"), "--metrics", str(out / "metrics.json"),
                         "--checkpoints", str(out / "checkpoints")]
    cfg = {"seed": 2, "tracking": None, "reward_student": "S",
           "teacher_rl": {"steps": STEPS[stage], "question_batch": 4, "n_samples": 3, "mini_batch": 2, "lr": 3e-3,
                          "max_new_tokens": 16, "temperature": 1.0, "missing_tag_penalty": -20.0,
                          "resume_every": 1}}
    return rlt_teacher_rl.main, ["--cfg", json.dumps(cfg), "--teacher", str(work / "base"), "--student",
                                 str(work / "student"), "--data", str(work / "rows.jsonl"), "--out",
                                 str(out / "model"), "--metrics", str(out / "metrics.json")]


# ---------------------------------------------------------------------------------------------------- the child


def alternating(responses, answers):
    """Every other rollout correct: each group of the RL stage is mixed, so every method has something to learn."""
    return [float(i % 2 == 0) for i in range(len(responses))]


def child(stage: str, work: Path, out: Path, fd: int, pause_at: str | None) -> None:
    """Run one stage in this (forked) process, writing markers to ``fd``; sleep at the marker ``pause_at``."""
    import rlrt.backends.local.loop as loop
    from rlrt.backends.local import rlt
    from rlrt.stages import rl
    from test_resume import fake_sample

    out.mkdir(parents=True, exist_ok=True)
    log = os.open(out / f"run-{os.getpid()}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)
    counts: dict[str, int] = {}

    def mark(kind: str, detail: str = "") -> None:
        counts[kind] = counts.get(kind, 0) + 1
        name = f"{kind}#{counts[kind]}"
        os.write(fd, f"{name} {detail}\n".encode())
        if name == pause_at:
            time.sleep(60)  # inside the write window: the driver kills us here

    real_run, real_replace = loop.run, os.replace

    def run(state, step_fn, steps, **kw):
        def marked(step: int):
            mark("step", str(step))
            return step_fn(step)
        return real_run(state, marked, steps, **kw)

    def replace(src, dst, *a, **k):
        if str(dst).endswith("resume_state.pt"):
            mark("state", str(dst))
        elif os.path.isdir(src):
            mark("checkpoint", str(dst))
        return real_replace(src, dst, *a, **k)

    real_make_grader = rl.make_grader

    def make_grader(*a, **k):  # the stage's own grader object, scoring with ``alternating``
        grader = real_make_grader(*a, **k)
        grader.grade_batch = alternating
        return grader

    loop.run, os.replace, rl.make_grader = run, replace, make_grader
    rlt.sample = fake_sample
    main, args = argv(stage, work, out)
    main(args)


def spawn(stage: str, work: Path, out: Path, pause_at: str | None = None) -> tuple[int, int]:
    """Fork a child running ``stage``; returns (pid, read end of its marker pipe)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 0
        try:
            child(stage, work, out, w, pause_at)
        except BaseException:  # noqa: BLE001 - report and leave without running the parent's handlers
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(w)
    return pid, r


def markers(r: int, timeout: float = 60.0):
    """Yield the child's marker names until its pipe closes."""
    buf = b""
    while True:
        ready, _, _ = select.select([r], [], [], timeout)
        if not ready:
            raise TimeoutError("no marker from the child for 60 s")
        chunk = os.read(r, 4096)
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode().split(" ")[0]


def run_to_end(stage: str, work: Path, out: Path) -> list[str]:
    pid, r = spawn(stage, work, out)
    seen = list(markers(r))
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{stage} run in {out} failed: see {out}/run-{pid}.log")
    return seen


def kill_at(stage: str, work: Path, out: Path, target: str, rng: random.Random) -> dict:
    """Run ``stage`` and SIGKILL it at marker ``target`` (after a random 0-40 ms for a step marker)."""
    write = not target.startswith("step")
    pid, r = spawn(stage, work, out, pause_at=target if write else None)
    last, hit = None, False
    for name in markers(r):
        last = name
        if name == target:
            hit = True
            if not write:
                time.sleep(rng.uniform(0.0, 0.04))
            os.kill(pid, signal.SIGKILL)
            break
    os.close(r)
    _, status = os.waitpid(pid, 0)
    killed = os.waitstatus_to_exitcode(status) == -signal.SIGKILL
    if not killed and os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{stage} run in {out} failed: see {out}/run-{pid}.log")
    leftover_tmp = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.name.endswith(".tmp"))
    return {"target": target, "landed": killed and hit, "last_marker": last, "in_write_window": killed and write,
            "tmp_left": leftover_tmp}


# ---------------------------------------------------------------------------------------------------- checks


def compare(stage: str, ref: Path, out: Path) -> dict:
    """Final weights byte-equal, one metrics row per step with the reference's numbers, nothing left over."""
    res = {"weights_equal": (out / "model/model.safetensors").read_bytes()
           == (ref / "model/model.safetensors").read_bytes()}
    if stage.startswith("rl_"):
        res["weights_equal"] &= ((out / "checkpoints/step_2/model.safetensors").read_bytes()
                                 == (ref / "checkpoints/step_2/model.safetensors").read_bytes())
    hist = json.loads((out / "metrics.json").read_text())["history"]
    want = json.loads((ref / "metrics.json").read_text())["history"]
    res["rows"] = [h["step"] for h in hist]
    res["rows_ok"] = res["rows"] == list(range(STEPS[stage]))
    keys = HISTORY_KEYS[stage]
    res["numbers_equal"] = [[h[k] for k in keys] for h in hist] == [[h[k] for k in keys] for h in want]
    expected = {"metrics.json", "model"} | ({"checkpoints"} if stage.startswith("rl_") else set())
    res["left_over"] = sorted(p.name for p in out.iterdir() if p.name not in expected and not p.name.endswith(".log"))
    return res


def main() -> None:
    work, trials, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    sys.path.insert(0, str(Path(__file__).parent))
    t0 = time.perf_counter()
    prepare(work)
    counts = {}
    for stage in STAGES:  # the uninterrupted references, and how many markers of each kind a whole run writes
        seen = run_to_end(stage, work, work / "ref" / stage)
        counts[stage] = {kind: sum(m.startswith(kind + "#") for m in seen) for kind in ("step", "state", "checkpoint")}
    rng = random.Random(seed)
    results = []
    for i in range(trials):
        stage = STAGES[i % len(STAGES)]
        out = work / f"trial{i}" / stage
        kills = []
        for attempt in range(1 + (rng.random() < 0.3)):  # some trials kill the rerun too
            kind = rng.choices(("step", "state", "checkpoint"), weights=(5, 4, 1))[0]
            n = counts[stage][kind] if attempt == 0 else 1  # a rerun writes fewer markers: aim at its first
            kills.append(kill_at(stage, work, out, f"{kind}#{rng.randint(1, n)}", rng))
        run_to_end(stage, work, out)
        results.append({"trial": i, "stage": stage, "kills": kills, **compare(stage, work / "ref" / stage, out)})
        print(json.dumps(results[-1]), flush=True)
    landed = [k for r in results for k in r["kills"] if k["landed"]]
    # what the references learned: a trial that loses or repeats a step can only differ where gradients are non-zero
    grad_max = {s: max(h["grad_norm"] for h in json.loads((work / "ref" / s / "metrics.json").read_text())["history"])
                for s in STAGES}
    print(json.dumps({"summary": True, "trials": len(results), "kills_landed": len(landed),
                      "reference_grad_norm_max": grad_max, "in_write_window": sum(k["in_write_window"] for k in landed),
                      "markers_per_run": counts, "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
