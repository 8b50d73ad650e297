"""DVC on top of the Snakemake DAG: Snakemake owns the one DAG, DVC versions what it produced.

``dvc.yaml`` has no ``stages:`` (a second DAG would disagree with Snakemake's): only top-level ``params`` (the
config files), ``metrics`` (``<results>/metrics/eval.json``), ``plots`` (RL reward curves, pass@k) and
``artifacts`` (the final RL checkpoints of Table 1, the RLT teacher and the distilled students). It is generated
from the workflow itself (:func:`dvc_yaml`); ``tests/test_publish.py`` checks that the committed file is current.

``publish`` (``make publish``) ``dvc add``s the DAG's *leaves* -- the outputs no job reads (tables, figures, the
metrics and plot files, analysis outputs) -- and the artifacts, then ``dvc push``es them to the default remote.
The DAG comes from Snakemake (``--detailed-summary``: every output with the rule and input files of its job).
Two facts keep Snakemake from rerunning anything afterwards:

* the cache links files back as hardlinks (``.dvc/config``: ``cache.type = hardlink,symlink,copy``), so an added
  file keeps its inode and modification time; a checkpoint that evaluation jobs read stays older than their
  outputs. ``publish`` checks it: ``snakemake -n`` must still plan zero jobs.
* ``pull`` (``make pull``, in a fresh clone) checks the artifacts out first and the leaves after them, so every
  output is newer than any pulled input; Snakemake does not rerun a job only because an intermediate file that
  nothing asks for is missing.

The manifest (``<results>/.manifest``, :mod:`rlrt.manifest`: every output's SHA-256, recorded when it was written)
is published with them: ``publish`` refuses a tree that does not verify, and ``pull`` verifies what it brought back
(each pulled file against its recorded hash, every published path present) and fails when anything differs.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import yaml

from rlrt import manifest

REPO = Path(__file__).resolve().parents[2]
HEADER = """\
# DVC view of the Snakemake workflow (no stages: Snakemake owns the DAG). GENERATED for config/config.yaml by
# `python -m rlrt.publish dvc-yaml` -- edit src/rlrt/publish.py, not this file (tests/test_publish.py checks it).
# `dvc metrics show`, `dvc plots show`, `dvc metrics diff <rev>` read the run's files; `make publish` versions the
# DAG's leaves and these artifacts (`dvc add` + `dvc push`); `make pull` in a fresh clone brings them back.
"""


@dataclass(frozen=True)
class Output:
    path: str
    rule: str
    inputs: tuple[str, ...]


def snakemake_cmd(workdir: str | os.PathLike, configfiles: Sequence[str], *extra: str) -> list[str]:
    """snakemake on ``workdir`` with this checkout's Snakefile; config files relative to ``workdir`` (else as given)."""
    configs = [str(Path(workdir, c)) if Path(workdir, c).exists() else str(c) for c in configfiles]
    return [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
            "--configfile", *configs, "--nolock", *extra]


def dag_outputs(workdir: str | os.PathLike, configfiles: Sequence[str]) -> list[Output]:
    """Every output of the workflow's DAG (done or not), with its rule and its job's input files; paths are relative
    to ``workdir``, as the rules write them."""
    env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    proc = subprocess.run(snakemake_cmd(workdir, configfiles, "--detailed-summary"), capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"snakemake --detailed-summary failed:\n{proc.stderr[-3000:]}")
    rows = list(csv.DictReader(io.StringIO(proc.stdout), delimiter="\t"))
    return [Output(r["output_file"], r["rule"],
                   tuple(x for x in (r["input-file(s)"] or "").split(",") if x and x != "-")) for r in rows]


def leaves(outputs: Iterable[Output]) -> list[str]:
    """Outputs that no job reads (a folder output counts as read when a job reads it or anything inside it)."""
    outputs = list(outputs)
    read = {i.rstrip("/") for o in outputs for i in o.inputs}
    prefixes = tuple(f"{r}/" for r in read)
    return sorted(o.path for o in outputs if o.path not in read and not any(x.startswith(f"{o.path}/") for x in read)
                  and not o.path.startswith(prefixes))


def _name(path: str, results: str) -> str:
    """A DVC artifact name (lowercase letters, digits, dashes) from an output path."""
    rel = os.path.relpath(path, results)
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", rel.lower())).strip("-")


def artifacts(outputs: Iterable[Output], cfg: dict) -> dict[str, dict]:
    """The checkpoints worth a name: Table 1's final RL models, the RLT teacher, the RLT-paper students."""
    from rlrt.plan import table1_methods

    results = cfg["results"]
    table1 = {(b, m) for b in cfg["rl_backbones"] for m in table1_methods(cfg, b)}
    out = {}
    for o in outputs:
        parts = Path(os.path.relpath(o.path, results)).parts
        if o.rule == "rl" and parts[-1] == "model" and (parts[1], parts[2]) in table1:
            out[_name(o.path, results)] = {"path": o.path, "type": "model",
                                           "desc": f"{parts[2]} on {parts[1]}: final RL checkpoint (Table 1)",
                                           "labels": ["rl", parts[2], parts[1]]}
        elif o.rule == "rlt_teacher_rl" and not o.path.endswith(".json"):
            out[_name(o.path, results)] = {"path": o.path, "type": "model",
                                           "desc": "RLT teacher after RL on r_SS - lambda * r_KL",
                                           "labels": ["rlt", "teacher"]}
        elif o.rule == "rlt_student_sft" and parts[-1] == "model" and "-rank" not in parts[-2] \
                and "+seed=" not in parts[-2]:  # the claims' seed replicates are no named artifacts
            out[_name(o.path, results)] = {"path": o.path, "type": "model",
                                           "desc": f"student {parts[2]} distilled ({parts[3]}; RLT Table 1)",
                                           "labels": ["rlt", "student", parts[2]]}
    return dict(sorted(out.items()))


def dvc_yaml(cfg: dict, outputs: Sequence[Output], configfiles: Sequence[str]) -> dict:
    """The dvc.yaml of a workflow config (its params, metrics, plots and artifacts)."""
    from rlrt.plan import fig8_splits, plain_runs

    results = cfg["results"]
    plots = []
    for backbone, runs in plain_runs(cfg).items():  # the claims' seed replicates: in the CSVs
        plots.append({f"RL reward {backbone}": {
            "x": "step", "y": {f"{results}/plots/training/training_{backbone}.csv": list(runs)},
            "title": f"RL training reward (mean over rollouts), {backbone}", "x_label": "step",
            "y_label": "reward_mean"}})
    fig8 = (cfg.get("experiments") or {}).get("fig8")
    if fig8:
        cols = [f"{fig8['backbone']}/{r}/{s}" for r in fig8["runs"] for s in fig8_splits(cfg)]
        plots.append({"pass@k": {"x": "k", "y": {f"{results}/plots/passk.csv": cols},
                                 "title": f"pass@k, k = 1..{fig8['n']} (Fig 8)", "x_label": "k",
                                 "y_label": "pass@k (%)"}})
    return {"params": [str(c) for c in configfiles], "metrics": [f"{results}/metrics/eval.json"], "plots": plots,
            "artifacts": artifacts(outputs, cfg)}


def render(doc: dict) -> str:
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=120)


def load_config(repo: str | os.PathLike, configfiles: Sequence[str]) -> dict:
    """The merged config as Snakemake builds it: config/config.yaml, then each --configfile over it."""
    from rlrt.config import load

    base = Path(repo, "config", "config.yaml").resolve()
    files = [base] + [Path(repo, c).resolve() for c in configfiles if Path(repo, c).resolve() != base]
    return load(*files)


def _dvc(*args: str, cwd: str | os.PathLike) -> None:
    dvc = Path(sys.executable).with_name("dvc")
    subprocess.run([str(dvc) if dvc.exists() else "dvc", *args], cwd=cwd, check=True)


def publish(repo: str | os.PathLike, configfiles: Sequence[str], push: bool = True) -> list[str]:
    """``dvc add`` the DAG's leaves and the artifacts of ``repo`` (the checkout with dvc.yaml and results), then
    ``dvc push``; returns the added paths. Refuses when the DAG is not complete (a half-run tree)."""
    outputs = dag_outputs(repo, configfiles)
    missing = [o.path for o in outputs if not (Path(repo) / o.path).exists()]
    if missing:
        raise SystemExit(f"publish: the run is not complete ({len(missing)} outputs missing, e.g. {missing[0]}); "
                         "run `make run` first")
    cfg = load_config(repo, configfiles)
    results = Path(repo, cfg["results"])
    try:  # a published run must be one whose every result matches its manifest: `make pull` checks it
        report = manifest.verify(results)
    except manifest.ManifestError as e:
        raise SystemExit(f"publish: {e}") from None
    if not report.ok:
        raise SystemExit("publish: the results tree does not match its manifest; not publishing it:\n"
                         + "\n".join(report.lines()))
    paths = sorted(set(leaves(outputs)) | {a["path"] for a in artifacts(outputs, cfg).values()})
    paths.append(f"{cfg['results']}/{manifest.MANIFEST}")  # every output's SHA-256, for `make pull` to verify
    _dvc("add", "--quiet", *paths, cwd=repo)
    if push:
        _dvc("push", "--quiet", cwd=repo)
    return paths


def pull(repo: str | os.PathLike, configfiles: Sequence[str]) -> manifest.Report:
    """``dvc pull`` in a fresh clone: the artifacts first, then every other tracked output (newer than them) and
    the manifest; then the pulled tree is checked against the manifest (:func:`rlrt.manifest.verify`, limited to
    what was published) and the report returned (``main`` exits 1 when it is not clean)."""
    cfg = load_config(repo, configfiles)
    tracked = sorted(str(p.relative_to(repo)) for p in Path(repo, cfg["results"]).rglob("*.dvc"))
    firsts = {f"{a['path']}.dvc" for a in artifacts(dag_outputs(repo, configfiles), cfg).values()}
    first = [t for t in tracked if t in firsts]
    if first:
        _dvc("pull", "--quiet", *first, cwd=repo)
    rest = [t for t in tracked if t not in firsts]
    if rest:
        _dvc("pull", "--quiet", *rest, cwd=repo)
    results = Path(repo, cfg["results"])
    published = [os.path.relpath(Path(repo, t[: -len(".dvc")]), results) for t in tracked]
    return manifest.verify(results, published=published)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["dvc-yaml", "publish", "pull"])
    p.add_argument("--configfile", nargs="+", default=["config/config.yaml"],
                   help="the workflow's config files, as given to snakemake (relative to the repository)")
    p.add_argument("--repo", default=".", help="the checkout holding dvc.yaml and the results folder")
    p.add_argument("--no-push", action="store_true", help="publish: dvc add only")
    a = p.parse_args(argv)
    repo = Path(a.repo).resolve()
    if a.command == "dvc-yaml":
        cfg = load_config(repo, a.configfile)
        text = render(dvc_yaml(cfg, dag_outputs(repo, a.configfile), a.configfile))
        (repo / "dvc.yaml").write_text(text)
        print(f"wrote {repo / 'dvc.yaml'}")
    elif a.command == "publish":
        paths = publish(repo, a.configfile, push=not a.no_push)
        print(f"published {len(paths)} outputs" + ("" if a.no_push else " (dvc push done)"))
    else:
        try:
            report = pull(repo, a.configfile)
        except manifest.ManifestError as e:  # a run published before manifests
            raise SystemExit(f"pull: cannot verify the pulled tree: {e}") from None
        print("\n".join(report.lines()))
        if not report.ok:
            raise SystemExit("pull: the pulled results do not match the manifest they were published with")


if __name__ == "__main__":
    main()
