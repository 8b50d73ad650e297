"""Shared fixtures: one run of the whole embedded DAG on config/ci.yaml, reused by every DAG test file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def bench_script(name: str, module: str | None = None):
    """``bench/<name>.py`` imported as a module (the bench scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(module or name, ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def snakemake(workdir: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(ROOT / "config" / "ci.yaml"), "--cores", "2", *extra]
    # Rules run `python` from PATH (the job's environment): this interpreter's bin/ first, as `make` does.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = {**os.environ, "PYTHONHASHSEED": "0", "PATH": path}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if check and proc.returncode != 0:
        logs = "\n".join(f"== {p}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "results" / "logs").rglob("*.log")))
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stderr[-6000:]}\n{logs}")
    return proc


@pytest.fixture(scope="session")
def dag_run(tmp_path_factory):
    """The working directory of one finished ci.yaml run. RLRT_TEST_LOCAL_DAG names an earlier run to reuse
    instead (saves the run's ~10 minutes when iterating on one DAG test file; CI always runs it)."""
    given = os.environ.get("RLRT_TEST_LOCAL_DAG")
    if given and not os.environ.get("CI"):
        return Path(given)
    workdir = tmp_path_factory.mktemp("dag")
    snakemake(workdir)
    return workdir


# ---- network-bound checks started at collection, so their waiting overlaps the CPU-bound tests ------------------
# `make gpu-env-check` (tests/test_gpu_env.py::test_gpu_env_resolves) spends about 45 of its ~70 s waiting on PyPI;
# CI's 2 cores are busy with the DAG meanwhile. The test itself waits for the result and asserts on it.
BACKGROUND: dict[str, subprocess.Popen] = {}
GPU_ENV_CHECK = "test_gpu_env.py::test_gpu_env_resolves"


def pytest_collection_finish(session):
    if any(item.nodeid.endswith(GPU_ENV_CHECK) for item in session.items):
        import tempfile

        out = tempfile.TemporaryFile(mode="w+")
        err = tempfile.TemporaryFile(mode="w+")
        proc = subprocess.Popen([sys.executable, str(ROOT / "envs" / "check_gpu_env.py")], stdout=out, stderr=err,
                                text=True)
        proc.files = (out, err)  # type: ignore[attr-defined]
        BACKGROUND[GPU_ENV_CHECK] = proc


def background_result(name: str, timeout: float) -> subprocess.CompletedProcess | None:
    """The finished process started for ``name`` at collection (None when none was started)."""
    proc = BACKGROUND.pop(name, None)
    if proc is None:
        return None
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    out, err = proc.files  # type: ignore[attr-defined]
    out.seek(0)
    err.seek(0)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())


def pytest_sessionfinish(session, exitstatus):
    for proc in BACKGROUND.values():  # a selected check whose test never ran
        proc.kill()
