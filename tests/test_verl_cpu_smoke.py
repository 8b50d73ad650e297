"""verl's trainer loop through ``rlrt.backends.verl.train.run`` on CPU (``make verl-cpu-smoke``; CI: ``make
test-integration``, 8-11 minutes on 2 busy cores): 2 steps each of GRPO, RLRT and SDPO through ``RLRTRayTrainer``.

Ray with a fake GPU, FSDP2 on gloo through the ``cpu`` platform, eager attention and the ``hf`` rollout
(``rlrt.backends.verl.cpu``, loaded by ``VERL_USE_EXTERNAL_MODULES``), a tiny Qwen3 (hidden 64, 2 layers) with the
pipeline's tokenizer, 4 prompts x 4 rollouts of up to 10 tokens (tests/verl_cpu/smoke.py). It checks:

* each step's row in ``history.jsonl`` (the local engine's keys), RLRT's teacher pass among them;
* RLRT killed (SIGKILL to the whole process group, Ray included) after step 1's checkpoint, then rerun: verl
  resumes at step 2 (step 1 is not trained again) and the run ends merged;
* the merged HF checkpoint loads and is evaluated by the local evaluator (``rlrt.stages.evaluate``);
* for the same rollouts, the advantages of verl's step equal the local engine's: GRPO's against verl's own
  estimator and ``group_advantages``, RLRT's first step against ``shape_advantages`` with the local engine's
  teacher view (``LocalTeacher``) on the initial weights.

Only with ``RLRT_VERL_CPU_SMOKE=1`` (set by the make targets): it takes minutes, so ``make test`` skips it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(os.environ.get("RLRT_VERL_CPU_SMOKE") != "1",
                                reason="verl CPU smoke: run with `make verl-cpu-smoke` (RLRT_VERL_CPU_SMOKE=1)")

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "tests" / "verl_cpu" / "smoke.py"
sys.path.insert(0, str(SMOKE.parent))
STEPS = 2
RUN_TIMEOUT = 900


def _session_pids(sid: int) -> list[int]:
    import psutil

    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getsid(p.info["pid"]) == sid:
                out.append(p.info["pid"])
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return out


def _kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the run's whole session (driver, trainer, Ray's processes: all started in it), then wait."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)
    deadline = time.time() + 30
    while _session_pids(proc.pid) and time.time() < deadline:
        for pid in _session_pids(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(1)


def _shm_segments() -> set[Path]:
    return set(Path("/dev/shm").glob("verl_weights_*"))


def _cleanup_shm(before: set[Path]) -> None:
    """verl's weight-sync segments a killed run can leave (2 GiB each with vLLM); only those that appeared during
    the smoke's runs."""
    for f in _shm_segments() - before:
        try:
            f.unlink()
        except OSError:
            pass


def train(work: Path, method: str, *, freeze_after: int | None = None) -> subprocess.Popen:
    """``python tests/verl_cpu/smoke.py WORK METHOD`` in its own session (log: ``WORK/<method>.log``)."""
    env = {k: v for k, v in os.environ.items() if k != "RLRT_VERL_CPU_FREEZE_AFTER_STEP"}
    if freeze_after is not None:
        env["RLRT_VERL_CPU_FREEZE_AFTER_STEP"] = str(freeze_after)
    log = open(work / f"{method}.log", "a")
    # cwd: the work folder, where Hydra's default outputs/<date>/<time>/ would land (checked absent by the tests)
    return subprocess.Popen([sys.executable, str(SMOKE), str(work), method], cwd=work, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen, work: Path, method: str) -> None:
    try:
        rc = proc.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        _kill_session(proc)
        rc = "timeout"
    _kill_session(proc)  # Ray leftovers of a finished run, if any
    if rc != 0:
        tail = (work / f"{method}.log").read_text()[-6000:]
        raise AssertionError(f"verl CPU run {method} failed ({rc}):\n{tail}")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    import smoke

    root = tmp_path_factory.mktemp("verl_cpu")
    t0, shm = time.perf_counter(), _shm_segments()
    smoke.build_checkpoint(root / "tiny")
    from rlrt.io import write_problems

    write_problems(root / "train.parquet", smoke.problems())
    write_problems(root / "cpu_test.parquet", smoke.problems())
    yield root
    _cleanup_shm(shm)
    print(f"verl CPU smoke: {time.perf_counter() - t0:.0f} s (tiny model, 4 verl runs, evaluation)")


def history_lines(work: Path, method: str) -> list[dict]:
    p = work / f"rl_{method}.verl" / "history.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()] if p.exists() else []


def metrics(work: Path, method: str) -> dict:
    return json.loads((work / f"rl_{method}.json").read_text())


LOCAL_KEYS = ("step", "reward_mean", "accuracy", "solve_rate", "mixed_groups", "response_length", "entropy",
              "clip_frac", "approx_kl", "loss", "grad_norm", "weight_mean", "weight_max", "context_frac",
              "teacher_logratio", "distill_frac", "distill_loss", "lambda", "lr", "step_time")


@pytest.fixture(scope="module")
def grpo(work):
    finish(train(work, "grpo"), work, "grpo")
    return work


@pytest.fixture(scope="module")
def rlrt(work):
    """RLRT frozen after step 1's checkpoint, killed with its Ray cluster, then rerun to the end."""
    proc = train(work, "rlrt", freeze_after=1)
    marker = work / "rl_rlrt.verl" / "ckpt" / "frozen_at_1"
    deadline = time.time() + RUN_TIMEOUT
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(1)
    frozen = marker.exists()
    _kill_session(proc)
    assert frozen, "the RLRT run never reached step 1's checkpoint:\n" + (work / "rlrt.log").read_text()[-6000:]
    killed = {"history": history_lines(work, "rlrt"), "out_exists": (work / "rl_rlrt").exists(),
              "tracker": (work / "rl_rlrt.verl" / "ckpt" / "latest_checkpointed_iteration.txt").read_text().strip()}
    marker.unlink()
    finish(train(work, "rlrt"), work, "rlrt")
    return work, killed


@pytest.fixture(scope="module")
def sdpo(work):
    finish(train(work, "sdpo"), work, "sdpo")
    return work


def _check_history(rows: list[dict]) -> None:
    assert [r["step"] for r in rows] == list(range(STEPS))
    for r in rows:
        for key in LOCAL_KEYS:
            assert key in r, key
        assert 0.0 <= r["reward_mean"] <= 1.0 and r["grad_norm"] is not None and r["grad_norm"] > 0


def test_grpo_two_steps_and_verls_estimator_equals_the_local_engines(grpo):
    from rlrt.methods.advantages import group_advantages

    rows = metrics(grpo, "grpo")["history"]
    _check_history(rows)
    assert all(r["weight_mean"] == 1.0 and r["teacher_logratio"] == 0.0 for r in rows)  # no teacher
    for step in range(STEPS):
        d = torch.load(grpo / "dump_grpo" / f"step_{step}.pt", weights_only=False)
        mask = d["response_mask"].float()
        G, n = d["rewards"].shape
        local = group_advantages(d["rewards"], False).reshape(-1)[:, None] * mask  # GRPO: no std normalisation
        assert d["verl_advantages"] is not None
        assert torch.allclose(d["verl_advantages"], local, atol=1e-6)  # verl's own GRPO estimator
        assert torch.allclose(d["token_adv"], local, atol=1e-6)  # what our step handed verl's update
        assert d["rewards"].std() > 0  # mixed groups: the comparison is not 0 == 0
    # Hydra's run folder is the job's own (hydra_run_dir), not outputs/<date>/<time>/ under the working directory
    assert not (grpo / "outputs").exists() and list(grpo.rglob("hydra/.hydra/config.yaml"))


def test_rlrt_teacher_pass_kill_and_resume(rlrt):
    work, killed = rlrt
    # the kill: step 1 trained and checkpointed, step 2 not started, no merged model
    assert [r["step"] for r in killed["history"]] == [0] and killed["tracker"] == "1" and not killed["out_exists"]
    raw = history_lines(work, "rlrt")
    assert [r["step"] for r in raw] == [0, 1]  # the rerun trained step 2 only (a fresh start would repeat step 1)
    assert f"Resuming from {work / 'rl_rlrt.verl' / 'ckpt' / 'global_step_1'}" in (work / "rlrt.log").read_text()
    rows = metrics(work, "rlrt")["history"]
    _check_history(rows)
    assert all(r["context_frac"] > 0 for r in rows) and any(r["teacher_logratio"] != 0.0 for r in rows)
    assert any(r["weight_max"] != 1.0 for r in rows)  # and reweighted tokens (Eq. 7)
    assert metrics(work, "rlrt")["summary"]["steps"] == STEPS
    assert not (work / "rl_rlrt.verl" / "ckpt").exists()  # a finished run's resume state is removed


def test_rlrt_first_step_advantages_equal_the_local_engines(rlrt):
    """Step 1 (θ_old = the initial checkpoint): the local engine's teacher view and ``shape_advantages`` on the
    rollouts verl sampled give the advantages verl's update received (up to verl's log-prob numerics)."""
    import smoke

    from rlrt.backends.local.model import load_checkpoint
    from rlrt.backends.local.rl import LocalTeacher
    from rlrt.backends.local.rollout import Rollouts
    from rlrt.methods.registry import get_method
    from rlrt.methods.shaping import rows_needing_teacher, shape_advantages
    from rlrt.teacher import problem_contexts

    work, _ = rlrt
    d = torch.load(work / "dump_rlrt" / "step_0.pt", weights_only=False)
    model, tok = load_checkpoint(work / "tiny")
    spec = get_method("rlrt")
    settings = spec.make_settings(smoke.job_config("rlrt", work / "tiny")["method_cfg"])
    G, n = d["rewards"].shape
    ro = Rollouts(None, None, d["response_ids"], d["response_mask"], [t for g in d["texts"] for t in g])
    temperature = float(smoke.job_config("rlrt", work / "tiny")["rl"]["temperature"])
    teacher = LocalTeacher(model, tok, d["user_msgs"], ro, n, temperature, 16, old_logp=d["old_logp"],
                           needed=lambda has, want: rows_needing_teacher(spec, settings, d["rewards"], has, want))
    sh = shape_advantages(spec, settings, d["rewards"], d["texts"],
                          problem_contexts(settings.context, d["problems"], "train"), d["old_logp"], None,
                          d["response_mask"], 0, teacher.score)
    local = sh.token_adv * d["response_mask"].float()
    assert teacher.n_scored > 0
    assert torch.allclose(d["token_adv"], local, atol=1e-2), float((d["token_adv"] - local).abs().max())
    assert not torch.allclose(local, sh.token_adv.new_zeros(local.shape))


def test_sdpo_two_steps_distil(sdpo):
    rows = metrics(sdpo, "sdpo")["history"]
    _check_history(rows)
    assert all(r["distill_frac"] > 0 for r in rows)
    assert any(r["distill_loss"] > 0 for r in rows)  # WorkerLoss's term reached the history


def test_merged_rlrt_checkpoint_evaluated_by_the_local_evaluator(rlrt):
    from rlrt.backends.local.model import load_checkpoint

    work, _ = rlrt
    merged, _ = load_checkpoint(work / "rl_rlrt")
    base, _ = load_checkpoint(work / "tiny")
    diff = max(float((a - b).abs().max()) for a, b in zip(merged.state_dict().values(), base.state_dict().values()))
    assert diff > 0  # two updates reached the merged weights
    out = work / "eval_rlrt.json"
    cfg = {"backbone": "tiny", "method": "rlrt", "seed": 0, "n": 4, "ks": [1, 4], "max_new_tokens": 10,
           "temperature": 0.7, "top_p": 0.8, "top_k": 20, "engine": "local", "backend": "verl",
           "grader_workers": 1, "task": "arithmetic", "batch_size": 16}
    subprocess.run([sys.executable, "-m", "rlrt.stages.evaluate", "--cfg", json.dumps(cfg), "--model",
                    str(work / "rl_rlrt"), "--data", str(work / "cpu_test.parquet"), "--out", str(out)],
                   check=True, cwd=ROOT, timeout=600)
    res = json.loads(out.read_text())
    m = res["splits"]["cpu_test"]["metrics"]
    assert res["n"] == 4 and set(m) >= {"avg@4", "pass@1", "pass@4"}
    assert 0.0 < m["avg@4"] <= 100.0  # percent: the tiny model answers about half of its four problems
