"""Issue 35 §1: a `results:` path with a space, a single quote and a `$` never leaves the results tree.

`results: out/my results` with an existing file `out/my` once made the first job (`mlflow_init`, `... > {log}`
unquoted) overwrite `out/my`. Every rule now quotes its paths (`{output:q}`, `{log:q}`, ...), and this file checks it:

- every rule's shell command (all of them: the ci DAG and the paper-scale plan, from `snakemake -n -p`) run by bash
  with `python` replaced by a function that records its arguments: each path reaches the stage as one argument,
  exactly as declared (no word splitting, no `$` expansion), shlex's reading of the command agrees, the log
  redirection lands on the declared log file, and a decoy file at the path's prefix before the space stays
  byte-unchanged;
- the first jobs for real (mlflow_init, prepare_data) under that path: outputs and MLflow store under the odd path,
  the decoy unchanged, nothing written beside the results tree;
- the Makefile's path variables (CONFIG, RESULTS, DOCS) with a space and a quote, through `make -n`.

Cost: three dry runs (ci twice, paper once) and two small jobs, about 20 s of CPU.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import ROOT

ODD = "tmp/we ird'$x dir/results"  # a space, a single quote, a `$`
ISSUE = "out/my results"  # issue 35's own case: only a space, so an unquoted `> {log}` writes to out/my
DECOY_BYTES = b"a user's own file: never to be touched\n"
TOUCHED = {"mlflow_init"}  # rules whose output is a touch() flag Snakemake writes itself, given to no stage


def _decoy(results: str) -> str:
    return results.split(" ", 1)[0]  # the prefix before the space: what an unquoted path's first word names


def _workdir(tmp_path: Path, results: str) -> Path:
    work = tmp_path / "work"
    decoy = work / _decoy(results)
    decoy.parent.mkdir(parents=True)
    decoy.write_bytes(DECOY_BYTES)
    return work


def _snakemake(work: Path, configfile: str, results: str, *extra: str, timeout: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
           "--configfile", str(ROOT / "config" / configfile), "--config", f"results={results}", *extra]
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = {**os.environ, "PYTHONHASHSEED": "0", "PATH": path}
    for var in ("MLFLOW_TRACKING_URI", "RLRT_MLFLOW_SPOOL", "RLRT_MLFLOW_ARTIFACT_ROOT"):
        env.pop(var, None)  # the workflow derives them from this results path
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=work)


def planned_jobs(text: str) -> list[dict]:
    """Every job of a `snakemake -n -p` listing: rule, declared input / output / log paths, shell command."""
    jobs, cur = [], None
    for line in text.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            cur = {"rule": m.group(1), "input": [], "output": [], "log": [], "cmd": None}
            jobs.append(cur)
        elif cur is not None and (m := re.match(r"^    (input|output|log): (.*)$", line)):
            cur[m.group(1)] = m.group(2).split(", ")  # the odd paths hold no ", "
        elif cur is not None and line.startswith("Shell command: "):
            cur["cmd"] = line[len("Shell command: "):]
    return [j for j in jobs if j["rule"] != "all"]


def _run_in_bash(work: Path, out: Path, jobs: list[dict]) -> list[list[str] | None]:
    """Each job's command through bash with `python` (the stages' interpreter) a function that writes
    [$RLRT_WILDCARDS, *args] NUL-separated: what the stage would have received. None where it never ran."""
    out.mkdir()
    lines = ['python() { printf "%s\\0" "$RLRT_WILDCARDS" "$@" > "$RLRT_ARGV_OUT"; }']
    for i, job in enumerate(jobs):
        for log in job["log"]:
            (work / log).parent.mkdir(parents=True, exist_ok=True)  # Snakemake makes the log's folder
        lines.append(f"RLRT_ARGV_OUT={shlex.quote(str(out / str(i)))}; eval {shlex.quote(job['cmd'])}")
    script = out.parent / f"{out.name}.sh"
    script.write_text("\n".join(lines) + "\n")
    subprocess.run(["bash", str(script)], cwd=work, capture_output=True, text=True, timeout=120)
    got = []
    for i in range(len(jobs)):
        f = out / str(i)
        got.append(f.read_bytes().decode().split("\0")[:-1] if f.exists() else None)
    return got


def _check_commands(tmp_path: Path, configfile: str, results: str) -> set[str]:
    """Every job of the config's plan under ``results``, its command run as above; the rules seen."""
    work = _workdir(tmp_path, results)
    proc = _snakemake(work, configfile, results, "--cores", "1", "-n", "-p", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    jobs = planned_jobs(proc.stdout + proc.stderr)
    assert jobs and all(j["cmd"] for j in jobs), "every job is a shell command"
    got = _run_in_bash(work, tmp_path / "argv", jobs)
    decoy = work / _decoy(results)
    assert decoy.read_bytes() == DECOY_BYTES, f"{decoy} was overwritten"
    first, *rest = results.split(" ")  # the words an unquoted path would split into
    for job, argv in zip(jobs, got):
        where = f"{job['rule']} ({job['output'][0]}): {job['cmd'][:300]}"
        assert argv is not None, f"bash could not run the command of {where}"
        wildcards, args = argv[0], argv[1:]
        # shlex reads the command as bash does: env assignments, the interpreter, the stage's argv, `> log 2>&1`
        words = shlex.split(job["cmd"])
        assert words[:2] == [f"RLRT_RULE={job['rule']}", f"RLRT_WILDCARDS={wildcards}"], where
        assert words[3:] == [*args, ">", *job["log"], "2>&1"], where
        declared = set(job["input"]) | set(job["output"])
        for a in args:
            whole = a == results or a.startswith(results + "/")
            # no argument is a fragment of the path (one of its words, or the path with `$x` expanded)
            assert whole or not (a.startswith(first) or any(a.startswith(w) for w in rest)), \
                f"{a!r} is a split path in {where}"
            # a path given to the stage is the results folder, a declared input / output, or declared outputs' folder
            assert not whole or a == results or a in declared or any(d.startswith(a + "/") for d in declared), \
                f"{a!r} is not a declared path of {where}"
        for o in job["output"] if job["rule"] not in TOUCHED else ():  # every output passed whole, or its folder
            assert o in args or any(o.startswith(a + "/") for a in args if a.startswith(results + "/")), \
                f"{o!r} not passed: {where}"
        # the log redirection lands on the declared log file
        assert len(job["log"]) == 1 and (work / job["log"][0]).is_file(), where
    # nothing was written beside the results tree (a word-split path leaves a stray file or folder)
    top = results.split("/")[0]
    assert sorted(os.listdir(work)) in (sorted([top, ".snakemake"]), [top]), os.listdir(work)
    assert sorted(os.listdir(work / top)) == sorted({first.split("/")[1], results.split("/")[1]}), \
        os.listdir(work / top)
    return {j["rule"] for j in jobs}


def _every_rule() -> set[str]:
    """Every rule the workflow defines (the Snakefile and rules/*.smk, conditional ones included)."""
    text = "\n".join(p.read_text() for p in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))])
    return set(re.findall(r"^\s*(?:rule|checkpoint) (\w+):", text, re.M)) - {"all"}


def test_every_rule_passes_an_odd_results_path_as_one_argument(tmp_path):
    """The ci DAG and the paper-scale plan (which adds prepare_dataset, hub data sets, and hub-staged backbones):
    together every rule of the workflow, each job's command checked."""
    every = _every_rule()
    assert {"mlflow_init", "prepare_data", "prepare_dataset", "backbone", "rl", "rlt_evaluate", "claims"} <= every
    ci = _check_commands(tmp_path / "ci", "ci.yaml", ODD)
    paper = _check_commands(tmp_path / "paper", "paper.yaml", ODD)
    assert every <= ci | paper, f"rules no command here covers: {sorted(every - ci - paper)}"


def test_issue_case_leaves_the_users_file_alone(tmp_path):
    """Issue 35's report: `results: out/my results` beside an existing file `out/my` (every ci job's command)."""
    rules = _check_commands(tmp_path, "ci.yaml", ISSUE)
    assert "mlflow_init" in rules


def test_first_jobs_run_under_an_odd_results_path(tmp_path):
    """mlflow_init (issue 35's job) and prepare_data for real: their outputs, logs and MLflow store under the odd
    path, the decoy byte-unchanged, nothing beside the results tree."""
    work = _workdir(tmp_path, ODD)
    targets = [f"{ODD}/mlflow/.initialized", *(f"{ODD}/data/{s}.jsonl" for s in ("train", "test", "test_hard"))]
    proc = _snakemake(work, "ci.yaml", ODD, "--cores", "2", *targets, timeout=300)
    logs = "\n".join(f"== {p}\n{p.read_text()[-2000:]}" for p in (work / ODD / "logs").rglob("*.log")) \
        if (work / ODD / "logs").is_dir() else ""
    assert proc.returncode == 0, proc.stderr[-4000:] + logs
    assert (work / _decoy(ODD)).read_bytes() == DECOY_BYTES
    for t in targets:
        assert (work / t).exists(), t
    assert (work / ODD / "mlflow" / "mlflow.db").is_file()  # the store the workflow derives from `results:`
    for log in ("mlflow_init.log", "prepare_data.log"):
        assert (work / ODD / "logs" / log).is_file(), log
    n = [(yaml.safe_load((ROOT / "config" / f).read_text()) or {}).get("data", {}).get("splits", {}).get("train", {})
         .get("n") for f in ("config.yaml", "ci.yaml")]
    assert (work / ODD / "data" / "train.jsonl").read_text().count("\n") == (n[1] or n[0])  # the train split's rows
    assert sorted(os.listdir(work)) == sorted(["tmp", ".snakemake"]), os.listdir(work)
    assert sorted(os.listdir(work / "tmp")) == sorted(["we", "we ird'$x dir"]), os.listdir(work / "tmp")


def test_make_passes_its_path_variables_as_one_argument():
    """The Makefile's path variables (CONFIG, RESULTS, DOCS) reach the commands as one word each (`make -n`)."""
    paths = {"CONFIG": "my cfg/we ird's.yaml", "RESULTS": "my res/it's", "DOCS": "my docs/o'k"}
    proc = subprocess.run(["make", "-n", "run", "dryrun", "docs", "verify", "publish", "pull", "report",
                           *(f"{k}={v}" for k, v in paths.items())], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [shlex.split(line) for line in proc.stdout.replace("\\\n", " ").splitlines() if " -m rlrt." in line
             or "snakemake " in line]
    seen = set()
    for words in lines:
        for flag, key in (("--configfile", "CONFIG"), ("--results", "RESULTS"), ("--out", "DOCS")):
            if flag in words:
                assert words[words.index(flag) + 1] == paths[key], words
                seen.add(key)
        if words[1:3] == ["-m", "rlrt.config"]:
            assert words[3:] == [paths["CONFIG"]], words
        if words[1:4] == ["-m", "rlrt.manifest", "verify"]:
            assert words[4:] == [paths["RESULTS"]], words
            seen.add("verify")
    assert seen == {"CONFIG", "RESULTS", "DOCS", "verify"}, proc.stdout
    assert sum(w[1:3] == ["-m", "rlrt.driver"] for w in lines) == 2, proc.stdout
