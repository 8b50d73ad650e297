"""A missing output is rebuilt, not reported as done (issue 35 §3; rlrt.driver's pre-flight).

Why Snakemake 9 does not: it plans a job only when the targets need its outputs and they are missing or out of
date. An intermediate deleted on a finished tree (an evaluation JSON, a checkpoint folder's file) is read only by
jobs whose outputs exist and are newer than every input that exists, so nothing is planned ("Nothing to be done");
a file missing inside a ``directory()`` output is never seen at all (Snakemake stats the folder only).
``make run`` (rlrt.driver) asks ``snakemake --summary`` for every output of the DAG, adds a missing one as a target,
and removes a checkpoint folder that lost a file (or holds one cut short), so both rebuild with what reads them.

- a tiny workflow (fast): the plain Snakemake plans nothing, the driver rebuilds both kinds with their reader;
- ``partial_folder`` on a real checkpoint: a missing, cut-short or broken file is named, an intact one passes;
- the ci DAG's finished tree (``dag_run``, copied first): ``rm results/eval/S-base/grpo.json`` and ``rm
  results/runs/S-base/rlrt/model/model.safetensors``, then one ``make run``-equivalent rebuilds each, with what
  reads it, to the same bytes, after which nothing is planned.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from test_driver_kill import driver, env

TINY = """
import hashlib, pathlib

rule all:
    input: "table.txt"

rule eval:
    output: "eval.json"
    shell: "echo acc=1 > {output}"

rule train:
    output: directory("model")
    run:
        d = pathlib.Path(output[0]); d.mkdir()
        (d / "w.bin").write_text("weights")
        (d / "checksums.sha256").write_text(hashlib.sha256(b"weights").hexdigest() + "  w.bin\\n")

rule table:
    input: "eval.json", "model"
    output: "table.txt"
    shell: "cat {input[0]} {input[1]}/w.bin > {output}"
"""


def plain(workdir: Path, *extra: str, snakefile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory",
                           str(workdir), "--cores", "1", *extra], capture_output=True, text=True, env=env(),
                          timeout=300)


def run_driver(workdir: Path, *extra: str, snakefile: Path = ROOT / "Snakefile", config: bool = True):
    cmd = driver(workdir, snakefile=snakefile, config=config)
    return subprocess.run(cmd + list(extra), capture_output=True, text=True, env=env(), timeout=1800)


def test_deleted_outputs_of_a_tiny_workflow_are_rebuilt_with_their_reader(tmp_path):
    """A deleted file output and a file deleted from a ``directory()`` output (its ``checksums.sha256`` lists it)."""
    smk = tmp_path / "Snakefile"
    smk.write_text(TINY)
    assert run_driver(tmp_path, snakefile=smk, config=False).returncode == 0
    table = (tmp_path / "table.txt").stat().st_mtime_ns
    for remove in ("eval.json", "model/w.bin"):
        (tmp_path / remove).unlink()
    assert "Nothing to be done" in plain(tmp_path, "-n", snakefile=smk).stdout  # Snakemake alone: no rebuild
    dry = run_driver(tmp_path, "-n", snakefile=smk, config=False)  # a dry run plans, removes nothing
    assert dry.returncode == 0 and "model is partial" in dry.stderr and (tmp_path / "model").is_dir()
    done = run_driver(tmp_path, snakefile=smk, config=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "make run: eval.json is missing" in done.stderr
    assert "make run: model is partial (model/w.bin is missing)" in done.stderr
    assert (tmp_path / "eval.json").exists() and (tmp_path / "model" / "w.bin").read_text() == "weights"
    assert (tmp_path / "table.txt").stat().st_mtime_ns > table
    assert "Nothing to be done" in plain(tmp_path, "-n", snakefile=smk).stdout


def test_partial_checkpoint_folders_are_named(tmp_path):
    import torch

    from rlrt.backends.local.model import build_model, save_checkpoint
    from rlrt.driver import partial_folder
    from rlrt.tasks.tokenizer import train_tokenizer

    tok = train_tokenizer([f"{a} + {a} = {2 * a}" for a in range(50)], 300)
    torch.manual_seed(0)
    model = build_model({"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                         "num_attention_heads": 2, "num_key_value_heads": 1}, tok)
    save_checkpoint(model, tok, tmp_path / "ok")
    assert partial_folder(tmp_path / "ok") is None
    for name, damage in (("gone", lambda p: (p / "model.safetensors").unlink()),
                         ("cut", lambda p: (p / "model.safetensors").write_bytes(
                             (p / "model.safetensors").read_bytes()[:-100])),
                         ("json", lambda p: (p / "config.json").write_text('{"hidden_size": 1')),
                         ("nested", None)):
        if name == "nested":  # a run's checkpoints/ folder holds one checkpoint per saved step
            shutil.copytree(tmp_path / "ok", tmp_path / "nested" / "step_2")
            (tmp_path / "nested" / "step_2" / "tokenizer.json").unlink()
        else:
            shutil.copytree(tmp_path / "ok", tmp_path / name)
            damage(tmp_path / name)
        why = partial_folder(tmp_path / name)
        want = {"gone": "gone/model.safetensors is missing", "cut": "cut/model.safetensors is cut short",
                "json": "json/config.json is not valid JSON",
                "nested": "nested/step_2/tokenizer.json is missing"}[name]
        assert why == want, (name, why)


# ---------------------------------------------------------------- the ci DAG's finished tree


@pytest.fixture
def tree(dag_run, tmp_path):
    """A copy of the finished ci tree (modification times kept), so other tests keep theirs."""
    work = tmp_path / "w"
    shutil.copytree(dag_run, work, symlinks=True)
    return work


def plan(workdir: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
                           str(workdir), "--configfile", str(ROOT / "config" / "ci.yaml"), "--cores", "2", "-n"],
                          capture_output=True, text=True, env=env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_deleted_outputs_of_the_ci_tree_are_rebuilt_by_make_run(tree):
    """The issue's two cases at once (one rebuild pass shares the readers they have in common: tables, claims)."""
    cases = {"results/eval/S-base/grpo.json": ("results/tables/table1.csv", "results/eval/S-base/grpo.json is missing"),
             "results/runs/S-base/rlrt/model/model.safetensors": (
                 "results/eval/S-base/rlrt.json",
                 "results/runs/S-base/rlrt/model is partial (model/model.safetensors is missing)")}
    before = {p: (tree / p).read_bytes() for p in cases}
    read_at = {reader: (tree / reader).stat().st_mtime_ns for reader, _ in cases.values()}
    for p in cases:
        (tree / p).unlink()
    assert "Nothing to be done" in plan(tree)  # what Snakemake alone says (the observation)
    done = run_driver(tree)
    assert done.returncode == 0, done.stderr[-4000:]
    for p, (reader, said) in cases.items():
        assert f"make run: {said}" in done.stderr
        assert (tree / p).read_bytes() == before[p], p  # the same bytes as the first run's
        assert (tree / reader).stat().st_mtime_ns > read_at[reader], reader  # and what reads it reran
    assert "Nothing to be done" in plan(tree)
