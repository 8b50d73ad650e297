"""``make docs``: the documents whose numbers come from a run, written from what the run left behind.

    python -m rlrt.docs [--configfile OVERLAY] [--results DIR] [--bench FILE] --out docs/

* ``--results DIR``: a finished results tree (``make run``'s, by default the config's ``results:``) ->
  ``<out>/results.md``: the claims table with its verdicts, Tables 1 and 3, the RLT tables and the reward-rank
  correlation, the sweeps, the figures (linked by relative paths), the training-reward summary, and a stamp:
  the machine, the date, the checkout's commit, the config's hash, and the jobs' wall time and job-seconds read
  from Snakemake's ``benchmark:`` files (``<results>/benchmarks/``).
* ``--bench FILE``: ``make bench``'s ``results/bench/pipeline.json`` -> ``<out>/performance.md``: per-stage jobs,
  job-seconds and peak memory, the RL step's phase breakdown, the sampler's speed, the speed targets met or not,
  the schedule (critical path vs job-seconds / cores), under the stamp the benchmark recorded (its date, machine
  and commit); and the file itself as ``<out>/performance.json``, whose per-job seconds ``make run``'s ETA reads.

Every number in these documents is read from those files; nothing is typed by hand. ``results.md`` may carry one
hand-written section between the lines ``<!-- BEGIN interpretation -->`` and ``<!-- END interpretation -->``: a
regeneration keeps it, and refuses (exit 1, naming them) when it quotes a number the generated tables no longer
contain, so no sentence can disagree with the numbers. A results tree without one of the tables its config
plans is refused too (an unfinished run). Nothing here imports a model or runs a job: it takes seconds.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import re
import statistics
import sys
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rlrt.config import ConfigError, load_overlay
from rlrt.manifest import read_bytes as read_result_bytes
from rlrt.manifest import read_text as read_result  # checked against the run's manifest (rlrt.manifest)
from rlrt.tracking import git_commit

BEGIN = "<!-- BEGIN interpretation -->"
END = "<!-- END interpretation -->"

# The speed targets of the pipeline on a 2-core machine: (what, how pipeline.json measures it, target, met?).
SPEED_TARGETS = (
    ("whole default DAG, wall", lambda r: r["wall_s"] / 60, "≤ 90 min", lambda v: v <= 90, "{:.1f} min"),
    ("one RLRT step over one GRPO step", lambda r: r["step_time"]["rlrt_over_grpo"], "≤ 1.10x",
     lambda v: v <= 1.10, "{:.2f}x"),
    ("lean sampler over `generate`, tokens/s, same tokens (slowest batch)",
     lambda r: min(x["speedup"] if x["same_tokens"] else 0.0 for x in r["sampler"]["results"].values()),
     "≥ 3x", lambda v: v >= 3, "{:.2f}x"),
    ("a model job's imports", lambda r: r["imports_s"]["model_job"], "≤ 2 s", lambda v: v <= 2, "{:.2f} s"),
    ("`snakemake -n` on the finished tree", lambda r: r["dryrun_s"], "≤ 3 s", lambda v: v <= 3, "{:.2f} s"),
)

# A stretch of more than this with no job running is a pause (the driver stopped), not the run's time.
PAUSE_S = 120.0

_NUMBER = re.compile(r"(?<![\w.])[-+−]?\d+(?:,\d{3})*(?:\.\d+)?(?:e[-+]?\d+)?(?!\w|\.\d)")


class DocsError(Exception):
    """A results tree or benchmark file that cannot make a document; the message names the file."""


# ---- stamp -----------------------------------------------------------------------------------------------------------

def machine(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """``<cores> cores, <CPU model>`` of this machine (the model from /proc/cpuinfo's first ``model name``)."""
    model = "unknown CPU"
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}"


def config_hash(cfg: dict[str, Any]) -> str:
    """SHA-256 (first 12 hex digits) of the merged, validated config as canonical JSON."""
    text = json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def benchmark_totals(bench_dir: Path) -> dict[str, Any]:
    """Snakemake's benchmark files (one TSV per job, column ``s`` = the job's seconds, ``max_rss`` in MB) ->
    jobs, job-seconds and peak RSS per stage family (the first level under ``benchmarks/``), their totals, and the
    wall span: first job's start (file time minus its seconds) to the last job's end (file time)."""
    stages: dict[str, dict[str, float]] = defaultdict(lambda: {"jobs": 0, "job_seconds": 0.0, "peak_rss_mb": 0.0})
    starts, ends = [], []
    for tsv in sorted(bench_dir.rglob("*.tsv")):
        with io.StringIO(tsv.read_text()) as f:  # Snakemake writes these itself: no manifest entry to check
            try:
                row = next(csv.DictReader(f, delimiter="\t"))
                s = float(row["s"])
            except (StopIteration, KeyError, ValueError):
                raise DocsError(f"{tsv}: not a Snakemake benchmark file (no row with a number in column 's')") \
                    from None
        rec = stages[tsv.relative_to(bench_dir).parts[0].removesuffix(".tsv")]
        rec["jobs"] += 1
        rec["job_seconds"] += s
        rss = row.get("max_rss", "NA")
        if rss not in ("NA", "", "-"):
            rec["peak_rss_mb"] = max(rec["peak_rss_mb"], float(rss))
        end = tsv.stat().st_mtime
        starts.append(end - s)
        ends.append(end)
    if not ends:
        raise DocsError(f"{bench_dir}: no Snakemake benchmark files")
    segments = busy_segments(list(zip(starts, ends)))
    return {"stages": dict(sorted(stages.items())), "jobs": len(ends),
            "job_seconds": sum(r["job_seconds"] for r in stages.values()),
            "wall_s": sum(b - a for a, b in segments), "span_s": max(ends) - min(starts),
            "segments": [(datetime.fromtimestamp(a, timezone.utc), datetime.fromtimestamp(b, timezone.utc))
                         for a, b in segments],
            "first_start": datetime.fromtimestamp(min(starts), timezone.utc),
            "last_end": datetime.fromtimestamp(max(ends), timezone.utc)}


def busy_segments(intervals: list[tuple[float, float]], gap_s: float = PAUSE_S) -> list[tuple[float, float]]:
    """The stretches of time in which a job ran: the union of the jobs' (start, end) intervals, where two stretches
    less than ``gap_s`` apart are one (the driver's own seconds between jobs count as the run's). A run stopped and
    resumed later has one segment per sitting, and its wall time is their sum: a pause counts nothing. A job's
    benchmark covers its last process only, so the time of a job killed mid-way, up to its last resume point, is in
    no segment."""
    out: list[list[float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1] + gap_s:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _utc(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M UTC")


def wall_time(bench: dict[str, Any]) -> str:
    """The stamp's wall time: the time a job ran, and the sittings when the run was stopped and resumed."""
    segs = bench["segments"]
    if len(segs) == 1:
        return (f"{bench['wall_s'] / 60:,.1f} min: first job's start {_utc(bench['first_start'])} to the last job's "
                f"end {_utc(bench['last_end'])}")
    return (f"{bench['wall_s'] / 60:,.1f} min with a job running, in {len(segs)} sittings (the run was stopped and "
            f"resumed; a pause counts nothing, nor a killed job's time since its last resume point): "
            + "; ".join(f"{_utc(a)} to {b.strftime('%H:%M')} ({(b - a).total_seconds() / 60:,.0f} min)"
                        for a, b in segs))


# ---- results.md ------------------------------------------------------------------------------------------------------

def expected_tables(cfg: dict[str, Any]) -> list[tuple[str, str]]:
    """(heading, path under the results tree) of every table the config plans, in the document's order."""
    exp = cfg.get("experiments") or {}
    rlt = cfg.get("rlt") if (cfg.get("rlt") or {}).get("enabled", True) else None
    out = []
    if cfg.get("claims"):
        out.append(("The claims", "tables/claims.md"))
    out.append(("Table 1", "tables/table1.md"))
    if exp.get("table3"):
        out.append(("Table 3", "tables/table3.md"))
    if rlt:
        out += [("RLT Table 1", "tables/rlt_table1.md"), ("RLT Table 2: cold start", "tables/rlt_table2.md")]
    if exp.get("sweeps"):
        out.append(("Sweeps", "tables/sweeps.md"))
    return out


def _demote(md: str, levels: int = 2) -> str:
    """A table file's own ``#`` headings one level under the document's ``##`` sections."""
    return "\n".join("#" * levels + line if line.startswith("#") else line for line in md.strip().splitlines())


def training_summary(curves_dir: Path) -> list[str]:
    """``plots/training/training_<backbone>.csv`` (step, one column per run: its ``reward_mean``) -> a Markdown
    table of each run's mean training reward over its first and last fifth of the steps (seeded replicates
    ``+seed=<k>`` left out: the claims table scores them)."""
    lines = ["| backbone | run | steps | reward, first fifth | reward, last fifth |",
             "| --- | --- | ---: | ---: | ---: |"]
    files = sorted(curves_dir.glob("training_*.csv"))
    for f in files:
        backbone = f.stem.removeprefix("training_")
        rows = list(csv.DictReader(io.StringIO(read_result(f))))
        runs = [c for c in (rows[0].keys() if rows else []) if c != "step" and "+seed=" not in c]
        for run in runs:
            vals = [float(r[run]) for r in rows if r[run] not in ("", None)]
            if not vals:
                continue
            k = max(1, len(vals) // 5)
            lines.append(f"| {backbone} | {run} | {len(vals)} | {statistics.fmean(vals[:k]):.3f} | "
                         f"{statistics.fmean(vals[-k:]):.3f} |")
    return lines if files else []


def reward_rank(path: Path) -> list[str]:
    """The reward-rank study (``rlt/reward_rank.json``): per rank the data set's mean RLT reward and the student's
    accuracy, and Pearson r of (rank, accuracy)."""
    text = read_result(path)  # a ManifestError propagates as itself
    try:
        rr = json.loads(text)
        r = rr["pearson_r"]
        rows = [f"| {k} | {m:.2f} | {a:.1f} |" for k, m, a in zip(rr["ranks"], rr["mean_reward"], rr["accuracy"])]
    except (ValueError, KeyError, TypeError) as e:
        raise DocsError(f"{path}: not the reward-rank file rules/rlt.smk writes ({type(e).__name__}: {e})") from None
    r_text = f"{r:+.2f}" if r is not None else f"undefined ({rr.get('note')})"
    return ["### Reward rank", "", f"`{path}` ({rr.get('y', 'student accuracy')}); Pearson r of (rank, accuracy) = "
            f"{r_text}:", "", "| rank | mean RLT reward of the data set | student accuracy |",
            "| ---: | ---: | ---: |", *rows, ""]


def interpretation(existing: Path) -> str:
    """The hand-written section of an existing ``results.md`` (markers included), or ''."""
    if not existing.is_file():
        return ""
    text = existing.read_text()
    i, j = text.find(BEGIN), text.find(END)
    if i < 0 or j < i:
        return ""
    return text[i:j + len(END)]


def numbers(text: str) -> set[str]:
    """The numbers a text quotes, sign and thousands separators dropped (``−5.6`` and ``+5.6`` are ``5.6``)."""
    return {m.group().lstrip("+-−").replace(",", "") for m in _NUMBER.finditer(text)}


def unsupported_numbers(doc: str) -> list[str]:
    """Numbers the interpretation section of ``doc`` quotes that its generated part does not contain."""
    i, j = doc.find(BEGIN), doc.find(END)
    if i < 0 or j < i:
        return []
    generated = doc[:i] + doc[j + len(END):]
    return sorted(numbers(doc[i + len(BEGIN):j]) - numbers(generated), key=lambda s: (len(s), s))


def results_doc(results: Path, out_dir: Path, cfg: dict[str, Any], config_files: list[str],
                kept: str = "", cpuinfo: str | Path = "/proc/cpuinfo", now: datetime | None = None) -> str:
    """The text of ``results.md`` for the finished tree ``results`` (written into ``out_dir``)."""
    rlt = any(p == "tables/rlt_table2.md" for _, p in expected_tables(cfg))
    needed = [p for _, p in expected_tables(cfg)] + (["rlt/reward_rank.json"] if rlt else [])
    missing = [p for p in needed if not (results / p).is_file()]
    if missing:
        raise DocsError(f"{results}: not a finished run of this config; missing {', '.join(missing)} "
                        "(finish it with `make run`, or pass the config it ran with: CONFIG=...)")
    bench = benchmark_totals(results / "benchmarks")
    now = now or datetime.now(timezone.utc)
    out = ["# Results of the latest full run", "",
           f"Written by `make docs` (`python -m rlrt.docs`) from `{results}`; every number below is read from the "
           "run's own files. Do not edit it by hand, except the interpretation section at the end.", "",
           "| stamp | |", "| --- | --- |",
           f"| written | {_utc(now)} |",
           f"| machine (where `make docs` ran) | {machine(cpuinfo)} |",
           f"| commit | `{git_commit()}` |",
           f"| config (merged and validated) | {' + '.join(f'`{c}`' for c in config_files)}, sha256 "
           f"`{config_hash(cfg)}` |",
           f"| jobs | {bench['jobs']} (benchmark files under `{results}/benchmarks/`) |",
           f"| job-seconds | {bench['job_seconds']:,.0f} |",
           f"| wall time | {wall_time(bench)} |",
           ""]
    for heading, path in expected_tables(cfg):
        out += [f"## {heading}", "", f"`{results}/{path}`:", "", _demote(read_result(results / path)), ""]
        if path == "tables/rlt_table2.md":
            out += reward_rank(results / "rlt/reward_rank.json")
    training = training_summary(results / "plots" / "training")
    if training:
        out += ["## Training reward", "",
                f"Per RL run, the mean of its logged training reward (`reward_mean`) over the first and the last fifth "
                f"of its steps (`{results}/plots/training/`; the claims' seeded replicates are left out).", "",
                *training, ""]
    figures = sorted((results / "figures").glob("*.png"))
    if figures:
        out += ["## Figures", "", f"Copied from `{results}/figures/` into `{out_dir.name}/figures/` by `make docs`, so "
                "that this document carries them.", ""]
        out += [line for f in figures for line in (f"### {f.stem}", "", f"![{f.name}](figures/{f.name})", "")]
    out += ["## Where the time went", "", "| stage | jobs | job-seconds | peak RSS of a job (MB) |",
            "| --- | ---: | ---: | ---: |"]
    out += [f"| {s} | {r['jobs']} | {r['job_seconds']:,.0f} | {r['peak_rss_mb']:,.0f} |"
            for s, r in bench["stages"].items()]
    out += ["", kept or f"{BEGIN}\n{END}", ""]
    return "\n".join(out)


# ---- performance.md --------------------------------------------------------------------------------------------------

def performance_doc(res: dict[str, Any], source: str, now: datetime | None = None) -> str:
    """The text of ``performance.md`` from ``make bench``'s ``pipeline.json`` (``res``)."""
    now = now or datetime.now(timezone.utc)
    stamp = f"{res['date']}, {res['machine']}, commit `{res['commit']}`"
    out = ["# Performance of the latest `make bench`", "",
           f"Written by `make docs` (`python -m rlrt.docs`) on {_utc(now)} from `{source}`; every figure below is from "
           f"that one `make bench` run: **{stamp}**. Do not edit it by hand.", "",
           "## Whole default DAG", "",
           f"`snakemake --cores {res['cores']}` on `config/config.yaml`, {run_source(res)}: "
           f"**{res['wall_s'] / 60:.1f} min** wall, {res['jobs']} jobs, {res['job_seconds_total']:,.0f} job-seconds "
           f"({stamp}).", "",
           "| stage | jobs | job-seconds | peak RSS of a job (MB) |", "| --- | ---: | ---: | ---: |"]
    out += [f"| {s} | {r['jobs']} | {r['job_seconds']:,.0f} | {r['peak_rss_mb']:,.0f} |"
            for s, r in res["stages"].items()]
    rep = res.get("claims_replicates")
    if rep:
        out += ["", f"The claims study's seeded replicates (`<run>+seed=<k>`, k ≥ 1): {rep['jobs']} jobs, "
                f"{rep['job_seconds']:,.0f} job-seconds, {100 * rep['share']:.0f} % of the DAG's job-seconds."]
    st = res["step_time"]
    b = st["breakdown_s"]
    arms = {m: name for m, name in (("grpo", "GRPO"), ("rlrt", "RLRT"), ("rlsd", "RLSD"),
                                    ("grpo_recompute", "GRPO, θ_old recomputed"),
                                    ("grpo_every_row", "GRPO, every row updated")) if m in b}
    out += ["", "## One RL step", "",
            f"S-base, {st['question_batch']} questions × {st['n_rollouts']} rollouts, mean of {st['steps']} steps, "
            f"the three methods' steps alternated in one process (`bench/bench_step_time.py`; {stamp}): GRPO "
            f"{st['grpo_step_s']:.2f} s, RLRT {st['rlrt_step_s']:.2f} s ({st['rlrt_over_grpo']:.2f}x), RLSD "
            f"{st['rlsd_step_s']:.2f} s ({st['rlsd_over_grpo']:.2f}x)."
            + (f" θ_old's log-probs are the sampler's own (`rl.old_logp: rollout`); GRPO with them recomputed by a "
               f"separate pass, the fourth arm: {st['grpo_recompute_step_s']:.2f} s, so the sampler's save "
               f"{st['rollout_logp_speedup']:.2f}x of a GRPO step." if "grpo_recompute" in b else "")
            + (f" The update leaves out the rows that add nothing (advantages all 0, no distillation); GRPO running "
               f"every row, the fifth arm: {st['grpo_every_row_step_s']:.2f} s ({st['idle_rows_speedup']:.2f}x)."
               if "grpo_every_row" in b else ""), "",
            "| phase (s) | " + " | ".join(arms.values()) + " |", "| --- |" + " ---: |" * len(arms)]
    for k in ("time_gen", "time_grade", "time_old_logp", "time_teacher", "time_update", "teacher_rows"):
        name = {"time_gen": "sampling", "time_old_logp": "old log-probs", "time_teacher": "teacher pass",
                "teacher_rows": "teacher rows (count)"}.get(k, k.removeprefix("time_"))
        fmt = "{:.0f}" if k == "teacher_rows" else "{:.3f}"
        out.append(f"| {name} | " + " | ".join(fmt.format(b[m][k]) for m in arms) + " |")
    out += ["", "## Sampler", "",
            f"The lean sampler against `transformers`' `generate`, same checkpoint, prompts, batches, lengths and seed "
            f"(`bench/bench_sampler.py`; {stamp}):", "",
            "| batch | rows | tokens | generate tok/s | lean tok/s | speed-up | same tokens |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, r in res["sampler"]["results"].items():
        out.append(f"| {name} | {r['rows']} | {r['generated_tokens']} | {r['generate_tok_per_s']:,.0f} | "
                   f"{r['lean_tok_per_s']:,.0f} | {r['speedup']:.2f}x | {r['same_tokens']} |")
    out += ["", "## Start-up", "",
            f"`snakemake -n` on the finished tree: {res['dryrun_s']:.2f} s. Imports over an empty interpreter, best of "
            f"3: a model job {res['imports_s']['model_job']:.2f} s, a table job {res['imports_s']['table_job']:.2f} s "
            f"({stamp}).", "",
            "## Speed targets", "", f"On {res['cores']} cores ({stamp}):", "",
            "| target | measured | goal | met |", "| --- | ---: | ---: | --- |"]
    for what, get, goal, ok, fmt in SPEED_TARGETS:
        v = get(res)
        out.append(f"| {what} | {fmt.format(v)} | {goal} | {'yes' if ok(v) else '**no**'} |")
    if res.get("levers"):
        out += levers_section(res["levers"], stamp)
    if res.get("schedule"):
        out += schedule_section(res["schedule"], res["wall_s"], stamp)
    if res.get("cuts"):
        out += cuts_section(res["cuts"], res["cores"], stamp)
    out.append("")
    return "\n".join(out)


def run_source(res: dict[str, Any]) -> str:
    """Where the bench's whole-DAG figures come from: its own run in a fresh folder, or (``make bench FROM=...``)
    the finished tree of ``make run``, whose wall time is the sum of the sittings in which a job ran."""
    run = res.get("run") or {}
    sittings = run.get("sittings")
    if not sittings:
        return "in a fresh folder, one uninterrupted run"
    fmt = "%Y-%m-%d %H:%M"
    spans = [(datetime.fromisoformat(a), datetime.fromisoformat(b)) for a, b in sittings]
    text = f"{run['from']}"
    if len(spans) == 1:
        return text + f", one sitting ({spans[0][0].strftime(fmt)} to {spans[0][1].strftime('%H:%M')} UTC)"
    return (text + f", in {len(spans)} sittings (stopped and resumed; the wall time is their sum, a pause counts "
            "nothing, nor a killed job's time since its last resume point: "
            + "; ".join(f"{a.strftime(fmt)} to {b.strftime('%H:%M')}" for a, b in spans) + " UTC)")


def schedule_section(sch: dict[str, Any], wall_s: float, stamp: str) -> list[str]:
    """``performance.md``'s schedule section from ``rlrt.eta.schedule_report`` of the bench's finished tree (``sch``):
    the critical path (the longest chain of dependent jobs, in the run's own job-seconds) against job-seconds /
    cores, the two lower bounds of any schedule's wall time, and the measured wall time beside them."""
    cores, crit, work = sch["cores"], sch["critical_path_s"], sch["work_bound_s"]
    bound = max(crit, work)
    out = ["", "## Schedule", "",
           f"On {cores} cores no schedule beats the larger of the critical path, **{crit / 60:.1f} min** (the longest "
           f"chain of dependent jobs, each at its measured job-seconds), and the job-seconds / {cores}, "
           f"**{work / 60:.1f} min** ({sch['job_seconds']:,.0f} job-seconds over {sch['jobs']} jobs); the run took "
           f"{wall_s / 60:.1f} min, {100 * (wall_s / bound - 1):.0f} % over that bound ({stamp}). "
           + ("The critical path is the bound: more cores would not help." if crit >= work else
              f"The work is the bound: the critical path is {100 * crit / work:.0f} % of it, so on {cores} cores "
              "only the tail's order matters (`make run` starts the longest chains first).")
           + " A list schedule of the same jobs: "
           + ", ".join(f"{k} {v / 60:.1f} min" for k, v in sch["list_schedule_s"].items()) + ".", "",
           "| critical path, in order | job-seconds |", "| --- | ---: |"]
    out += [f"| `{c['job']}` | {c['s']:,.0f} |" for c in sch["critical_path"] if c["s"] > 0]
    return out


def cuts_section(cuts: dict[str, Any], cores: int, stamp: str) -> list[str]:
    """``performance.md``'s section on cutting work (``bench/bench_cuts.py`` on the run's evaluations): per avg@n
    claim row, the standard error and verdict on the run's own files and under half the samples, half the problems
    and one seed fewer (runs of 3 seeds or more); with what each cut saves, from the run's benchmark files."""
    tot, ev, last, seeds = cuts["job_seconds"], cuts["eval_job_seconds"], cuts["last_seed_job_seconds"], cuts["seeds"]
    rows = cuts["rows"]
    if not rows:
        return []

    def moved(key: str) -> int:
        return sum(1 for r in rows if key in r and (r[key]["verdict"] != r["full"]["verdict"]
                                                     if "verdict" in r[key] else r[key]["same_verdict"] < 1))

    n = rows[0]["samples_half"]["n"]
    out = ["", "## Cutting work: what the claims would lose", "",
           f"Each avg@n claim row scored as the `claims` stage scores it, on this run's evaluations and under three "
           f"cuts made from the same files (`bench/bench_cuts.py`; {stamp}): **avg@{n}** (each problem's {n} samples "
           f"drawn without replacement from its {2 * n}, {cuts['draws']} draws), **half the problems** of every split"
           + (f", and **{seeds - 1} seeds** (0 to {seeds - 2}). " if seeds >= 3 else ". ")
           + f"The evaluations are {ev:,.0f} of the run's {tot:,.0f} job-seconds ({100 * ev / tot:.0f} %): halving "
           f"their samples or problems saves at most {ev / 2:,.0f} "
           f"(~{ev / 2 / cores / 60:.0f} min on {cores} cores)."
           + (f" The last seed's jobs are {last:,.0f} job-seconds ({100 * last / tot:.0f} %)." if seeds >= 3 else "")
           + f" Verdicts moved: avg@{n} in {moved('samples_half')} of {len(rows)} rows (in at least one draw), half "
           f"the problems in {moved('problems_half')}"
           + (f", {seeds - 1} seeds in {moved('fewer_seeds')}." if seeds >= 3 else "."), "",
           f"| claim | where | arms | a − b (points) | SE, verdict | avg@{n}: SE, same verdict | half the problems: "
           f"SE, verdict | {seeds - 1} seeds: SE, verdict |", "| --- | --- | --- | ---: | --- | --- | --- | --- |"]
    for r in rows:
        f, h, q = r["full"], r["samples_half"], r["problems_half"]
        two = r.get("fewer_seeds")
        out.append(f"| {r['claim']} | {r['where']} | {r['a']} − {r['b']} | {f['diff']:+.1f} | {f['se']:.2f}, "
                   f"{f['verdict']} | {h['se']:.2f} ({h['se'] / f['se']:.2f}x), {100 * h['same_verdict']:.0f} % | "
                   f"{q['se']:.2f}, {q['verdict']} | "
                   + (f"{two['se']:.2f}, {two['verdict']} |" if two else "– |"))
    return out


def levers_section(lev: dict[str, Any], stamp: str) -> list[str]:
    """``performance.md``'s compute-levers section from ``bench/bench_levers.py``'s JSON (``lev``): per base
    backbone each lever's median speed-up over the engine's default (fp32, eager, for-loop AdamW) and whether it
    pays by the rule its row states (bf16: the training step >= 1.3x; compile: a single job of the backbone
    repays a cold compile; fused AdamW: it saves >= 5 % of a training step)."""
    feats = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in lev["cpu_features"].items())
    names = list(lev["backbones"])
    bbs = [lev["backbones"][n] for n in names]

    def yes(ok: bool) -> str:
        return "yes" if ok else "**no**"

    rows = {"bf16 matrix products, slowest to fastest projection": [], "bf16 autocast training step": [],
            "largest logit difference, bf16 vs fp32": [],
            "fp32 step's time in matrix products; step bound if they ran 2x faster / free": [],
            "bf16 pays (step ≥ 1.30x)": [],
            "`torch.compile` training step (one length)": [], "compile time, cold / warm inductor cache": [],
            "break-even steps, cold / warm cache (the backbone's job)": [],
            "compile pays in one job from a cold cache": [],
            "AdamW `foreach` / `fused` over the for-loop": [], "AdamW for-loop share of the step": [],
            "fused AdamW pays (saves ≥ 5 % of the step)": []}
    for b in bbs:
        g = sorted(x["bf16_speedup"] for x in b["gemm"].values())
        st, c, o = b["step"], b["compile"], b["optimizer"]
        rows["bf16 matrix products, slowest to fastest projection"].append(f"{g[0]:.2f}x to {g[-1]:.2f}x")
        rows["bf16 autocast training step"].append(f"{st['bf16_speedup']:.2f}x")
        rows["largest logit difference, bf16 vs fp32"].append(f"{st['max_logit_diff']:.3g} (logits up to "
                                                              f"{st['logit_scale']:.3g})")
        rows["fp32 step's time in matrix products; step bound if they ran 2x faster / free"].append(
            f"{100 * st['matmul_share']:.0f} %; {st['bound_if_matmul_2x']:.2f}x / {st['bound_if_matmul_free']:.2f}x")
        rows["bf16 pays (step ≥ 1.30x)"].append(yes(st["bf16_speedup"] >= 1.3))
        rows["`torch.compile` training step (one length)"].append(f"{c['speedup']:.2f}x")
        rows["compile time, cold / warm inductor cache"].append(f"{c['compile_cold_s']:.1f} s / "
                                                                f"{c['compile_warm_s']:.1f} s")
        be = [("never" if c[k] is None else f"{c[k]:,.0f}") for k in ("break_even_steps_cold", "break_even_steps_warm")]
        rows["break-even steps, cold / warm cache (the backbone's job)"].append(
            f"{be[0]} / {be[1]} ({c['job_steps']:,} steps)")
        rows["compile pays in one job from a cold cache"].append(
            yes(c["break_even_steps_cold"] is not None and c["break_even_steps_cold"] <= c["job_steps"]))
        rows["AdamW `foreach` / `fused` over the for-loop"].append(f"{o['foreach']['speedup']:.2f}x / "
                                                                   f"{o['fused']['speedup']:.2f}x")
        share = o["for_loop"]["share_of_step"]
        rows["AdamW for-loop share of the step"].append(f"{100 * share:.1f} %")
        saved = share * (1 - 1 / o["fused"]["speedup"])
        rows["fused AdamW pays (saves ≥ 5 % of the step)"].append(f"{yes(saved >= 0.05)} ({100 * saved:.1f} %)")
    b0 = bbs[0]
    out = ["", "## Compute levers", "",
           f"Each lever against the local engine's default (fp32, eager, for-loop AdamW) on the base backbones' "
           f"architectures at a pre-training batch ({b0['batch']} rows x {b0['length']} tokens), alternated repeat by "
           f"repeat in one process on {lev['threads']} thread, {lev['repeats']} repeats; each figure is the median "
           f"of the per-repeat ratios, > 1x faster (`bench/bench_levers.py`, torch {lev['torch']}; {stamp}). "
           f"CPU features: {feats}.", "",
           "| lever | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    out += [f"| {k} | " + " | ".join(v) + " |" for k, v in rows.items()]
    rc = lev.get("rl_compile")
    if rc:
        be = "never" if rc["break_even_steps_warm"] is None else f"{rc['break_even_steps_warm']:,.0f}"
        net = rc["job_saving_s_warm"]
        out += ["", f"The PPO update of real RL steps ({rc['backbone']}, {rc['question_batch']} questions × "
                f"{rc['n_rollouts']} rollouts, GRPO, {rc['steps']} steps per arm from the same weights and batch; "
                "variable lengths, one graph with dynamic shapes): `torch.compile` makes the update "
                f"{rc['speedup']:.2f}x faster ({rc['update_eager_s']:.2f} s to {rc['update_compiled_s']:.2f} s per "
                f"step) and costs {rc['compile_cold_s']:.0f} s in a job's first step from a cold inductor cache, "
                f"{rc['compile_warm_s']:.0f} s from a warm one; break-even {be} steps warm, so a job of "
                f"{rc['job_steps']} steps would {'save' if net > 0 else 'lose'} {abs(net):.0f} s with a warm cache "
                f"({100 * net / (rc['job_steps'] * rc['update_eager_s']):.0f} % of its update time; largest loss "
                f"difference {rc['max_loss_diff']:.2g}). Compile of RL "
                + ("pays" if net >= 0.10 * rc["job_steps"] * rc["update_eager_s"] else "does **not** pay")
                + " (the rule: a job from a warm cache saves ≥ 10 % of its update time; some job pays the cold "
                "compile, and compiled numerics would need the claims checked again)."]
    return out


# ---- command line ----------------------------------------------------------------------------------------------------

def copy_figures(src: Path, dst: Path) -> None:
    """The run's PNG figures into ``dst`` (the document's own copy); a PNG there that the run no longer has goes."""
    figures = {f.name: f for f in src.glob("*.png")}
    dst.mkdir(parents=True, exist_ok=True)
    for old in dst.glob("*.png"):
        if old.name not in figures:
            old.unlink()
    for name, f in figures.items():
        (dst / name).write_bytes(read_result_bytes(f))


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", default=None, help="the overlay the run used (merged over config/config.yaml)")
    p.add_argument("--results", default=None, help="a finished results tree (default: the config's results:)")
    p.add_argument("--no-results", action="store_true", help="write performance.md only")
    p.add_argument("--bench", default=None, help="make bench's pipeline.json (performance.md)")
    p.add_argument("--out", default="docs", help="the folder the documents go to")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    written, problems = [], []
    if not a.no_results:
        try:
            base = Path(__file__).resolve().parents[2] / "config" / "config.yaml"
            overlay = a.configfile if a.configfile and Path(a.configfile).resolve() != base else None
            files = ["config/config.yaml"] + ([overlay] if overlay else [])
            cfg = load_overlay(overlay or base)
            results = Path(a.results or cfg["results"])
            kept = interpretation(out / "results.md")
            doc = results_doc(results, out, cfg, files, kept)
            copy_figures(results / "figures", out / "figures")
            _write(out / "results.md", doc)
            written.append(out / "results.md")
            stale = unsupported_numbers(doc)
            if stale:
                problems.append(f"{out / 'results.md'}: the hand-written interpretation quotes {', '.join(stale)}, "
                                "which the generated tables do not contain: correct it")
        except (ConfigError, DocsError, OSError) as e:
            problems.append(f"results.md not written: {e}")
    if a.bench:
        try:
            res = json.loads(Path(a.bench).read_text())
            _write(out / "performance.md", performance_doc(res, a.bench))
            written.append(out / "performance.md")
            # the run's figures beside it, committed: make run's ETA reads each job's seconds there (rlrt.eta)
            _write(out / "performance.json", json.dumps(res, indent=2) + "\n")
            written.append(out / "performance.json")
        except (OSError, ValueError, KeyError) as e:
            problems.append(f"performance.md not written: {a.bench}: {type(e).__name__}: {e}")
    for w in written:
        print(f"wrote {w}")
    for msg in problems:
        print(f"docs: {msg}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
