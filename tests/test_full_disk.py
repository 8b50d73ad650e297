"""A full disk is reported, not hidden (issue 35 §6): every failing job writes its cause where the user looks.

Each test mounts a 3 MB tmpfs (root only; skipped with the reason otherwise, and a failure under CI, which runs
as root), puts a results tree on it, fills it with a filler file, and runs a real job the way its rule does
(``python -m rlrt.stages.<stage> ... > {log} 2>&1``, started with bash by a Python process that stands for the
Snakemake driver: its stderr is what the user sees). Cheap: short jobs (the tokenizer on 20 problems, the
synthetic splits, a job that writes one file, two MLflow flushes of one record), about 40 s on 2 busy cores.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlrt.config import load

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 240


def _cannot_run(reason: str) -> None:
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"the full-disk test must run under CI (which runs as root): {reason}")
    pytest.skip(reason)


@pytest.fixture
def small_fs(tmp_path):
    """A 3 MB tmpfs mounted for the test (unmounted after it)."""
    if not sys.platform.startswith("linux"):
        _cannot_run("needs Linux (tmpfs, /proc)")
    if os.geteuid() != 0:
        _cannot_run("needs root to mount a small tmpfs (mount -t tmpfs -o size=3m)")
    if not shutil.which("mount") or not shutil.which("umount"):
        _cannot_run("no mount / umount command")
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        _cannot_run(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(mnt: Path) -> Path:
    """Fill the file system of ``mnt`` to its last byte with ``mnt/filler``; return that file."""
    filler = mnt / "filler"
    with open(filler, "ab", buffering=0) as f:
        for chunk in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    assert shutil.disk_usage(mnt).free == 0
    return filler


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("RLRT_", "MLFLOW_"))}
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    return e


# a stand-in for the Snakemake driver: a Python process that runs the job's shell line with bash (Snakemake's
# `set -euo pipefail; ` prefix), its own stdout / stderr inherited: the pipes the test reads
DRIVER = "import subprocess, sys; sys.exit(subprocess.call(['bash', '-c', 'set -euo pipefail; ' + sys.argv[1]]))"


def rule_job(stage: str, args: list[str], log: Path, rule: str) -> subprocess.Popen:
    """``python -m rlrt.stages.<stage> ... > log 2>&1``, as the rule's shell line, started as Snakemake starts
    it; the returned process is the driver, whose stderr (a pipe) is what the user would see."""
    cmd = (f"RLRT_RULE={rule} {shlex.quote(sys.executable)} -m rlrt.stages.{stage} "
           + " ".join(shlex.quote(a) for a in args) + f" > {shlex.quote(str(log))} 2>&1")
    return subprocess.Popen([sys.executable, "-c", DRIVER, cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env(), cwd=REPO)


def open_when_read(fifo: Path, job: subprocess.Popen) -> int:
    """The write end of ``fifo`` once ``job`` has opened it for reading (a job opens its input after its start-up,
    rlrt.stages.common.parse); fails when the job ends first or takes longer than TIMEOUT."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            assert e.errno == errno.ENXIO, e
            assert job.poll() is None, f"the job ended before opening {fifo.name}: {job.communicate()}"
            assert time.monotonic() < deadline, f"the job never opened {fifo.name}"
            time.sleep(0.2)


def half_written(folder: Path) -> list[str]:
    """Temporary siblings of the atomic writers (``.<name>.*.tmp``) left in ``folder``."""
    return sorted(p.name for p in folder.glob(".*.tmp")) if folder.is_dir() else []


def test_a_job_whose_disk_fills_under_it_writes_the_cause_to_its_log(small_fs, tmp_path):
    """The issue's case: a concurrent job fills the disk while this one runs. The tokenizer job starts with room
    (its log gets its header, its emergency reserve is taken), waits for its input (a FIFO), the disk is then
    filled to the last byte, and the job's write of its output fails: its log names the cause, the path and the
    full disk, it exits non-zero, and no output (or half of one) is left."""
    from rlrt.tasks.arithmetic import generate_splits

    cfg = load(REPO / "config/config.yaml", REPO / "config/ci.yaml")
    results = small_fs / "results"
    (results / "logs").mkdir(parents=True)
    log, out = results / "logs" / "tokenizer.log", results / "tokenizer"
    fifo = tmp_path / "train.jsonl"
    os.mkfifo(fifo)
    rows = generate_splits(0, {"train": {"n": 20, "n_terms": [2, 3], "min_digits": 1, "max_digits": 2}})["train"]
    job = rule_job("tokenizer", ["--cfg", json.dumps({**cfg["tokenizer"], "seed": 0}), "--train", str(fifo),
                                 "--out", str(out)], log, "tokenizer")
    try:
        # the job opens its input only after its start-up (rlrt.stages.common.parse): wait until it reads
        fd = open_when_read(fifo, job)
        fill(small_fs)  # the "concurrent job"
        os.set_blocking(fd, True)
        os.write(fd, "".join(json.dumps(r) + "\n" for r in rows).encode())
        os.close(fd)
        stdout, stderr = job.communicate(timeout=TIMEOUT)
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()
    text = log.read_text()
    assert job.returncode != 0
    assert "[rlrt] job tokenizer: started" in text
    assert "[rlrt] job tokenizer failed: OSError: [Errno 28] No space left on device" in text, text
    assert f"disk full on {small_fs}: 0 bytes free" in text, text
    assert str(out) in text, text  # the path involved (the ENOSPC of a close() carries no file name)
    assert "Traceback" in text
    assert not out.exists() and half_written(results) == [], list(results.iterdir())
    assert "cannot write to its log" not in stderr  # the log took it: nothing needed the fallback


PADDED = """
import os, sys
from pathlib import Path
from rlrt.io import write_text
from rlrt.stages.common import parse, parser
p = parser("t")
p.add_argument("--out")
args, cfg = parse(p)  # the stage entry of every job, from the command line
size = os.fstat(2).st_size
sys.stderr.write("x" * (4096 - size % 4096 - 1) + "\\n")  # the log ends on a page boundary: full
open(cfg["go"]).read()  # wait (a FIFO) while the disk fills
write_text(args.out, "y" * 10000)
"""


def test_the_reserve_makes_room_for_the_cause_when_the_logs_last_block_is_full(small_fs, tmp_path):
    """The log's last block is full when the disk fills: the cause needs a new block, which only the reserve taken
    at the job's start can give. It goes into the log (not to the driver's stderr), and the job exits 1."""
    results = small_fs / "results"
    (results / "logs").mkdir(parents=True)
    log, go, out = results / "logs" / "padded.log", tmp_path / "go", results / "out.bin"
    os.mkfifo(go)
    script = tmp_path / "padded.py"
    script.write_text(PADDED)
    cmd = (f"RLRT_RULE=padded {shlex.quote(sys.executable)} {shlex.quote(str(script))} --cfg "
           f"{shlex.quote(json.dumps({'go': str(go)}))} --out {shlex.quote(str(out))} > {shlex.quote(str(log))} 2>&1")
    job = subprocess.Popen([sys.executable, "-c", DRIVER, cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env=env(), cwd=REPO)
    try:
        fd = open_when_read(go, job)
        assert log.stat().st_size % 4096 == 0, log.stat().st_size
        fill(small_fs)
        os.close(fd)
        stdout, stderr = job.communicate(timeout=TIMEOUT)
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()
    text = log.read_text()
    assert job.returncode == 1, (stdout, stderr)
    assert "[rlrt] job padded failed: OSError: [Errno 28] No space left on device" in text, text[-3000:]
    assert f"disk full on {small_fs}: " in text and str(out) in text, text[-3000:]
    assert "Traceback" in text and "cannot write to its log" not in stderr, stderr
    assert not out.exists() and half_written(results) == []


def test_a_job_started_on_a_full_disk_reports_to_the_drivers_stderr(small_fs):
    """The disk is full before the job starts: not even its log's first line fits. The cause (the full disk, its
    mount, the path) goes to the stderr of the process that started the job (Snakemake's), the job exits
    non-zero, and none of its declared outputs (the data splits) exists, whole or half-written."""
    cfg = load(REPO / "config/config.yaml", REPO / "config/ci.yaml")
    results = small_fs / "results"
    (results / "logs").mkdir(parents=True)
    log, data = results / "logs" / "prepare_data.log", results / "data"
    fill(small_fs)
    job = rule_job("prepare_data", ["--cfg", json.dumps(cfg["data"]), "--out-dir", str(data)], log, "prepare_data")
    stdout, stderr = job.communicate(timeout=TIMEOUT)
    assert job.returncode != 0
    assert log.stat().st_size == 0  # the disk took nothing ...
    assert f"cannot write to its log {log}" in stderr, stderr  # ... so the cause is on the driver's stderr
    assert "[rlrt] job prepare_data failed: OSError: [Errno 28] No space left on device" in stderr, stderr
    assert f"disk full on {small_fs}: 0 bytes free" in stderr, stderr
    assert str(data) in stderr
    assert list(data.glob("*.jsonl")) == [] and half_written(data) == []


def test_mlflow_flush_on_a_full_disk_says_why(small_fs):
    """The deferred MLflow runs are flushed at the DAG's end into a store on the full disk: the store fails, the
    record stays for the next flush, and the reason reaches the user although the flush's log cannot take a
    byte: the flush's warnings on the driver's stderr, and the driver's line names the log and the full disk."""
    from rlrt.tracking import spool_run

    results = small_fs / "results"
    spool, log = results / "mlflow" / "spool", results / "logs" / "mlflow_flush.log"
    (results / "logs").mkdir(parents=True)
    tracking = {"enabled": True, "experiment": "rlrt", "uri": f"sqlite:///{results}/mlflow/mlflow.db"}
    record = spool_run(spool, tracking, "rl/S-base/grpo", {"stage": "rl"}, {"lr": 1e-5}, [{"step": 0, "loss": 1.0}],
                       {"acc": 0.5})
    assert record.is_file()
    fill(small_fs)
    # by hand (rlrt.tracking's doc), as the rules ran it before: its log gets nothing, its stderr the reason
    by_hand = subprocess.run(
        [sys.executable, "-c", DRIVER, f"{shlex.quote(sys.executable)} -m rlrt.tracking --flush "
         f"{shlex.quote(str(spool))} >> {shlex.quote(str(log))} 2>&1"],
        capture_output=True, text=True, env=env(), cwd=REPO, timeout=TIMEOUT)
    assert log.stat().st_size == 0
    assert "database or disk is full" in by_hand.stderr and "1 left" in by_hand.stderr, by_hand.stderr
    # the driver (rules/common.smk flush_tracking) runs rlrt.tracking.run_flush in its own process
    driver = subprocess.run(
        [sys.executable, "-c", "import sys; from rlrt.tracking import run_flush; "
         "rc, line = run_flush(sys.argv[1], sys.argv[2], sys.executable); print(line)", str(spool), str(log)],
        capture_output=True, text=True, env=env(), cwd=REPO, timeout=TIMEOUT)
    assert driver.returncode == 0, driver.stderr  # tracking never fails the workflow ...
    assert log.stat().st_size == 0
    # ... but says why nothing was logged: the store's failure, on the driver's stderr ...
    assert "database or disk is full" in driver.stderr, driver.stderr
    assert f"could not be written to {log}" in driver.stderr, driver.stderr
    # ... and the driver's own line names the empty log and the full disk
    assert str(log) in driver.stdout and f"disk full on {small_fs}: 0 bytes free" in driver.stdout, driver.stdout
    assert record.is_file()  # kept for the next flush


def test_a_disk_full_error_without_an_errno_still_names_the_disk(tmp_path):
    """Writers that do not raise an OSError with ENOSPC (Rust's safetensors / tokenizers, SQLite) say so only in
    their message: the cause still names the full disk, its mount and free bytes, and the path; any other error
    does not claim a full disk (this test needs no root)."""
    from rlrt.joblog import _mount, cause

    out = tmp_path / "model" / "model.safetensors"
    mount, free = _mount(str(tmp_path))
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
                               "\"No space left on device\" })") from inner
    except RuntimeError as e:
        lines = cause(e, [str(out)])
    assert lines[0].startswith("RuntimeError: Error while serializing"), lines
    assert "  caused by OSError: [Errno 28] No space left on device" in lines, lines
    assert any(ln.startswith(f"disk full on {mount}: ") and ln.endswith(f"bytes free ({out})") for ln in lines), lines
    plain = cause(ValueError(f"{out}:3: malformed JSON line"), [str(out)])
    assert plain == [f"ValueError: {out}:3: malformed JSON line"] or free < (1 << 20), plain
