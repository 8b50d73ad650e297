"""How long a Snakemake run has left, from the last run's benchmark files (``make run``'s ETA; issue 34).

Every rule of this workflow has a ``benchmark:`` file, one TSV per job whose column ``s`` is the job's wall
seconds. A run's plan (``snakemake -n``'s job blocks: rule, jobid, input, output, benchmark, threads) names
the jobs left; each gets an estimate of its seconds (:func:`estimates`), first found of:

1. ``last run``: its own benchmark file, left by the last run that ran it (same rule, same wildcards);
2. ``folder median``: the median of the other benchmark files in the same folder (the same rule and backbone
   here: ``benchmarks/<rule>/<backbone>/<run>.tsv``);
3. ``rule median``: the median over the rule family's folder (``benchmarks/<family>/**``, the first level
   under ``benchmarks/``);
4. ``table``: the committed ``docs/performance.json`` (``make bench``'s run, on the machine it names): the job's
   own seconds there (``schedule.job_seconds_by_job``), else its family's mean (``stages.<family>``);
5. none: the job counts 0 s and the ETA says how many jobs it could not estimate.

The table is another machine's, and another commit's: CPU models of one machine kind differ (an AMD EPYC runs
these jobs markedly slower than an Intel Xeon), and so do commits. So while a run goes,
the table's estimates of the jobs left are scaled by this run's own measure of the difference
(:meth:`Tracker.refresh`): the job-seconds of its finished jobs that were estimated from the table over what the
table said for them (once they sum to ``CALIBRATE_MIN_S``), and the ETA line says by how much.

A job without a ``benchmark:`` (the ``all`` target) counts 0 s.

With N cores the jobs left take at least ``job-seconds / N`` (a job of ``threads: t`` counts ``min(t, N)`` times)
and at least the longest chain of dependent jobs left (the critical path: an edge wherever a job's input is
another planned job's output, or a file under an output folder). The ETA is the larger of the two
(:func:`remaining`); :func:`simulate` plays a list schedule of the plan for a closer figure (used by the
schedule report, :func:`schedule_report`).

``python -m rlrt.eta --watch --parent PID --plan FILE`` is the watcher :mod:`rlrt.driver` starts beside
``make run``'s Snakemake: it takes the plan the driver got from ``snakemake -n`` (same options), follows the run's own
log (``.snakemake/log/*.snakemake.log``: the job blocks as jobs start, ``Finished jobid: N``), and prints one
``make run: ETA ...`` line on stderr at the start and after every finished job (first estimating again, from the
benchmark files written since, the jobs that had no estimate: on a first run every job starts at 0 s); it exits
when Snakemake (its parent, ``--parent``) has. The same plan gives each job its priority (:func:`bottom_levels`:
the longest chain of job-seconds from its start to the end of the plan), which the Snakefile reads
(:func:`priority`), so on few cores the longest chains start first. ``RLRT_ETA=0`` turns both off.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = "benchmarks"
CALIBRATE_MIN_S = 60.0  # finished table-estimated job-seconds before the table is rescaled (a few jobs' worth)
_HEAD = re.compile(r"^(?:local)?(?:rule|checkpoint) ([A-Za-z_][\w]*):\s*$")
_FIELD = re.compile(r"^\s{4}(\w+): (.*)$")
_FINISHED = re.compile(r"^Finished jobid: (\d+)")


@dataclass
class Job:
    rule: str
    jobid: int = -1
    benchmark: str | None = None
    wildcards: str = ""
    threads: int = 1
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """The job's identity across a dry run and the real one: its benchmark file, else rule and wildcards."""
        return self.benchmark or self.rule_key

    @property
    def rule_key(self) -> str:
        """``rule[wildcards]`` as Snakemake prints them: what a rule's ``priority`` function sees (:func:`priority`)."""
        return f"{self.rule}[{self.wildcards}]"


def _paths(value: str) -> list[str]:
    return [p.strip() for p in value.split(", ") if p.strip()]


def parse_jobs(lines) -> list[Job]:
    """The job blocks of Snakemake's output (``snakemake -n``, or a run's log), in order."""
    jobs: list[Job] = []
    cur: Job | None = None
    for line in lines:
        line = line.rstrip("\n")
        m = _HEAD.match(line)
        if m:
            cur = Job(rule=m.group(1))
            jobs.append(cur)
            continue
        f = _FIELD.match(line) if cur is not None else None
        if not f:
            if line and not line.startswith(" "):
                cur = None
            continue
        k, v = f.groups()
        if k == "jobid" and v.strip().isdigit():
            cur.jobid = int(v)
        elif k == "benchmark":
            cur.benchmark = v.strip()
        elif k == "wildcards":
            cur.wildcards = v.strip()
        elif k == "threads" and v.strip().isdigit():
            cur.threads = int(v)
        elif k == "input":
            cur.inputs = _paths(v)
        elif k == "output":
            cur.outputs = _paths(v)
    return jobs


# ---------------------------------------------------------------- estimates


def bench_seconds(path: Path) -> float | None:
    """Column ``s`` of a Snakemake benchmark file (first row); None when absent or unreadable."""
    try:
        with path.open() as f:
            return float(next(csv.DictReader(f, delimiter="\t"))["s"])
    except (OSError, StopIteration, KeyError, ValueError, TypeError):
        return None


def family(benchmark: str) -> tuple[Path, str] | None:
    """(the ``benchmarks`` folder, the rule family: the first level under it, ``.tsv`` stripped) of a benchmark path."""
    parts = Path(benchmark).parts
    if BENCH_DIR not in parts[:-1]:
        return None
    i = len(parts) - 1 - parts[::-1].index(BENCH_DIR)
    return Path(*parts[:i + 1]), parts[i + 1].removesuffix(".tsv")


def load_table(path: Path | None) -> dict[str, float]:
    """From ``make bench``'s ``performance.json``: each job's measured seconds (``schedule.job_seconds_by_job``,
    keyed by its benchmark path under ``benchmarks/`` without ``.tsv``, e.g. ``rl/M-base/grpo``) over the mean
    job-seconds of its family (``stages``, keyed by the family); {} without a readable file."""
    if path is None:
        return {}
    try:
        res = json.loads(Path(path).read_text())
        out = {k: float(v["job_seconds"]) / int(v["jobs"]) for k, v in res["stages"].items() if int(v["jobs"]) > 0}
        out.update({k: float(v) for k, v in ((res.get("schedule") or {}).get("job_seconds_by_job") or {}).items()})
        return out
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ZeroDivisionError):
        return {}


def bench_key(benchmark: str) -> str | None:
    """A benchmark path's key in the table: its path under ``benchmarks/`` without ``.tsv``."""
    fam = family(benchmark)
    return None if fam is None else Path(benchmark).relative_to(fam[0]).as_posix().removesuffix(".tsv")


def estimates(jobs: list[Job], workdir: Path, table: dict[str, float] | None = None
              ) -> dict[str, tuple[float, str | None]]:
    """key -> (estimated seconds, where it comes from: ``last run``, ``folder median``, ``rule median``, ``table``,
    ``untimed`` (no benchmark), None (no estimate: 0 s)); see the module doc."""
    table = table or {}
    folder_cache: dict[Path, list[float]] = {}
    family_cache: dict[Path, list[float]] = {}

    def medians(cache, folder: Path, pattern: str) -> float | None:
        if folder not in cache:
            cache[folder] = [s for p in sorted(folder.glob(pattern)) if (s := bench_seconds(p)) is not None] \
                if folder.is_dir() else []
        return statistics.median(cache[folder]) if cache[folder] else None

    out: dict[str, tuple[float, str | None]] = {}
    for job in jobs:
        if not job.benchmark:
            out[job.key] = (0.0, "untimed")
            continue
        path = workdir / job.benchmark
        s = bench_seconds(path)
        if s is not None:
            out[job.key] = (s, "last run")
            continue
        s = medians(folder_cache, path.parent, "*.tsv")
        if s is not None:
            out[job.key] = (s, "folder median")
            continue
        fam = family(job.benchmark)
        if fam is not None:
            root, name = fam
            s = medians(family_cache, workdir / root / name, "**/*.tsv")
            if s is not None:
                out[job.key] = (s, "rule median")
                continue
            own = bench_key(job.benchmark)
            if own in table or name in table:
                out[job.key] = (table[own] if own in table else table[name], "table")
                continue
        out[job.key] = (0.0, None)
    return out


# ---------------------------------------------------------------- DAG: critical path, list schedule


def dependencies(jobs: list[Job]) -> dict[str, set[str]]:
    """key -> keys of the planned jobs it reads an output of (a file, or a file under an output folder)."""
    producer: dict[str, str] = {}
    for j in jobs:
        for o in j.outputs:
            producer[o.rstrip("/")] = j.key
    deps: dict[str, set[str]] = {j.key: set() for j in jobs}
    for j in jobs:
        for i in j.inputs:
            p = i.rstrip("/")
            while p:
                if p in producer:
                    if producer[p] != j.key:
                        deps[j.key].add(producer[p])
                    break
                p = p.rpartition("/")[0]
    return deps


def bottom_levels(jobs: list[Job], seconds: dict[str, float]) -> dict[str, float]:
    """key -> the longest chain of seconds from the job's start to the end of the plan (itself included)."""
    deps = dependencies(jobs)
    children: dict[str, list[str]] = {k: [] for k in deps}
    for k, ds in deps.items():
        for d in ds:
            children[d].append(k)
    level: dict[str, float] = {}

    def visit(k: str) -> float:  # iterative: a plan has hundreds of jobs, chains are short, but stay safe
        stack = [k]
        while stack:
            top = stack[-1]
            todo = [c for c in children[top] if c not in level]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            level[top] = seconds.get(top, 0.0) + max((level[c] for c in children[top]), default=0.0)
        return level[k]

    for k in deps:
        if k not in level:
            visit(k)
    return level


def critical_path(jobs: list[Job], seconds: dict[str, float]) -> tuple[float, list[str]]:
    """(seconds, keys) of the longest chain of dependent jobs of the plan."""
    if not jobs:
        return 0.0, []
    level = bottom_levels(jobs, seconds)
    deps = dependencies(jobs)
    children: dict[str, list[str]] = {k: [] for k in deps}
    for k, ds in deps.items():
        for d in ds:
            children[d].append(k)
    k = max(sorted(level), key=level.__getitem__)
    chain = [k]
    while children[k]:
        k = max(sorted(children[k]), key=level.__getitem__)
        chain.append(k)
    return level[chain[0]], chain


def simulate(jobs: list[Job], seconds: dict[str, float], cores: int, priority: dict[str, float] | None = None
             ) -> float:
    """Makespan of a list schedule of the plan on ``cores``: whenever cores are free, the ready job of highest
    ``priority`` (default: all equal, plan order) that fits starts (``threads`` capped at ``cores``)."""
    deps = dependencies(jobs)
    order = {j.key: i for i, j in enumerate(jobs)}
    need = {j.key: max(1, min(j.threads, cores)) for j in jobs}
    prio = priority or {}
    waiting = {k: set(d) for k, d in deps.items()}
    running: list[tuple[float, str]] = []
    t, free, done = 0.0, cores, set()
    while len(done) < len(jobs):
        ready = sorted((k for k, d in waiting.items() if not d), key=lambda k: (-prio.get(k, 0.0), order[k]))
        for k in ready:
            if need[k] <= free:
                free -= need[k]
                running.append((t + seconds.get(k, 0.0), k))
                del waiting[k]
        if not running:
            raise ValueError("the plan's dependencies form a cycle")
        running.sort()
        t, k = running.pop(0)
        free += need[k]
        done.add(k)
        for d in waiting.values():
            d.discard(k)
    return t


# ---------------------------------------------------------------- the ETA


@dataclass
class Remaining:
    eta_s: float  # max(work_s / cores, critical_s)
    work_s: float  # job-seconds left (core-seconds: a t-thread job counts min(t, cores) times)
    critical_s: float  # longest chain of dependent jobs left
    jobs_left: int
    unknown: int  # jobs left without any estimate (counted 0 s)


def remaining(jobs: list[Job], est: dict[str, tuple[float, str | None]], cores: int, done: set[str] = frozenset(),
              elapsed: dict[str, float] | None = None) -> Remaining:
    """The ETA of the jobs of ``jobs`` not in ``done``; a running job (``elapsed``: key -> seconds since it started)
    counts what is left of its estimate (none once it has overrun it)."""
    elapsed = elapsed or {}
    cores = max(1, int(cores))
    left = [j for j in jobs if j.key not in done]
    secs = {j.key: max(0.0, est.get(j.key, (0.0, None))[0] - elapsed.get(j.key, 0.0)) for j in left}
    work = sum(secs[j.key] * max(1, min(j.threads, cores)) for j in left)
    crit, _ = critical_path(left, secs)
    unknown = sum(1 for j in left if est.get(j.key, (0.0, None))[1] is None)
    return Remaining(max(work / cores, crit), work, crit, len(left), unknown)


def duration(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def eta_line(r: Remaining, cores: int, total: int, now: float | None = None,
             scale: tuple[float, int] | None = None) -> str:
    """``make run``'s ETA line; ``scale``: (factor, finished jobs it was measured on) applied to the table's estimates
    (:meth:`Tracker.refresh`)."""
    now = time.time() if now is None else now
    at = time.strftime("%H:%M", time.localtime(now + r.eta_s))
    line = (f"make run: ETA {duration(r.eta_s)} (~{at}): {r.jobs_left} of {total} jobs left, "
            f"{r.work_s:,.0f} job-seconds on {cores} core{'s' if cores != 1 else ''}, "
            f"longest chain {duration(r.critical_s)}")
    if scale is not None:
        jobs = "job" if scale[1] == 1 else "jobs"
        line += f"; the table's estimates x{scale[0]:.2f}, as measured on {scale[1]} finished {jobs}"
    if r.unknown:
        jobs = "job" if r.unknown == 1 else "jobs"
        line += f"; {r.unknown} {jobs} without a benchmark to estimate from (counted 0 s: the ETA is low)"
    return line


# ---------------------------------------------------------------- the schedule report (make bench, docs)


def schedule_report(jobs: list[Job], workdir: Path, cores: int, table: dict[str, float] | None = None) -> dict:
    """For a plan of a finished run (``snakemake -n --forceall``) and its benchmark files: total job-seconds,
    job-seconds / cores, the critical path (seconds and its jobs), and list schedules of the plan with the rules'
    priorities off (plan order) and on (longest chain first: what ``priority:`` approximates)."""
    est = estimates(jobs, workdir, table)
    secs = {k: v[0] for k, v in est.items()}
    work = sum(secs[j.key] * max(1, min(j.threads, cores)) for j in jobs)
    crit, chain = critical_path(jobs, secs)
    levels = bottom_levels(jobs, secs)
    return {"cores": cores, "jobs": len(jobs), "job_seconds": work, "work_bound_s": work / cores,
            "critical_path_s": crit, "critical_path": [{"job": k, "s": secs[k]} for k in chain],
            "unestimated": sum(1 for v in est.values() if v[1] is None),
            "job_seconds_by_job": {bench_key(j.benchmark): secs[j.key] for j in jobs
                                   if j.benchmark and bench_key(j.benchmark) and est[j.key][1] == "last run"},
            "list_schedule_s": {"plan order": simulate(jobs, secs, cores),
                                "longest chain first": simulate(jobs, secs, cores, levels)}}


# ---------------------------------------------------------------- priorities (the Snakefile's `priority`)


def load_priorities(path: str | os.PathLike | None) -> dict[str, int]:
    """``rule[wildcards]`` -> priority, as rlrt.driver.schedule writes them; {} without a readable file."""
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text())
        return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError, TypeError):
        return {}


def priority(priorities: dict[str, int], rule: str, wildcards) -> int:
    """A job's priority: its longest chain of job-seconds to the end of the plan; 0 for a job the plan lacks."""
    return priorities.get(f"{rule}[{', '.join(f'{k}={v}' for k, v in wildcards.items())}]", 0)


# ---------------------------------------------------------------- the watcher beside make run


def _parent_alive(pid: int) -> bool:
    return os.getppid() == pid and Path(f"/proc/{pid}").exists() if Path("/proc/self").exists() \
        else os.getppid() == pid


def _newest_log(folder: Path, before: set[str]) -> Path | None:
    """The newest Snakemake log that did not exist when the watcher started (the plan's own dry run, started
    before the watcher, leaves one too: never the run's)."""
    logs = [p for p in folder.glob("*.snakemake.log") if p.name not in before]
    return max(logs, key=lambda p: (p.stat().st_mtime, p.name)) if logs else None


class Tracker:
    """The ETA state of one run: the plan, estimates, and what its log says has started and finished."""

    def __init__(self, jobs: list[Job], est: dict[str, tuple[float, str | None]], cores: int):
        self.jobs, self.est, self.cores = jobs, est, cores
        self.keys = {j.key for j in jobs}
        self.started: dict[str, float] = {}
        self.by_id: dict[int, str] = {}
        self.done: set[str] = set()
        self._block: list[str] | None = None
        self.scale: tuple[float, int] | None = None  # (factor, jobs) on the table's estimates (refresh)

    def feed(self, line: str, now: float) -> bool:
        """One line of the run's log; True when a job finished (time to print)."""
        if self._block is not None:
            if _FIELD.match(line):
                self._block.append(line)
                return False
            self._flush(now)
        if _HEAD.match(line):
            self._block = [line]
            return False
        m = _FINISHED.match(line)
        if m:
            key = self.by_id.get(int(m.group(1)))
            if key is not None:
                self.done.add(key)
            return True
        return False

    def _flush(self, now: float) -> None:
        if self._block is None:
            return
        for job in parse_jobs(self._block):
            if job.key in self.keys:
                self.by_id[job.jobid] = job.key
                self.started.setdefault(job.key, now)
        self._block = None

    def refresh(self, workdir: Path, table: dict[str, float] | None = None) -> int:
        """After a job finished: measure how this run's speed differs from the table's (the finished jobs that were
        estimated from the table: their benchmark files' seconds over the table's, a ratio of sums, once those
        sum to ``CALIBRATE_MIN_S``), and estimate again the jobs left that had no estimate (a first run without
        a table: no benchmark file when it started) from the benchmark files the run has written since (the
        folder's or rule's median of the jobs finished); returns how many got one."""
        measured = table_s = 0.0
        n = 0
        for j in self.jobs:
            s0, source = self.est.get(j.key, (0.0, None))
            if j.key in self.done and source == "table" and s0 > 0 and j.benchmark:
                s = bench_seconds(workdir / j.benchmark)
                if s is not None:
                    measured, table_s, n = measured + s, table_s + s0, n + 1
        if n and measured >= CALIBRATE_MIN_S:
            self.scale = (measured / table_s, n)
        todo = [j for j in self.jobs if self.est.get(j.key, (0.0, None))[1] is None and j.key not in self.done]
        if not todo:
            return 0
        new = {k: v for k, v in estimates(todo, workdir, table).items() if v[1] is not None}
        self.est.update(new)
        return len(new)

    def scaled(self) -> dict[str, tuple[float, str | None]]:
        """The estimates with the table's scaled by this run's measure (:meth:`refresh`); the others as they are."""
        if self.scale is None:
            return self.est
        f = self.scale[0]
        return {k: (s * f, src) if src == "table" else (s, src) for k, (s, src) in self.est.items()}

    def line(self, now: float) -> str:
        self._flush(now)
        running = {k: now - t for k, t in self.started.items() if k not in self.done}
        r = remaining(self.jobs, self.scaled(), self.cores, self.done, running)
        return eta_line(r, self.cores, len(self.jobs), now, self.scale)


def watch(plan: Path, parent: int, workdir: Path, cores: int, table: Path | None, poll_s: float = 1.0,
          out=None, known_logs: set[str] | None = None) -> int:
    """The watcher's loop (see the module doc): the ETA of ``plan`` while the run ``parent`` lives."""
    out = out or sys.stderr
    logs = workdir / ".snakemake" / "log"
    before = set(known_logs) if known_logs is not None else {p.name for p in logs.glob("*.snakemake.log")}
    try:
        os.nice(10)
    except OSError:
        pass
    jobs = parse_jobs(plan.read_text().splitlines())
    if not jobs:
        return 0
    table_data = load_table(table)
    tracker = Tracker(jobs, estimates(jobs, workdir, table_data), cores)
    print(tracker.line(time.time()), file=out, flush=True)
    handle, buf = None, ""
    try:
        while _parent_alive(parent):
            if handle is None:
                log = _newest_log(logs, before)
                if log is not None:
                    handle = log.open()
            if handle is not None:
                buf += handle.read()
                *lines, buf = buf.split("\n")
                finished = False
                for line in lines:
                    finished |= tracker.feed(line, time.time())
                if finished and len(tracker.done) < len(jobs) and _parent_alive(parent):
                    tracker.refresh(workdir, table_data)
                    print(tracker.line(time.time()), file=out, flush=True)
            time.sleep(poll_s)
    finally:
        if handle is not None:
            handle.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--watch", action="store_true", help="follow the run of --plan (make run's Snakemake)")
    p.add_argument("--parent", type=int, help="the Snakemake process to follow (the watcher exits with it)")
    p.add_argument("--plan", help="a plan (snakemake -n output): followed with --watch, else reported on")
    p.add_argument("--workdir", default=".")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--table", default=None, help="performance.json with per-stage job-seconds (fallback)")
    p.add_argument("--known-logs", default=None, help="comma-separated Snakemake log names that are not the run's")
    a = p.parse_args(argv)
    table = Path(a.table) if a.table else None
    if a.watch:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is Snakemake's to handle; this exits with it
        poll = float(os.environ.get("RLRT_ETA_POLL_S") or 1.0)  # how often the log is read (tests: shorter)
        known = None if a.known_logs is None else {n for n in a.known_logs.split(",") if n}
        return watch(Path(a.plan), a.parent or os.getppid(), Path(a.workdir), a.cores, table, poll_s=poll,
                     known_logs=known)
    if a.plan:
        jobs = parse_jobs(Path(a.plan).read_text().splitlines())
        print(json.dumps(schedule_report(jobs, Path(a.workdir), a.cores, load_table(table)), indent=2))
        return 0
    p.error("--watch or --plan")
    return 2


if __name__ == "__main__":
    sys.exit(main())
