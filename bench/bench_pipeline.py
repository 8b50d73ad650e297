"""Benchmark: the whole embedded default DAG (``make run`` from scratch) and where its time goes.

One run, side by side where it compares:

1. ``snakemake --cores 2`` on ``config/config.yaml`` into a fresh folder, through ``make run``'s driver (its
   schedule, longest chains first, and its ETA lines): wall time, and per stage family the
   job count, job-seconds and peak memory (every rule's ``benchmark:`` file: ``s``, ``max_rss``), next to the
   last measured run before the speed work (``bench/baseline.json``: its date, machine and commit);
2. ``snakemake -n`` on the finished tree (best of 3);
3. job start-up: the imports a model job (torch, transformers' Qwen3, the tokenizer, MLflow, the local engine)
   and a table job (pandas, matplotlib) make, best of 3, over an empty interpreter;
4. ``bench_step_time.py`` (GRPO vs RLRT vs RLSD steps alternated on the run's S-base, with the phase breakdown,
   and GRPO with θ_old's log-probs recomputed instead of the sampler's) and ``bench_sampler.py`` (the lean
   sampler vs ``generate`` on the same checkpoint, prompts and batches).
5. ``bench_levers.py``: the compute levers (bf16 products and autocast, ``torch.compile``, fused AdamW) against
   the engine's default at the base backbones' shapes, alternated, as ratios.
6. The schedule (``rlrt.eta.schedule_report``): the DAG's critical path (``snakemake -n --forceall`` on the
   finished tree, each job at its measured seconds) against job-seconds / cores, and list schedules of the plan.
7. ``bench_cuts.py``: what halving the evaluations' samples or problems, or one seed fewer, would do to the
   claims' standard errors and verdicts, with what each saves.

Writes ``results/bench/pipeline.json`` and ``results/bench/summary.md``.

    python bench/bench_pipeline.py [--workdir /tmp/rlrt-bench]   (the folder is kept for inspection)
    python bench/bench_pipeline.py --from-results results         (``make bench FROM=results``)

``--from-results DIR`` measures the finished tree of a ``make run`` of the same config instead of running the DAG a
second time (the whole default is hours on 2 cores: the project pays for one full run, not two). Its wall time is
the time a job ran (``rlrt.docs.busy_segments``): a run stopped and resumed counts each sitting, not the pause,
and the sittings are listed; the rest (1, 2 on that tree, 3-6) is measured as above, now.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL_JOB_IMPORTS = ("from rlrt.backends.local.model import lean_transformers; lean_transformers(); "
                     "import torch; from transformers import AutoModelForCausalLM, AutoTokenizer; "
                     "from transformers.models.qwen3 import modeling_qwen3; "
                     "import rlrt.backends.local.rl, rlrt.tasks.grading, rlrt.tracking")
TABLE_JOB_IMPORTS = "import pandas, matplotlib.pyplot; import rlrt.stages.tables, rlrt.stages.figures"


def machine() -> str:
    """The stamp's machine (rlrt.docs.machine: cores and CPU model) with the OS."""
    from rlrt.docs import machine as cores_and_cpu

    return f"{cores_and_cpu()}, {platform.system()} {platform.release()}"


def best_of(cmd: list[str], env: dict, n: int = 3, cwd: Path | None = None) -> float:
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, cwd=cwd, capture_output=True)
        best = min(best, time.perf_counter() - t0)
    return best


def stage_table(bench_dir: Path) -> dict[str, dict[str, float]]:
    """Per stage family (the benchmark tree's first level): jobs, job-seconds, peak RSS (MB) of its largest job
    (``rlrt.docs.benchmark_totals``, which make docs reads the same files with)."""
    from rlrt.docs import benchmark_totals

    return benchmark_totals(bench_dir)["stages"]


def replicate_cost(bench_dir: Path) -> dict[str, float]:
    """What the claims study adds to the DAG: the jobs of its seeded replicates (``<run>+seed=<k>``, k >= 1, in
    the benchmark file's path; the seed-0 runs are Table 1's own), their job-seconds and share of all job-seconds.
    """
    jobs, secs, total = 0, 0.0, 0.0
    for tsv in bench_dir.rglob("*.tsv"):
        with tsv.open() as f:
            s = float(next(csv.DictReader(f, delimiter="\t"))["s"])
        total += s
        if "+seed=" in str(tsv.relative_to(bench_dir)):
            jobs += 1
            secs += s
    return {"jobs": jobs, "job_seconds": secs, "share": secs / total if total else 0.0}


def finished_tree(results: Path, config: str, env: dict) -> dict:
    """``--from-results``: check that ``results`` is the config's tree and that nothing is left to run there, and
    return where its wall time comes from: the sittings in which a job ran (``rlrt.docs.busy_segments``)."""
    from rlrt.config import load_overlay
    from rlrt.docs import benchmark_totals

    cfg = load_overlay(config)
    if (ROOT / cfg["results"]).resolve() != results:
        sys.exit(f"--from-results {results}: {config}'s results: is {cfg['results']}; measure the tree that config "
                 "wrote (or pass --config)")
    plan = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
                           str(ROOT), "--configfile", config, "-n", "--nolock", "--quiet", "rules"], env=env,
                          capture_output=True, text=True)
    if plan.returncode != 0 or "Nothing to be done" not in plan.stdout + plan.stderr:
        sys.exit(f"--from-results {results}: the run is not finished (`snakemake -n` plans jobs): finish it with "
                 "`make run` first\n" + (plan.stdout + plan.stderr)[-2000:])
    tot = benchmark_totals(results / "benchmarks")
    return {"from": f"the finished tree of `make run` ({results.name}/), measured where it ran",
            "wall_s": tot["wall_s"], "span_s": tot["span_s"],
            "sittings": [[a.isoformat(timespec="seconds"), b.isoformat(timespec="seconds")]
                         for a, b in tot["segments"]]}


def run_json(cmd: list[str], env: dict) -> dict:
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(proc.stdout[proc.stdout.index("{"):])


def summary_md(res: dict, base: dict) -> str:
    lines = [f"# `make bench` — {res['date']}, {res['machine']}, commit {res['commit']}", ""]
    lines += [f"Whole default DAG: **{res['wall_s'] / 60:.1f} min** wall, {res['jobs']} jobs, "
              f"{res['job_seconds_total']:,.0f} job-seconds on {res['cores']} cores "
              f"(before: {base['wall_s'] / 60:.1f} min, {base['jobs']} jobs, {base['job_seconds_total']:,.0f} "
              f"job-seconds; {base['date']}, {base['machine']}, commit {base['commit']}).", ""]
    lines += ["| stage | jobs | job-seconds | before | peak RSS of a job (MB) |", "| --- | ---: | ---: | ---: | ---: |"]
    for stage, rec in res["stages"].items():
        before = base["job_seconds_by_stage"].get(stage)
        lines.append(f"| {stage} | {rec['jobs']} | {rec['job_seconds']:,.0f} | "
                     f"{'' if before is None else f'{before:,.0f}'} | {rec['peak_rss_mb']:,.0f} |")
    rep = res.get("claims_replicates")
    if rep:
        lines += ["", f"The claims study's seeded replicates (`<run>+seed=<k>`, k >= 1): {rep['jobs']} jobs, "
                  f"{rep['job_seconds']:,.0f} job-seconds, {100 * rep['share']:.0f} % of the DAG's job-seconds."]
    st = res["step_time"]
    b = st["breakdown_s"]
    lines += ["", f"One RL step on S-base ({st['question_batch']} questions x {st['n_rollouts']} rollouts, "
              f"mean of {st['steps']} steps, alternated): GRPO {st['grpo_step_s']:.2f} s, RLRT {st['rlrt_step_s']:.2f} s "
              f"(**{st['rlrt_over_grpo']:.2f}x**), RLSD {st['rlsd_step_s']:.2f} s ({st['rlsd_over_grpo']:.2f}x, "
              "every row scored by the teacher)"
              + (f"; GRPO with θ_old's log-probs recomputed instead of the sampler's: "
                 f"{st['grpo_recompute_step_s']:.2f} s "
                 f"({st['rollout_logp_speedup']:.2f}x slower)." if "grpo_recompute" in b else "."), "",
              "| phase (s) | " + " | ".join(b) + " |", "| --- |" + " ---: |" * len(b)]
    for k in ("time_gen", "time_grade", "time_old_logp", "time_teacher", "time_update", "teacher_rows"):
        lines.append(f"| {k.removeprefix('time_')} | " + " | ".join(f"{b[m][k]:.3f}" for m in b) + " |")
    lines += ["", "Sampler (lean loop vs `transformers` `generate`, same checkpoint, prompts, batch, lengths, seed):", "",
              "| batch | rows | tokens | generate tok/s | lean tok/s | speed-up | same tokens |",
              "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, r in res["sampler"]["results"].items():
        lines.append(f"| {name} | {r['rows']} | {r['generated_tokens']} | {r['generate_tok_per_s']:,.0f} | "
                     f"{r['lean_tok_per_s']:,.0f} | {r['speedup']:.2f}x | {r['same_tokens']} |")
    if res.get("levers"):
        from rlrt.docs import levers_section

        lines += levers_section(res["levers"], f"{res['date']}, {res['machine']}, commit {res['commit']}")
    lines += ["", f"`snakemake -n` on the finished tree: {res['dryrun_s']:.2f} s. Imports of a model job: "
              f"{res['imports_s']['model_job']:.2f} s; of a table job: {res['imports_s']['table_job']:.2f} s "
              f"(over an empty interpreter, best of 3).", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workdir", default=None)
    p.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    p.add_argument("--out", default=str(ROOT / "results" / "bench" / "pipeline.json"))
    p.add_argument("--baseline", default=str(ROOT / "bench" / "baseline.json"))
    p.add_argument("--from-results", default=None,
                   help="measure this finished results tree of `make run` (the config's results:) instead of "
                        "running the DAG again in a fresh folder")
    args = p.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Rules run `python` from PATH (the job's environment): this interpreter's bin/ first, as `make` does.
    env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    if args.from_results:
        work, results = ROOT, Path(args.from_results).resolve()
        sittings = finished_tree(results, args.config, env)
        wall = sittings["wall_s"]
    else:
        work = Path(args.workdir or tempfile.mkdtemp(prefix="rlrt-bench-"))
        results = work / "results"
        if results.exists():
            shutil.rmtree(results)
    smk = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
           "--configfile", args.config, "--cores", "2"]
    if not args.from_results:
        # through make run's driver (rlrt.driver): the same schedule as `make run` (its longest-chain-first
        # priorities from the plan) and its ETA lines while the run goes
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "rlrt.driver", *smk[3:]], check=True, env=env)
        wall = time.perf_counter() - t0
        sittings = {"from": "a fresh folder, one uninterrupted run"}
    stages = stage_table(results / "benchmarks")
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    res = {"date": date.today().isoformat(), "machine": machine(), "commit": commit, "cores": 2, "wall_s": wall,
           "run": sittings,
           "jobs": sum(r["jobs"] for r in stages.values()), "stages": stages,
           "job_seconds_by_stage": {k: r["job_seconds"] for k, r in stages.items()},
           "job_seconds_total": sum(r["job_seconds"] for r in stages.values()),
           "claims_replicates": replicate_cost(results / "benchmarks")}
    # the critical path vs job-seconds / cores (rlrt.eta): the whole DAG's plan, each job at its measured seconds
    from rlrt.eta import parse_jobs, schedule_report

    plan = subprocess.run(smk + ["-n", "--forceall"], env=env, capture_output=True, text=True, check=True)
    res["schedule"] = schedule_report(parse_jobs((plan.stdout + "\n" + plan.stderr).splitlines()), work, 2)
    res["dryrun_s"] = best_of(smk + ["-n"], env)
    empty = best_of([sys.executable, "-c", "pass"], env)
    res["imports_s"] = {"model_job": best_of([sys.executable, "-c", MODEL_JOB_IMPORTS], env) - empty,
                        "table_job": best_of([sys.executable, "-c", TABLE_JOB_IMPORTS], env) - empty}
    ckpt = str(results / "checkpoints" / "S-base")
    res["step_time"] = run_json([sys.executable, str(ROOT / "bench" / "bench_step_time.py"), "--config", args.config,
                                 "--checkpoint", ckpt, "--out", str(out.with_name("step_time.json"))], env)
    res["sampler"] = run_json([sys.executable, str(ROOT / "bench" / "bench_sampler.py"), "--config", args.config,
                               "--checkpoint", ckpt, "--out", str(out.with_name("sampler.json"))], env)
    res["levers"] = run_json([sys.executable, str(ROOT / "bench" / "bench_levers.py"), "--config", args.config,
                              "--checkpoints", str(results / "checkpoints"),
                              "--out", str(out.with_name("levers.json"))], env)
    res["cuts"] = run_json([sys.executable, str(ROOT / "bench" / "bench_cuts.py"), "--config", args.config,
                            "--results", str(results), "--out", str(out.with_name("cuts.json"))], env)
    out.write_text(json.dumps(res, indent=2) + "\n")
    base = json.loads(Path(args.baseline).read_text())
    out.with_name("summary.md").write_text(summary_md(res, base))
    print(out.with_name("summary.md").read_text())


if __name__ == "__main__":
    main()
