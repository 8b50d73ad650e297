"""``make run``'s driver: ``python -m rlrt.driver <snakemake options> [-- targets]`` runs ``snakemake`` with those
options (it replaces itself with ``python -m snakemake``), after three checks that make the same command both the
first run and the recovery from a crashed one:

1. **One run per working directory.** It holds an exclusive ``flock`` on ``.snakemake/rlrt-run.lock`` for the
   whole run (the kernel drops it when the process dies, ``kill -9`` included). A second ``make run`` beside a
   live one refuses at once, naming the live one's pid, whatever the first is doing (parsing, planning, running
   jobs), and never touches that run's lock.
2. **A stale Snakemake lock is cleared, a live one never.** Snakemake's own lock (``.snakemake/locks``) records
   no owner, so after a killed driver every later run stops with ``LockException``. Holding (1) proves no other
   ``make run`` is alive; a Snakemake started by hand in the same folder is looked for among the running
   processes (``/proc``: its command line and working directory). None: the lock is stale and ``snakemake
   --unlock`` clears it. One: refuse, naming it. Without ``/proc`` the lock is left and the message says so.
   Incomplete outputs of the killed run are rerun by the workflow profile's ``rerun-incomplete``
   (profiles/default); its jobs have stopped with it (rlrt.driverwatch).
3. **A deleted or partial output is rebuilt, with what depends on it.** Snakemake plans only the jobs whose
   outputs the targets need and that are out of date; an intermediate output deleted on a finished tree (an
   evaluation JSON, a file of a checkpoint folder) is not noticed: the tables that read it are newer than their
   inputs, so it says "Nothing to be done". ``snakemake --summary`` lists every output of the DAG; a file
   Snakemake lists as missing without planning it becomes an extra target, and a checkpoint folder with a file
   its ``checksums.sha256`` lists missing, or a ``.safetensors`` / ``.json`` file cut short, is removed first
   (then it is missing too). A rebuilt output is newer than its readers, so they rerun with it.

4. **The schedule and the ETA** (issue 34; rlrt.eta). ``snakemake -n`` with the same options gives the plan; each
   planned job's seconds are estimated from the last run's benchmark files (rlrt.eta.estimates) and its
   priority is the longest chain of job-seconds from it to the end of the plan (``.snakemake/rlrt-priority.json``,
   read by the Snakefile's ``priority`` of every rule through ``RLRT_PRIORITIES``), so that on few cores the
   longest chains start first. A watcher process beside Snakemake (``python -m rlrt.eta --watch``) follows the
   run's log and prints ``make run: ETA ...`` at the start and after every finished job; it exits with Snakemake.
   ``RLRT_ETA=0`` turns both off; a plan that fails to come (the run itself then says why) turns them off.

Snakemake options pass through unchanged; targets go after ``--`` (without one the target is ``all``). A dry run
(``-n``) gets check 3's plan but removes nothing; Snakemake's other modes (``--unlock``, ``--summary``, ``--report``
...) run as they are.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

RUN_LOCK = "rlrt-run.lock"
# Snakemake modes that run no job: passed straight through.
PASS_THROUGH = ("unlock", "summary", "detailed_summary", "report", "lint", "dag", "rulegraph", "filegraph", "d3dag",
                "list_rules", "list_target_rules", "list_changes", "list_untracked", "cleanup_metadata", "touch",
                "delete_all_output", "delete_temp_output", "archive", "export_cwl", "containerize",
                "conda_create_envs_only", "conda_cleanup_envs", "cleanup_shadow", "print_compilation", "version",
                "generate_unit_tests", "list_conda_envs")


class Refused(Exception):
    """Why this run does not start (one message, exit code 1)."""


def snakemake_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", *args]


def _parse(argv: list[str]):
    from snakemake.cli import get_argument_parser

    try:
        return get_argument_parser().parse_args(argv)
    except SystemExit:
        return None  # Snakemake itself says what is wrong with the command line


def config_entry_problem(entries) -> str | None:
    """Why a ``--config KEY=VALUE`` entry would stop Snakemake with a traceback (``None`` when none would): its
    key is a top-level name (``rl.lr=...`` is not; a nested value is given as ``rl={lr: 1.0e-6}``)."""
    import re

    for entry in entries or []:
        key, eq, _ = str(entry).partition("=")
        if not eq:
            return f"--config {entry}: give KEY=VALUE"
        if not re.match(r"[a-zA-Z_][\w-]*\w$", key):
            top, _, rest = key.partition(".")
            hint = f"; a nested key is given as {top}={{{rest}: VALUE}}" if "." in key else ""
            return f"--config {entry}: {key!r} is not a top-level config key{hint}"
    return None


# ---------------------------------------------------------------- 1. one run per working directory


def hold_run_lock(workdir: Path) -> int:
    """Take the working directory's run lock (kept across the exec into snakemake); refuse when a live run has it."""
    import fcntl

    folder = workdir / ".snakemake"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RUN_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = path.read_text().strip() or "pid unknown"
        os.close(fd)
        raise Refused(f"another `make run` is running in {workdir} ({owner}); this one does not start, and that "
                      "run's lock stays. Wait for it to finish, or stop it (kill its pid: its jobs stop with it) "
                      "and run `make run` again, which continues where it stopped.") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
             .encode())
    os.set_inheritable(fd, True)
    return fd


# ---------------------------------------------------------------- 2. stale Snakemake lock


def _ancestors() -> set[int]:
    out, pid = set(), os.getpid()
    while pid > 1:
        out.add(pid)
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(raw[raw.rindex(")") + 2:].split()[1])
    return out


def live_snakemakes(workdir: Path) -> list[tuple[int, str]] | None:
    """Snakemake drivers (not job-level ``--mode`` processes) running in ``workdir`` other than this process and
    its ancestors, as (pid, command line); None where there is no ``/proc`` to look in."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    mine, found = _ancestors(), []
    for d in proc.glob("[0-9]*"):
        pid = int(d.name)
        if pid in mine:
            continue
        try:
            args = [a.decode(errors="replace") for a in (d / "cmdline").read_bytes().split(b"\0") if a]
            raw = (d / "stat").read_text()
            cwd = Path(os.readlink(d / "cwd"))
        except OSError:
            continue
        if raw[raw.rindex(")") + 2:].split()[0] in ("Z", "X"):
            continue
        is_smk = any(Path(a).name == "snakemake" for a in args[:2]) or any(
            a == "-m" and b == "snakemake" for a, b in zip(args, args[1:]))
        if is_smk and "--mode" not in args and cwd == workdir:
            found.append((pid, " ".join(args)[:200]))
    return found


def clear_stale_lock(workdir: Path, argv: list[str]) -> bool:
    """Clear Snakemake's lock of ``workdir`` when its owner is dead (see the module doc); True when cleared."""
    locks = workdir / ".snakemake" / "locks"
    if not locks.is_dir() or not any(locks.iterdir()):
        return False
    live = live_snakemakes(workdir)
    if live is None:
        raise Refused(f"{workdir} holds a Snakemake lock and this system has no /proc to tell whether its owner "
                      "still runs. If no snakemake runs there, clear it with `snakemake --unlock` (same options) "
                      "and run `make run` again.")
    if live:
        pid, cmd = live[0]
        raise Refused(f"Snakemake pid {pid} ({cmd}) is running in {workdir} and holds its lock; this run does not "
                      "start and that lock stays. Wait for it, or stop it and run `make run` again.")
    print(f"make run: clearing the Snakemake lock of {workdir}, left by a run that is no longer alive (killed?); "
          "its unfinished jobs are rerun.", file=sys.stderr, flush=True)
    proc = subprocess.run(snakemake_cmd("--unlock", *argv), capture_output=True, text=True)
    if proc.returncode != 0:
        raise Refused(f"`snakemake --unlock` failed in {workdir}:\n{proc.stderr[-3000:]}")
    return True


# ---------------------------------------------------------------- 3. deleted or partial outputs


def _safetensors_cut(path: Path) -> bool:
    """A safetensors file shorter or longer than its header says (cut short by a crash or a copy)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return True
            n = struct.unpack("<Q", head)[0]
            if n > size - 8:
                return True
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        return size != 8 + n + end
    except (OSError, ValueError, KeyError, TypeError):
        return True


def partial_folder(folder: Path) -> str | None:
    """Why the checkpoint folder(s) under ``folder`` are incomplete (every ``checksums.sha256`` in it: a listed file
    missing, a ``.safetensors`` cut short, a ``.json`` that does not parse), or None. Reads headers only: the
    SHA-256 itself is checked when a job loads the checkpoint."""
    for manifest in sorted(folder.rglob("checksums.sha256")):
        base = manifest.parent
        for line in manifest.read_text().splitlines():
            name = line.split("  ", 1)[1] if "  " in line else ""
            f = base / name
            if not name:
                continue
            if not f.is_file():
                return f"{f.relative_to(folder.parent)} is missing"
            if f.suffix == ".safetensors" and _safetensors_cut(f):
                return f"{f.relative_to(folder.parent)} is cut short"
            if f.suffix == ".json":
                try:
                    json.loads(f.read_text())
                except (OSError, ValueError):
                    return f"{f.relative_to(folder.parent)} is not valid JSON"
    return None


def summary(argv: list[str], workdir: Path) -> list[tuple[str, str, str]] | None:
    """(output, status, plan) of every output of the DAG (``snakemake --summary``); None when it fails (the run
    itself then says why)."""
    proc = subprocess.run(snakemake_cmd("--summary", "--nolock", *argv), capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    rows = []
    for line in proc.stdout.splitlines()[1:]:
        cols = line.split("\t")
        if len(cols) >= 6:
            rows.append((cols[0], cols[-2], cols[-1]))
    return rows


def rebuild_targets(argv: list[str], workdir: Path, dryrun: bool) -> list[str]:
    """Outputs to rebuild that Snakemake would not (missing, or a partial checkpoint folder, removed here unless
    ``dryrun``); each is named on stderr."""
    rows = summary(argv, workdir)
    if rows is None:
        return []
    out = []
    for path, status, plan in rows:
        if plan != "no update":
            continue
        p = Path(path) if Path(path).is_absolute() else workdir / path
        if status == "missing":
            print(f"make run: {path} is missing: rebuilding it and what reads it", file=sys.stderr)
            out.append(path)
        elif status == "ok" and p.is_dir() and (why := partial_folder(p)):
            if dryrun:
                print(f"make run: {path} is partial ({why}): `make run` rebuilds it and what reads it",
                      file=sys.stderr)
                continue
            import shutil

            print(f"make run: {path} is partial ({why}): removing it, then rebuilding it and what reads it",
                  file=sys.stderr)
            shutil.rmtree(p)
            out.append(path)
    sys.stderr.flush()
    return out


# ---------------------------------------------------------------- 4. schedule and ETA

PLAN_FILE = "rlrt-plan.txt"
PRIORITY_FILE = "rlrt-priority.json"
PRIORITY_ENV = "RLRT_PRIORITIES"
# make bench's committed per-stage figures: the ETA's estimate for a rule no local benchmark file covers
PERFORMANCE_JSON = Path(__file__).resolve().parents[2] / "docs" / "performance.json"


def _cores(ns) -> int:
    """How many jobs' worth of cores the run has: ``--cores`` locally, ``--jobs`` under a cluster executor."""
    cluster = getattr(ns, "executor", None) not in (None, "local", "dryrun", "touch")
    try:
        return max(1, int(ns.jobs if cluster else ns.cores))
    except (TypeError, ValueError):
        return os.cpu_count() or 1


def plan_run(argv: list[str]) -> subprocess.Popen:
    """``snakemake -n`` with the run's options, started at once (it runs beside ``--summary``: two cores)."""
    return subprocess.Popen(snakemake_cmd("-n", "--nolock", *argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True)


def schedule(plan: subprocess.Popen, workdir: Path) -> Path | None:
    """From the run's plan (:func:`plan_run`): the jobs' priorities (longest chain first) and the plan written under
    ``.snakemake/``, ``RLRT_PRIORITIES`` exported for the Snakefile; the plan's path, or None when no plan came."""
    from rlrt import eta

    text, _ = plan.communicate()
    if plan.returncode != 0:
        return None
    jobs = eta.parse_jobs(text.splitlines())
    if not jobs:
        return None
    est = eta.estimates(jobs, workdir, eta.load_table(PERFORMANCE_JSON))
    levels = eta.bottom_levels(jobs, {k: v[0] for k, v in est.items()})
    folder = workdir / ".snakemake"
    path, prio = folder / PLAN_FILE, folder / PRIORITY_FILE
    for f, body in ((path, text), (prio, json.dumps({j.rule_key: int(round(levels[j.key])) for j in jobs},
                                                     sort_keys=True, indent=0))):
        tmp = f.with_name(f.name + ".tmp")
        tmp.write_text(body)
        tmp.replace(f)
    os.environ[PRIORITY_ENV] = str(prio)
    return path


def start_watcher(plan: Path, workdir: Path, cores: int) -> None:
    """The ETA watcher (rlrt.eta.watch), a child of this process: Snakemake's after the exec; it exits with it."""
    logs = Path(workdir, ".snakemake", "log")  # the logs so far (the plan's dry run's among them): never the run's
    known = ",".join(sorted(p.name for p in logs.glob("*.snakemake.log"))) if logs.is_dir() else ""
    subprocess.Popen([sys.executable, "-m", "rlrt.eta", "--watch", "--parent", str(os.getpid()), "--plan", str(plan),
                      "--workdir", str(workdir), "--cores", str(cores), "--table", str(PERFORMANCE_JSON),
                      "--known-logs", known],
                     stdin=subprocess.DEVNULL, start_new_session=True)


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ns = _parse(argv)
    if ns is None or any(getattr(ns, name, None) for name in PASS_THROUGH):
        os.execv(sys.executable, snakemake_cmd(*argv))
    bad = config_entry_problem(getattr(ns, "config", None))
    if bad:
        print(f"make run: {bad}", file=sys.stderr)
        return 1
    workdir = Path(ns.directory or ".").resolve()
    eta_on = not ns.dryrun and os.environ.get("RLRT_ETA", "1") != "0"
    plan = None
    try:
        if not ns.dryrun:
            hold_run_lock(workdir)
            clear_stale_lock(workdir, argv)
        plan = plan_run(argv) if eta_on else None
        extra = rebuild_targets(argv, workdir, bool(ns.dryrun))
    except Refused as e:
        if plan is not None:
            plan.kill()
        print(f"make run: {e}", file=sys.stderr)
        return 1
    if extra:
        if "--" in argv:
            argv += extra
        elif ns.targets:
            print("make run: targets given without `--`: not adding the outputs to rebuild; put the targets after "
                  "`--`", file=sys.stderr)
        else:
            argv += ["--", "all", *extra]
    if plan is not None:
        try:  # the ETA and the order never stop a run: without them Snakemake runs as it would alone
            if extra:  # the plan of the targets added here
                plan.kill()
                plan.communicate()
                plan = plan_run(argv)
            planned = schedule(plan, workdir)
            if planned is not None:
                start_watcher(planned, workdir, _cores(ns))
        except Exception as e:  # noqa: BLE001
            os.environ.pop(PRIORITY_ENV, None)
            print(f"make run: no ETA this time ({type(e).__name__}: {e})", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, snakemake_cmd(*argv))
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
