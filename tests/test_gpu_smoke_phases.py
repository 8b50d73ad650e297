"""bench/gpu_smoke.py's orchestration on CPU: training and evaluation as separate processes, the evaluation
started only after the GPU has no compute process left.

The phase commands are stand-in Python one-liners and the GPU probe a scripted sequence (no GPU here): what this
checks is the order (train process exits -> GPU released -> eval process starts), the refusals (a failed
training phase or a GPU that stays busy starts no evaluation), nvidia-smi's output parsing, and that ``--phase
all`` launches this script's own ``--phase train`` / ``--phase eval``. That vLLM then gets the GPU only a GPU run
can confirm.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import ROOT, bench_script


@pytest.fixture(scope="module")
def smoke():
    return bench_script("gpu_smoke", "gpu_smoke_phases")


def stub(path: Path, code: int = 0) -> list[str]:
    """A phase command: a separate Python process that appends its name to ``path`` and exits with ``code``."""
    return [sys.executable, "-c", f"import sys; open({str(path)!r}, 'a').write({path.stem!r} + '\\n'); "
                                  f"sys.exit({code})"]


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def test_eval_starts_in_its_own_process_after_the_gpu_is_released(smoke, tmp_path):
    train, ev = stub(tmp_path / "train.txt"), stub(tmp_path / "eval.txt")
    probes = iter([[4242, 4243], [4242], []])  # Ray's workers still exiting, then gone
    clock, events = Clock(), []

    def probe():
        pids = next(probes)
        events.append(("probe", pids, (tmp_path / "train.txt").exists(), (tmp_path / "eval.txt").exists()))
        return pids

    waits = smoke.run_phases([train, ev], wait=lambda: smoke.wait_gpu_released(probe, timeout_s=60, poll_s=2,
                                                                                  sleep=clock.sleep, clock=clock))
    assert waits == [4.0]  # two polls of 2 s
    assert [e[1] for e in events] == [[4242, 4243], [4242], []]
    assert all(trained and not evaluated for _, _, trained, evaluated in events)  # train done, eval not begun
    assert (tmp_path / "eval.txt").read_text() == "eval\n"


def test_a_busy_gpu_or_a_failed_training_starts_no_evaluation(smoke, tmp_path):
    clock = Clock()
    with pytest.raises(SystemExit, match=r"compute processes \[4242\] 10 s after training ended"):
        smoke.run_phases([stub(tmp_path / "train.txt"), stub(tmp_path / "eval.txt")],
                         wait=lambda: smoke.wait_gpu_released(lambda: [4242], timeout_s=10, poll_s=2,
                                                              sleep=clock.sleep, clock=clock))
    assert not (tmp_path / "eval.txt").exists()
    waited = []
    with pytest.raises(SystemExit, match=r"phase .* failed \(exit status 3\)"):
        smoke.run_phases([stub(tmp_path / "train2.txt", code=3), stub(tmp_path / "eval2.txt")],
                         wait=lambda: waited.append(1) or 0.0)
    assert not waited and not (tmp_path / "eval2.txt").exists()


def test_gpu_pids_reads_nvidia_smi(smoke, monkeypatch):
    seen = []

    def fake_run(cmd, **kw):
        seen.append(cmd)
        return SimpleNamespace(returncode=0, stdout="123\n456\n")

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-abc")
    assert smoke.gpu_pids(fake_run) == [123, 456]
    assert seen[0][-2:] == ["-i", "GPU-abc"] and "--query-compute-apps=pid" in seen[0]
    assert smoke.gpu_pids(lambda cmd, **kw: SimpleNamespace(returncode=0, stdout="")) == []

    def missing(cmd, **kw):
        raise FileNotFoundError("nvidia-smi")

    assert smoke.gpu_pids(missing) is None
    assert smoke.wait_gpu_released(lambda: None) == pytest.approx(0.0, abs=1.0)  # no nvidia-smi: warn, no wait


def test_phase_all_launches_train_then_eval_of_this_script(smoke, tmp_path, monkeypatch):
    model = tmp_path / "model0"
    model.mkdir()
    monkeypatch.setenv("RLRT_SMOKE_MODEL", str(model))
    monkeypatch.setattr(smoke, "preconditions", lambda m: m)
    launched = []

    def fake_phases(cmds, wait):
        launched.extend(cmds)
        work = Path(cmds[0][cmds[0].index("--work") + 1])
        (work / "smoke_train.json").write_text(json.dumps({"train_wall_s": 10.0, "step_times": [4.0, 3.0]}))
        (work / "smoke_eval.json").write_text(json.dumps({"evaluated": "m", "eval_wall_s": 5.0,
                                                          "eval": {"avg@16": 50.0}}))
        return [1.5]

    monkeypatch.setattr(smoke, "run_phases", fake_phases)
    assert smoke.main(["--work", str(tmp_path / "w"), "--method", "sdpo"]) == 0
    script = str(ROOT / "bench" / "gpu_smoke.py")
    assert [c[1:4] for c in launched] == [[script, "--phase", "train"], [script, "--phase", "eval"]]
    assert all(c[0] == sys.executable and c[c.index("--method") + 1] == "sdpo" for c in launched)
    summary = json.loads((tmp_path / "w" / "gpu_smoke.json").read_text())
    assert summary["gpu_release_wait_s"] == 1.5 and summary["step_times"] == [4.0, 3.0]
    assert summary["eval"] == {"avg@16": 50.0} and summary["eval_requests"] == 8 * 16
