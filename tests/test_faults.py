"""Faults: kill -9 of training stages at random points (some inside a checkpoint / resume-state write) and a rerun
give the uninterrupted run's weights and metrics; a corrupt resume state or checkpoint is never trained on; a
failing MLflow store costs a warning, never the job's outputs; a second snakemake in a locked folder says what to
do."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rlrt.backends.local.lm import chat_example, train_lm
from rlrt.backends.local.resume import TRAILER_TAG, Resumable, read_state, write_state

from test_resume import ROWS, Killed, kill_at, killed_student_sft, model, same_weights, tok  # noqa: F401 (fixtures)

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def root_logging():
    """A stage's ``logging.basicConfig(force=True)`` binds the root logger to this test's captured stderr: undo it,
    so later tests do not log into a closed stream."""
    handlers, level = logging.root.handlers[:], logging.root.level
    yield
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)


# ---------------------------------------------------------------- kill -9 at random points


def test_kill_9_at_random_points_then_rerun_gives_the_uninterrupted_result(tmp_path):
    """16 trials over the student SFT (LM trainer), policy RL (RLRT; SDPO with an EMA teacher) and the RLT teacher's
    RL stages, each killed with SIGKILL once or twice at a seeded random step or inside a resume-state / checkpoint
    write, then rerun to completion (tests/kill_driver.py, forked children of one interpreter)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    proc = subprocess.run([sys.executable, str(HERE / "kill_driver.py"), str(tmp_path), "16", "0"],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    trials, summary = lines[:-1], lines[-1]
    print("\n" + "\n".join(json.dumps(t) for t in lines))  # the trial log (pytest -s)
    assert summary["summary"] and summary["trials"] == len(trials) == 16
    # every stage's reference run has non-zero gradients (its weights change), so a lost step would show (35 §7)
    assert all(summary["reference_grad_norm_max"][s] > 0 for s in {t["stage"] for t in trials}), summary
    for t in trials:
        assert t["weights_equal"] and t["numbers_equal"], t
        assert t["rows_ok"], t  # one metrics row per step: none duplicated, none missing
        # no resume state, partial folder or a killed write's temp folder is left (the rerun's write removes it)
        assert t["left_over"] == [], t
    landed = [k for t in trials for k in t["kills"] if k["landed"]]
    assert len(landed) >= 12 and summary["kills_landed"] == len(landed)
    window = [k for k in landed if k["in_write_window"]]
    assert {k["target"].split("#")[0] for k in window} == {"state", "checkpoint"}
    assert len(window) >= 4
    # a kill in a resume-state write leaves its temp file: the kill landed between the write and the rename
    assert all(any(p.endswith("resume_state.pt.tmp") for p in k["tmp_left"]) for k in window
               if k["target"].startswith("state"))
    assert {t["stage"] for t in trials} == {"sft", "rl_rlrt", "rl_sdpo", "teacher_rl"}


# ---------------------------------------------------------------- corrupt resume state / checkpoint


def saved_state(tok, model, tmp_path) -> str:  # noqa: F811
    """A real resume state: an LM run killed during step 4 (state of 3 finished steps, saved every step)."""
    examples = [chat_example(tok, r["question"], r["solution"], loss_on_prompt=False) for r in ROWS]
    path = str(tmp_path / "s.pt")
    with pytest.raises(Killed):
        train_lm(model, tok, lambda rng, b: rng.sample(examples, b), steps=6, batch_size=2, lr=3e-3, warmup_steps=1,
                 on_step=kill_at(3), log_every=1, resume=Resumable(path, every=1))
    return path


def corrupt(path: str, how: str) -> None:
    blob = Path(path).read_bytes()
    rng = random.Random(0)
    if how == "truncated":
        blob = blob[: len(blob) // 2]
    elif how == "last_bytes_cut":
        blob = blob[:-10]
    elif how == "bytes_overwritten":  # same size, 64 random bytes in the middle (torch.load alone accepts this)
        mid = len(blob) // 2
        blob = blob[:mid] + bytes(rng.randrange(256) for _ in range(64)) + blob[mid + 64:]
    elif how == "empty":
        blob = b""
    elif how == "random_file":
        blob = bytes(rng.randrange(256) for _ in range(4096))
    elif how == "plain_torch_save":  # a state without the checksum trailer
        torch.save(torch.load(path, weights_only=False), path)
        return
    elif how == "checksummed_garbage":  # a valid checksum over bytes that do not unpickle
        payload = bytes(rng.randrange(256) for _ in range(4096))
        blob = payload + TRAILER_TAG + hashlib.sha256(payload).hexdigest().encode() + b"\n"
    elif how == "rows_do_not_match_steps":  # a valid checksum over an inconsistent state
        st = read_state(path)
        st["history"] = st["history"] + st["history"][-1:]
        write_state(path, st)
        return
    Path(path).write_bytes(blob)


REASONS = {"truncated": "no checksum trailer", "last_bytes_cut": "no checksum trailer", "empty": "no checksum trailer",
           "random_file": "no checksum trailer", "plain_torch_save": "no checksum trailer",
           "bytes_overwritten": "checksum mismatch", "checksummed_garbage": "unreadable (UnpicklingError: ",
           "rows_do_not_match_steps": "4 metrics rows for 3 finished steps"}


@pytest.mark.parametrize("how", sorted(REASONS))
def test_a_corrupt_resume_state_is_detected_and_set_aside(tok, model, tmp_path, how, caplog):  # noqa: F811
    import copy

    fresh, untouched = copy.deepcopy(model), copy.deepcopy(model)
    path = saved_state(tok, model, tmp_path)
    assert read_state(path)["step"] == 3  # intact before the damage
    corrupt(path, how)
    opt = torch.optim.AdamW(fresh.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    with caplog.at_level(logging.WARNING, logger="rlrt.resume"):
        assert Resumable(path, 1).load(fresh, opt, sched, random.Random(0)) == (0, [])
    assert same_weights(fresh, untouched) and not same_weights(model, untouched)  # the trained weights: not loaded
    assert not opt.state
    msg = [r.getMessage() for r in caplog.records if r.name == "rlrt.resume"]
    assert len(msg) == 1 and msg[0].startswith(f"ignoring corrupt resume state {path}: {REASONS[how]}")
    assert msg[0].endswith("starting from scratch") and "\n" not in msg[0]
    assert not os.path.exists(path) and os.path.exists(f"{path}.corrupt")  # set aside, never re-read


def test_a_stage_with_a_corrupt_resume_state_restarts_from_scratch(tok, model, tmp_path, monkeypatch,  # noqa: F811
                                                                   capfd):
    """The student-SFT stage dies after 3 steps; its saved state is then damaged. The rerun logs it, trains from
    scratch to the uninterrupted run's weights and metrics, and clears the set-aside file with its outputs."""
    from rlrt.backends.local.model import load_checkpoint

    run, state = killed_student_sft(tok, model, tmp_path, monkeypatch)
    corrupt(str(state), "bytes_overwritten")
    capfd.readouterr()
    run("killed")
    err = capfd.readouterr().err
    assert f"ignoring corrupt resume state {state}: checksum mismatch" in err and "resuming from" not in err
    full, rerun = (json.loads((tmp_path / f"{o}.json").read_text())["history"] for o in ("full", "killed"))
    assert [h["step"] for h in rerun] == list(range(5))
    assert [h["loss"] for h in rerun] == [h["loss"] for h in full]
    assert same_weights(load_checkpoint(tmp_path / "killed")[0], load_checkpoint(tmp_path / "full")[0])
    assert not state.exists() and not Path(f"{state}.corrupt").exists()


def sft_stage(tmp_path, base: Path, tracking: dict | None = None) -> list[str]:
    """The student-SFT stage (2 steps) from checkpoint ``base``; returns its command line's outputs."""
    from rlrt.stages import rlt_student_sft

    traces = tmp_path / "traces.jsonl"
    traces.write_text("".join(json.dumps({"id": f"q{k}", **r}) + "\n" for k, r in enumerate(ROWS)))
    cfg = {"seed": 0, "tracking": tracking, "student": "S", "data": "reference",
           "student_sft": {"steps": 2, "batch_size": 2, "lr": 3e-3}}
    out, metrics = tmp_path / "out", tmp_path / "out.json"
    rlt_student_sft.main(["--cfg", json.dumps(cfg), "--model", str(base), "--traces", str(traces), "--out", str(out),
                          "--metrics", str(metrics)])
    return [str(out), str(metrics)]


def test_a_truncated_checkpoint_stops_the_stage(tok, model, tmp_path):  # noqa: F811
    """The checkpoint's checksums.sha256 (written by save_checkpoint) catches the truncation before loading; without
    the manifest (a hub checkpoint) safetensors' own check still stops the stage."""
    from safetensors import SafetensorError

    from rlrt.backends.local.model import CHECKSUMS, save_checkpoint

    save_checkpoint(model, tok, tmp_path / "base")
    weights = tmp_path / "base" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(ValueError, match=r"base: model.safetensors does not match its SHA-256 in checksums.sha256"):
        sft_stage(tmp_path, tmp_path / "base")
    (tmp_path / "base" / CHECKSUMS).unlink()
    with pytest.raises(SafetensorError, match="incomplete metadata"):
        sft_stage(tmp_path, tmp_path / "base")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.json").exists()


def test_changed_checkpoint_bytes_are_caught_by_the_checksums(tok, model, tmp_path):  # noqa: F811
    """Finite garbage (bytes that decode to ordinary floats) would load silently: the manifest names the file."""
    from rlrt.backends.local.model import save_checkpoint

    save_checkpoint(model, tok, tmp_path / "base")
    weights = tmp_path / "base" / "model.safetensors"
    good = weights.read_bytes()
    blob = bytearray(good)
    blob[-2000:-1000] = bytes(range(200)) * 5
    weights.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=r"model.safetensors does not match its SHA-256 .* rerun the job that wrote it"):
        sft_stage(tmp_path, tmp_path / "base")
    weights.write_bytes(good)
    (tmp_path / "base" / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match=r"tokenizer.json is missing"):
        sft_stage(tmp_path, tmp_path / "base")
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_with_nan_weights_is_refused(tok, model, tmp_path):  # noqa: F811
    """Bytes overwritten with 0xff decode to NaN floats: in a checkpoint without checksums (as a hub one), the loop
    refuses them before the first step."""
    from rlrt.backends.local.model import CHECKSUMS, save_checkpoint

    save_checkpoint(model, tok, tmp_path / "base")
    (tmp_path / "base" / CHECKSUMS).unlink()
    weights = tmp_path / "base" / "model.safetensors"
    blob = weights.read_bytes()
    weights.write_bytes(blob[:-4096] + b"\xff" * 4000 + blob[-96:])
    with pytest.raises(ValueError, match=r"weights hold NaN or inf before step 0; refusing to train"):
        sft_stage(tmp_path, tmp_path / "base")
    assert not (tmp_path / "out").exists()


def test_temp_folders_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    from rlrt.io import atomic_dir

    stale = tmp_path / ".model.abc123.tmp"
    stale.mkdir()
    (stale / "half.bin").write_bytes(b"x")
    other = tmp_path / ".other.abc123.tmp"
    other.mkdir()
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "w.bin").write_bytes(b"ok")
    assert (tmp_path / "model" / "w.bin").read_bytes() == b"ok"
    assert not stale.exists() and other.exists()  # only the same target's leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.abc123.tmp", "model"]



def test_temp_files_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    """A job killed between its temp file and the rename (hashing for the manifest widens that window) leaves
    ``.metrics.json.<random>.tmp``; the rerun's write of the same file removes it, and only it."""
    from rlrt.io import write_json

    stale = tmp_path / ".metrics.json.cam8xer8.tmp"
    stale.write_text('{"half": ')
    other = tmp_path / ".summary.json.cam8xer8.tmp"
    other.write_text("{}")
    write_json(tmp_path / "metrics.json", {"ok": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".summary.json.cam8xer8.tmp", "metrics.json"]


# ---------------------------------------------------------------- MLflow store failures


def test_a_store_replaced_by_a_non_database_file_costs_a_warning_not_the_outputs(tok, model, tmp_path,  # noqa: F811
                                                                                  capfd):
    from rlrt.backends.local.model import save_checkpoint

    save_checkpoint(model, tok, tmp_path / "base")
    db = tmp_path / "mlflow" / "mlflow.db"
    db.parent.mkdir()
    db.write_bytes(b"not a database" * 300)
    out, metrics = sft_stage(tmp_path, tmp_path / "base",
                             {"uri": f"sqlite:///{db}", "experiment": "x", "artifact_root": str(tmp_path / "art")})
    assert (Path(out) / "model.safetensors").exists()
    assert [h["step"] for h in json.loads(Path(metrics).read_text())["history"]] == [0, 1]
    err = capfd.readouterr().err
    assert (f"mlflow: store sqlite:///{db} failed (DatabaseError: file is not a database); not logged: run "
            f"'rlt/sft/S/reference'; ") in err
    assert "The job's outputs on disk are complete." in err


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real SQLite store with its experiment (creating one takes a few seconds: shared by the tests below)."""
    from rlrt.tracking import ensure_experiment

    root = tmp_path_factory.mktemp("mlflow")
    tracking = {"uri": f"sqlite:///{root}/mlflow.db", "experiment": "faults", "artifact_root": str(root / "art")}
    ensure_experiment(tracking["uri"], "faults", tracking["artifact_root"])
    return tracking


HISTORY = [{"step": 0, "loss": 1.5}, {"step": 1, "loss": 1.25}]


def test_a_store_failing_mid_run_warns_with_what_was_not_logged(store, tmp_path, monkeypatch, caplog):
    from mlflow import MlflowClient

    from rlrt.tracking import log_run

    artifact = tmp_path / "metrics.json"
    artifact.write_text("{}")

    def disk_full(self, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(MlflowClient, "log_artifact", disk_full)
    with caplog.at_level(logging.WARNING, logger="rlrt.tracking"):
        assert log_run(store, "partial", {"stage": "t"}, {"a": 1}, HISTORY, {"f": 2.0}, artifacts=[artifact]) is None
    (msg,) = [r.getMessage() for r in caplog.records if r.name == "rlrt.tracking"]
    assert msg.startswith(f"mlflow: store {store['uri']} failed (OSError: [Errno 28] No space left on device); "
                          f"not logged: artifacts {artifact} (run 'partial', id ")
    assert msg.endswith("left unfinished). The job's outputs on disk are complete.")
    rid = msg.split(", id ")[1].split(",")[0]
    logged = MlflowClient(store["uri"]).get_metric_history(rid, "loss")  # what the warning says was logged, was
    assert [(m.step, m.value) for m in logged] == [(0, 1.5), (1, 1.25)]


def test_a_store_locked_past_the_retries_warns(store, monkeypatch, caplog):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from rlrt import tracking

    def locked(self, *a, **k):
        raise MlflowException("(sqlite3.OperationalError) database is locked")

    sleeps = []
    monkeypatch.setattr(MlflowClient, "create_run", locked)
    monkeypatch.setattr(tracking.time, "sleep", sleeps.append)
    with caplog.at_level(logging.WARNING, logger="rlrt.tracking"):
        assert tracking.log_run(store, "locked", {"stage": "t"}, {}, HISTORY) is None
    assert len(sleeps) == 19  # retried 20 times
    (msg,) = [r.getMessage() for r in caplog.records if r.name == "rlrt.tracking"]
    assert "database is locked" in msg and "not logged: run 'locked'; 2 metric values; 0 params" in msg


def test_a_deleted_store_is_recreated_or_warned_about(tmp_path, caplog):
    """Deleted before the job logs: a new store takes the run, with a warning. Deleted while this process holds it
    open: the write fails, and the warning names what was not logged."""
    from mlflow import MlflowClient

    from rlrt.tracking import log_run

    db = tmp_path / "mlflow.db"
    cfg = {"uri": f"sqlite:///{db}", "experiment": "faults", "artifact_root": str(tmp_path / "art")}
    with caplog.at_level(logging.WARNING, logger="rlrt.tracking"):
        rid = log_run(cfg, "after-delete", {"stage": "t"}, {}, HISTORY)
    assert rid and MlflowClient(cfg["uri"]).get_run(rid).info.run_name == "after-delete"
    assert f"mlflow: store {cfg['uri']} is missing (deleted?); run 'after-delete' goes to a new, empty store" \
        in caplog.text
    caplog.clear()
    db.unlink()
    with caplog.at_level(logging.WARNING, logger="rlrt.tracking"):
        rid = log_run(cfg, "while-open", {"stage": "t"}, {}, HISTORY)  # never raises
    if rid is None:  # MLflow keeps the deleted file's connection: its writes fail ("readonly database")
        assert f"mlflow: store {cfg['uri']} failed (" in caplog.text and "not logged: run 'while-open'" in caplog.text
    else:  # a new store took the run
        assert f"mlflow: store {cfg['uri']} is missing (deleted?)" in caplog.text


# ---------------------------------------------------------------- two snakemake processes in one folder

SNAKEFILE = """
rule all:
    input: "out.txt"

rule slow:
    output: "out.txt"
    shell: "sleep 60 && echo done > {output}"
"""


def smk_cmd(workdir: Path, *extra: str) -> list[str]:
    """snakemake on ``workdir``'s own tiny Snakefile (never the project's workflow)."""
    return [sys.executable, "-m", "snakemake", "--snakefile", str(workdir / "Snakefile"), "--directory",
            str(workdir), "--cores", "1", *extra]


def smk(workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(smk_cmd(workdir, *extra), capture_output=True, text=True, timeout=120, cwd=workdir)


def test_a_second_snakemake_in_a_locked_folder_says_how_to_unlock(tmp_path):
    """A running snakemake holds the folder's lock: a second one refuses with advice (--unlock). Killed with -9,
    the first leaves a stale lock: the same advice, and --unlock then lets a run through."""
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    first = subprocess.Popen(smk_cmd(tmp_path), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        lock = tmp_path / ".snakemake" / "locks" / "0.output.lock"
        deadline = time.monotonic() + 60
        while not (lock.exists() and "out.txt" in lock.read_text()):  # the lock is written, not just created
            assert first.poll() is None and time.monotonic() < deadline, "the first snakemake never locked"
            time.sleep(0.1)
        second = smk(tmp_path)
        assert second.returncode != 0
        for words in ("Directory cannot be locked", "no other Snakemake process", "--unlock"):
            assert words in second.stderr + second.stdout, words
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the first snakemake and its job's shell: kill -9 of the workflow
        first.wait()
    (tmp_path / "Snakefile").write_text(SNAKEFILE.replace("sleep 60 && ", ""))  # the rerun is quick
    stale = smk(tmp_path)
    assert stale.returncode != 0 and "--unlock" in stale.stderr + stale.stdout
    assert not (tmp_path / "out.txt").exists()
    assert smk(tmp_path, "--unlock").returncode == 0
    done = smk(tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out.txt").read_text() == "done\n"
