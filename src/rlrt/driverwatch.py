"""Jobs die with their Snakemake driver: a job whose driver was killed stops instead of running on as an orphan.

Snakemake starts a local job as a ``bash -c`` child of the driver process and never signals it when the driver is
killed (``kill -9``, an OOM kill, a closed SSH session without ``nohup``): the job runs on, writes its outputs and
logs its MLflow run, while the next ``make run`` reruns the same job beside it (its outputs are marked incomplete).
So the driver names itself to its jobs: the workflow's ``onstart`` (rules/common.smk, :func:`mark_driver`) exports
``RLRT_DRIVER=<host>:<pid>:<start ticks>`` before the first job starts, local execution only (a SLURM job is not
the driver's child; its fate is the scheduler's). Every stage (rlrt.stages.common.parse) then runs
:func:`watch_driver`: a daemon thread that checks once a second whether that process still lives (same pid, same
start time, not a zombie) and, when it has gone, kills the job's own child processes and exits the job with
:data:`EXIT_DRIVER_GONE`, one line in its log saying why. :func:`driver_gone` is what MLflow logging asks first
(rlrt.tracking.log_run): an orphan that finished before it noticed logs no run, so the rerun's is the only one.

Linux reads ``/proc``; elsewhere the pid alone is checked (a reused pid then reads as alive: the job runs on,
as before).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

DRIVER_ENV = "RLRT_DRIVER"
EXIT_DRIVER_GONE = 75  # EX_TEMPFAIL: not the job's own failure; the next run redoes it
POLL_S = 1.0


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of ``pid`` from /proc, None when there is no such process
    (or no /proc)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) ": state is field 3, starttime field 22
    return fields[0], int(fields[19])


def token(pid: int | None = None) -> str:
    """``<host>:<pid>:<start ticks>`` of ``pid`` (default: this process); the start time tells a reused pid."""
    pid = os.getpid() if pid is None else pid
    st = _stat(pid)
    return f"{socket.gethostname()}:{pid}:{st[1] if st else 0}"


def alive(tok: str) -> bool:
    """Whether the process ``tok`` names still runs. A token of another host reads as alive (not ours to judge)."""
    host, pid_s, start_s = tok.rsplit(":", 2)
    if host != socket.gethostname():
        return True
    pid = int(pid_s)
    if Path("/proc/self/stat").exists():
        st = _stat(pid)
        return st is not None and st[0] not in ("Z", "X") and (start_s == "0" or st[1] == int(start_s))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def driver_gone() -> bool:
    """True when this process is a job of a Snakemake driver (``RLRT_DRIVER`` set) that no longer runs."""
    tok = os.environ.get(DRIVER_ENV)
    return bool(tok) and not alive(tok)


def mark_driver(local_exec: bool) -> None:
    """Export ``RLRT_DRIVER`` (this process, the driver) to the jobs it starts; only for local execution."""
    if local_exec:
        os.environ[DRIVER_ENV] = token()
    else:
        os.environ.pop(DRIVER_ENV, None)


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc; empty without it)."""
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            raw = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(raw[raw.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _stop(tok: str) -> None:
    print(f"rlrt: the Snakemake driver of this job ({tok}) is gone (killed?); stopping the job so that it does "
          "not run on as an orphan. The next `make run` reruns it.", file=sys.stderr, flush=True)
    for child in _children(os.getpid()):
        try:
            os.kill(child, signal.SIGKILL)
        except OSError:
            pass
    os._exit(EXIT_DRIVER_GONE)


def watch_driver(poll_s: float = POLL_S) -> threading.Thread | None:
    """Start the daemon thread that stops this job when its driver has gone (no-op without ``RLRT_DRIVER``)."""
    tok = os.environ.get(DRIVER_ENV)
    if not tok:
        return None
    if not alive(tok):
        _stop(tok)

    def loop() -> None:
        while True:
            time.sleep(poll_s)
            if not alive(tok):
                _stop(tok)

    t = threading.Thread(target=loop, name="rlrt-driver-watch", daemon=True)
    t.start()
    return t
