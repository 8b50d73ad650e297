"""The verl RL run's guards around verl's trainer (rlrt.backends.verl.train), on CPU with stand-ins.

verl's trainer and the model merger are replaced by stand-ins that write what they would write (checkpoint
folders in verl's layout, the tracker file, history lines); everything else is the backend's own code:

* a requeue after the final step's checkpoint was saved merges, never trains step N+1;
* checkpoints are pruned to the latest (whole) and the rl.save_steps ones (without optimizer state);
* a model whose context cannot hold max_prompt_length + max_response_length is refused before anything starts;
* with tracking on, the MLflow run id is kept beside the resume state and exported as MLFLOW_RUN_ID, the same
  on a requeue, and verl's own MLflow logger (verl.utils.tracking.Tracking) resumes that run (a file store);
* Ray's CPUs come from SLURM_CPUS_PER_TASK.
What only a GPU run can confirm: that verl's real trainer, inside Ray, behaves as the stand-in does.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import subprocess

import pytest

from rlrt.backends.verl import train as vt

REAL_RUN = subprocess.run
from rlrt.io import write_jsonl

ROOT = Path(__file__).resolve().parents[1]


def fake_checkpoint(ckpt: Path, step: int, world: int = 2) -> None:
    """One verl FSDP checkpoint folder (the file names verl 0.9.1's FSDPCheckpointManager writes)."""
    actor = ckpt / f"global_step_{step}" / "actor"
    (actor / "huggingface").mkdir(parents=True, exist_ok=True)
    (actor / "huggingface" / "config.json").write_text("{}")
    (actor / "fsdp_config.json").write_text(json.dumps({"world_size": world}))
    for r in range(world):
        for kind in ("model", "optim", "extra_state"):
            (actor / f"{kind}_world_size_{world}_rank_{r}.pt").write_bytes(b"x" * 10)
    (ckpt / f"global_step_{step}" / "data.pt").write_bytes(b"d")
    (ckpt / vt.TRACKER).write_text(str(step))


def test_prune_keeps_the_latest_and_the_save_steps_weights(tmp_path):
    ckpt = tmp_path / "ckpt"
    for k in (10, 20, 30, 40, 50, 60):
        fake_checkpoint(ckpt, k)
    removed = vt.prune_checkpoints(ckpt, [20, 50, 150])
    assert sorted(p.name for p in ckpt.glob("global_step_*")) == ["global_step_20", "global_step_50",
                                                                  "global_step_60"]
    for k in (20, 50):  # what the merger reads stays, the resume-only state goes
        names = sorted(p.name for p in (ckpt / f"global_step_{k}" / "actor").iterdir())
        assert names == ["fsdp_config.json", "huggingface", "model_world_size_2_rank_0.pt",
                         "model_world_size_2_rank_1.pt"]
    assert len(list((ckpt / "global_step_60" / "actor").glob("optim_*"))) == 2  # resume needs the latest whole
    assert len(removed) == 3 + 2 * 4  # folders 10, 30, 40; optim + extra state of both ranks at 20 and 50
    assert vt.prune_checkpoints(ckpt, [20, 50]) == []  # idempotent
    (ckpt / vt.TRACKER).unlink()  # no tracker (a save in progress, or none yet): nothing is touched
    fake_checkpoint(ckpt, 70)
    (ckpt / vt.TRACKER).unlink()
    assert vt.prune_checkpoints(ckpt, []) == [] and (ckpt / "global_step_60").is_dir()


def test_finished_step(tmp_path):
    ckpt = tmp_path / "ckpt"
    assert not vt.finished_step(ckpt, 200) and vt.latest_step(ckpt) is None
    fake_checkpoint(ckpt, 190)
    assert not vt.finished_step(ckpt, 200) and vt.latest_step(ckpt) == 190
    fake_checkpoint(ckpt, 200)
    assert vt.finished_step(ckpt, 200)
    (ckpt / vt.TRACKER).write_text("210")  # a tracker pointing at a missing folder: verl would not resume from it
    assert vt.latest_step(ckpt) is None and not vt.finished_step(ckpt, 200)


# ---- train.run with a stand-in trainer and merger ----

STEPS, SAVE_FREQ, SAVE_STEPS = 6, 2, [4]


def job_cfg(tracking=None) -> dict:
    from rlrt.config import load_overlay
    from rlrt.plan import run_config

    cfg = load_overlay(ROOT / "config" / "paper.yaml")
    backbone = "Qwen3-4B-Base"
    v = copy.deepcopy(cfg["verl"])
    v["save_freq"] = SAVE_FREQ
    return {"rl": {**cfg["rl"], "steps": STEPS, "save_steps": SAVE_STEPS}, "method": "grpo", "run": "grpo",
            "method_cfg": run_config(cfg, backbone, "grpo"), "backbone": {"name": backbone, "kind": "base"},
            "max_response_length": 20480, "seed": 1, "grader_workers": 1, "tracking": tracking,
            "backend": "verl", "verl": v, "gpus": 2}


@pytest.fixture
def model(tmp_path):
    d = tmp_path / "Qwen3-4B-Base"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "qwen3", "max_position_embeddings": 32768,
                                               "rope_theta": 1000000, "rope_scaling": None}))
    return d


@pytest.fixture
def data(tmp_path):
    p = tmp_path / "train.jsonl"
    write_jsonl(p, [{"id": f"q{i}", "question": f"What is {i} + 1?", "answer": str(i + 1), "solution": "",
                     "source": "t"} for i in range(4)])
    return p


class StandInTrainer:
    """``subprocess.run`` for ``python -m rlrt.backends.verl.trainer``: trains from the saved step (verl's
    resume_mode=auto) to ``stop_at``, saving every SAVE_FREQ steps and pruning as RLRTRayTrainer does; records
    its overrides and environment. Every other command (the merger) is passed to ``merged``."""

    def __init__(self, stop_at=STEPS):
        self.calls, self.merged, self.stop_at = [], [], stop_at

    def __call__(self, cmd, check=True, env=None, **kw):
        if cmd[0] != sys.executable:  # e.g. git (the MLflow run's commit tag)
            return REAL_RUN(cmd, check=check, env=env, **kw)
        if cmd[1:3] == ["-m", "verl.model_merger"]:
            src, dst = cmd[cmd.index("--local_dir") + 1], Path(cmd[cmd.index("--target_dir") + 1])
            dst.mkdir(parents=True, exist_ok=True)
            (dst / "config.json").write_text(json.dumps({"from": src}))
            self.merged.append(src)
            return
        assert cmd[1:3] == ["-m", "rlrt.backends.verl.trainer"]
        ovr = dict(o.lstrip("+").split("=", 1) for o in cmd[3:])
        self.calls.append((ovr, dict(env)))
        ckpt = Path(ovr["trainer.default_local_dir"].strip("'"))
        history = Path(ovr["rlrt.history_path"].strip("'"))
        start = vt.latest_step(ckpt) or 0
        for step in range(start + 1, self.stop_at + 1):  # verl's fit: load step k, run k+1, ...
            with open(history, "a") as f:
                f.write(json.dumps({"step": step - 1, "reward_mean": 0.1 * step}) + "\n")
            if step % SAVE_FREQ == 0 or step == STEPS:
                fake_checkpoint(ckpt, step)
                vt.prune_checkpoints(ckpt, SAVE_STEPS)
        if self.stop_at < STEPS:
            raise SystemExit("killed")  # the job is killed before the end (SLURM preemption)


def run(model, data, tmp_path, trainer, tracking=None):
    out = tmp_path / "runs" / "model"
    vt.run(job_cfg(tracking), model=str(model), data=str(data), out=str(out), metrics=str(tmp_path / "m.json"),
           checkpoints=str(tmp_path / "runs" / "ckpts"), gpus=2)
    return out


def test_a_requeue_after_the_last_save_merges_and_never_trains_again(model, data, tmp_path, monkeypatch):
    trainer = StandInTrainer()
    monkeypatch.setattr(vt.subprocess, "run", trainer)
    ckpt = tmp_path / "runs" / "model.verl" / "ckpt"
    # the job was killed after verl saved the final step, before the merge: the requeued job only merges
    monkeypatch.setattr(vt, "merge_checkpoint", lambda *a: (_ for _ in ()).throw(SystemExit("killed in merge")))
    with pytest.raises(SystemExit, match="killed in merge"):
        run(model, data, tmp_path, trainer)
    assert len(trainer.calls) == 1 and vt.finished_step(ckpt, STEPS)
    history = (ckpt.parent / "history.jsonl").read_text()
    monkeypatch.undo()
    monkeypatch.setattr(vt.subprocess, "run", trainer)
    out = run(model, data, tmp_path, trainer)
    assert len(trainer.calls) == 1  # not started again: no step N+1
    assert (ckpt.parent / "history.jsonl").read_text() == history
    m = json.loads((tmp_path / "m.json").read_text())
    assert [h["step"] for h in m["history"]] == list(range(STEPS)) and m["summary"]["steps"] == STEPS
    assert trainer.merged == [str(ckpt / f"global_step_{STEPS}" / "actor"), str(ckpt / "global_step_4" / "actor")]
    assert (out / "config.json").is_file() and (tmp_path / "runs" / "ckpts" / "step_4" / "config.json").is_file()
    assert not ckpt.exists()  # removed once the run is complete


def test_a_killed_run_resumes_and_keeps_only_what_it_needs(model, data, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "12")
    killed = StandInTrainer(stop_at=5)
    monkeypatch.setattr(vt.subprocess, "run", killed)
    with pytest.raises(SystemExit, match="killed"):
        run(model, data, tmp_path, killed)
    ckpt = tmp_path / "runs" / "model.verl" / "ckpt"
    assert sorted(p.name for p in ckpt.glob("global_step_*")) == ["global_step_4"]  # 2 pruned; 4 = latest
    ovr, _ = killed.calls[0]
    assert ovr["ray_kwargs.ray_init.num_cpus"] == "12" and ovr["ray_kwargs.ray_init.num_gpus"] == "2"
    assert ovr["actor_rollout_ref.rollout.max_model_len"] == str(2048 + 20480)
    trainer = StandInTrainer()
    monkeypatch.setattr(vt.subprocess, "run", trainer)
    run(model, data, tmp_path, trainer)
    assert len(trainer.calls) == 1 and trainer.merged[-1].endswith("global_step_4/actor")
    m = json.loads((tmp_path / "m.json").read_text())
    assert [h["step"] for h in m["history"]] == list(range(STEPS))


def test_a_model_whose_context_cannot_hold_the_rollout_is_refused(model, data, tmp_path, monkeypatch):
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 16384}))
    trainer = StandInTrainer()
    monkeypatch.setattr(vt.subprocess, "run", trainer)
    with pytest.raises(ValueError, match=r"verl.max_prompt_length \(2048\) \+ backbones.Qwen3-4B-Base."
                                         r"max_response_length \(20480\) = 22528 tokens, more than the model's "
                                         r"context of 16384"):
        run(model, data, tmp_path, trainer)
    assert not trainer.calls and not (tmp_path / "runs" / "model.verl").exists()


def test_the_mlflow_run_survives_a_requeue(model, data, tmp_path, monkeypatch):
    """A SQLite file store (MLflow 3 refuses its old folder store): the trainer's environment carries the same
    MLFLOW_RUN_ID before and after the requeue, and verl's own MLflow logger attaches to that run instead of
    opening a second one."""
    pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking = {"enabled": True, "experiment": "rlrt-paper", "uri": uri}
    killed = StandInTrainer(stop_at=3)
    monkeypatch.setattr(vt.subprocess, "run", killed)
    with pytest.raises(SystemExit):
        run(model, data, tmp_path, killed, tracking)
    rid = killed.calls[0][1]["MLFLOW_RUN_ID"]
    assert (tmp_path / "runs" / "model.verl" / "mlflow_run_id").read_text().strip() == rid
    trainer = StandInTrainer()
    monkeypatch.setattr(vt.subprocess, "run", trainer)
    run(model, data, tmp_path, trainer, tracking)
    assert trainer.calls[0][1]["MLFLOW_RUN_ID"] == rid and trainer.calls[0][1]["MLFLOW_TRACKING_URI"] == uri

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("rlrt-paper")
    assert [r.info.run_id for r in client.search_runs([exp.experiment_id])] == [rid]
    assert client.get_run(rid).info.run_name == "rl/Qwen3-4B-Base/grpo"
    pytest.importorskip("verl")
    from verl.utils.tracking import Tracking

    for step in (1, 2):  # the first job and its requeue, each as verl's trainer starts its logger
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("MLFLOW_RUN_ID", rid)
        t = Tracking(project_name="rlrt-paper", experiment_name="rl/Qwen3-4B-Base/grpo", default_backend=["mlflow"],
                     config={"trainer": {"total_training_steps": STEPS}})
        t.log({"critic/score/mean": 0.5 * step}, step=step)
        del t
        import mlflow

        mlflow.end_run()
    assert [r.info.run_id for r in client.search_runs([exp.experiment_id])] == [rid]
    assert [m.step for m in client.get_metric_history(rid, "critic/score/mean")] == [1, 2]


def test_tracking_off_or_without_a_store_sets_no_run_id(tmp_path, monkeypatch):
    from rlrt.tracking import persistent_run_id

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert persistent_run_id(tmp_path / "id", None, "e", "r") is None
    assert persistent_run_id(tmp_path / "id", {"enabled": False, "uri": "file:///x"}, "e", "r") is None
    assert persistent_run_id(tmp_path / "id", {"enabled": True}, "e", "r") is None  # no store: a warning
    assert not (tmp_path / "id").exists()
