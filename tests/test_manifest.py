"""An altered result is caught (issue 35 §4; src/rlrt/manifest.py, src/rlrt/io.py).

Every declared output's SHA-256 is recorded when rlrt.io writes it (``<results>/.manifest/<path>.sha256``), the
readers refuse a result whose bytes differ, and ``make verify`` / ``python -m rlrt.manifest verify`` checks a whole
tree: altered, missing and unrecorded files, exit 1. All but the last test on small trees written here (about 30 s
on 2 busy cores, most of it one Snakemake job); the last one checks the shared ci DAG tree (``dag_run``: with
RLRT_TEST_LOCAL_DAG, or ``-k 'not ci_dag'``, running this file alone does not start the whole DAG).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from rlrt import io, manifest
from rlrt.manifest import ManifestError


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def entry(root: Path, rel: str) -> dict[str, str]:
    p = root / ".manifest" / f"{rel}.sha256"
    return manifest.parse_entry(p.read_text(), p)


def verify_cli(results: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlrt.manifest", "verify", str(results)], capture_output=True,
                          text=True, timeout=120)


def ev(backbone: str, method: str, avg: float, pas: float) -> dict:
    return {"backbone": backbone, "method": method, "splits": {"test": {"metrics": {"avg@4": avg, "pass@4": pas}}}}


@pytest.fixture
def tree(tmp_path):
    """A small manifested results tree: four evaluation JSONs of one backbone, written through rlrt.io."""
    res = tmp_path / "my results"  # a space in the path on purpose
    manifest.init(res)
    for method, avg, pas in (("base", 5.0, 20.0), ("grpo", 10.0, 40.0), ("rlsd", 12.0, 35.0), ("rlrt", 15.0, 38.0)):
        io.write_json(res / "eval" / "S-base" / f"{method}.json", ev("S-base", method, avg, pas))
    return res


def run_table1(res: Path) -> None:
    from rlrt.stages import tables

    cfg = {"backbones": ["S-base"], "methods": ["grpo", "rlsd", "rlrt"], "splits": ["test"], "n": 4}
    tables.main(["--table", "table1", "--cfg", json.dumps(cfg), "--evals",
                 *[str(res / "eval" / "S-base" / f"{m}.json") for m in ("base", "grpo", "rlsd", "rlrt")],
                 "--out-csv", str(res / "tables" / "table1.csv"), "--out-md", str(res / "tables" / "table1.md")])


def test_writers_record_every_kind_of_output(tmp_path):
    """JSON, JSONL, text, a parquet split, a CSV and a PNG written into an atomic_path, a model folder: each gets
    its SHA-256 entry; resume state, logs and the MLflow store do not; outside a manifested tree nothing is
    recorded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    res = tmp_path / "results"
    manifest.init(res)
    io.write_json(res / "eval/S-base/grpo.json", {"a": 1})
    io.write_jsonl(res / "data/train.jsonl", [{"question": "q", "answer": "1"}])
    io.write_text(res / "tables/t.md", "| a |\n")
    io.write_problems(res / "data/test.parquet", [dict.fromkeys(io.PROBLEM_COLUMNS, "x")])
    with io.atomic_path(res / "tables/t.csv") as tmp:
        pd.DataFrame({"a": [1.5]}).to_csv(tmp, index=False)
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    with io.atomic_path(res / "figures/f.png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    with io.atomic_dir(res / "runs/S-base/grpo/model") as tmp:
        (tmp / "model.safetensors").write_bytes(b"\0" * 100)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "config.json").write_text("{}")
    for rel in ("eval/S-base/grpo.json", "data/train.jsonl", "tables/t.md", "data/test.parquet", "tables/t.csv",
                "figures/f.png"):
        assert entry(res, rel) == {rel: sha(res / rel)}, rel
    model = "runs/S-base/grpo/model"
    assert entry(res, model) == {f"{model}/model.safetensors": sha(res / model / "model.safetensors"),
                                 f"{model}/sub/config.json": sha(res / model / "sub/config.json")}
    # not results: resume checkpoints (and the *.partial folder they grow in), logs, the MLflow store
    with io.atomic_dir(res / "runs/S-base/grpo/checkpoints.partial/step_1") as tmp:
        (tmp / "w").write_bytes(b"1")
    with io.atomic_dir(res / "runs/S-base/grpo/checkpoints") as tmp:
        (tmp / "w").write_bytes(b"1")
    io.write_text(res / "logs/x.log", "log")
    io.write_json(res / "mlflow/spool/r.json", {})
    recorded = sorted(p.relative_to(res / ".manifest").as_posix() for p in (res / ".manifest").rglob("*.sha256"))
    assert len(recorded) == 7 and not any("checkpoints" in r or r.startswith(("logs", "mlflow")) for r in recorded)
    assert manifest.verify(res).ok
    # a folder that is no manifested tree: nothing recorded, nothing created
    io.write_json(tmp_path / "elsewhere" / "x.json", {})
    assert not (tmp_path / "elsewhere" / ".manifest").exists()
    assert manifest.find_root(tmp_path / "elsewhere" / "x.json") is None


def test_table_stage_refuses_an_altered_eval_json_naming_it(tree):
    """The issue's case: one number changed in an evaluation JSON. The tables stage used to put it into Table 1;
    it now refuses, naming the file and both hash prefixes; the table it wrote before stays as it was."""
    run_table1(tree)
    assert "+3.0" in (tree / "tables" / "table1.md").read_text()  # 15 - max(10, 12)
    assert manifest.verify(tree).ok  # the table stage's own outputs were recorded too
    before = (tree / "tables" / "table1.md").read_bytes()
    f = tree / "eval" / "S-base" / "rlsd.json"
    recorded = sha(f)
    text = f.read_text()
    assert '"avg@4": 12.0' in text
    f.write_text(text.replace('"avg@4": 12.0', '"avg@4": 19.0'))  # one digit
    with pytest.raises(ManifestError) as e:
        run_table1(tree)
    msg = str(e.value)
    assert str(f) in msg and recorded[:12] in msg and sha(f)[:12] in msg and "altered" in msg
    assert (tree / "tables" / "table1.md").read_bytes() == before
    # every reader of rlrt.io refuses it, not only the tables
    with pytest.raises(ManifestError, match="rlsd.json"):
        io.read_json(f)


def test_verify_catches_an_edit_whose_mtime_was_restored(tree):
    """Change a number and put the file's modification time back: Snakemake sees nothing to do, but `python -m
    rlrt.manifest verify` (what `make verify` runs) lists the file as ALTERED and exits 1."""
    f = tree / "eval" / "S-base" / "grpo.json"
    st = f.stat()
    f.write_text(f.read_text().replace('"avg@4": 10.0', '"avg@4": 90.0'))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_mtime_ns == st.st_mtime_ns
    proc = verify_cli(tree)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "ALTERED     eval/S-base/grpo.json" in proc.stdout and "1 altered" in proc.stdout


def test_make_verify_runs_the_check(tree):
    """`make verify RESULTS=<dir>`: the Makefile target runs the same check, with its exit code."""
    bindir = os.path.dirname(sys.executable)
    cmd = ["make", "-s", "-C", str(ROOT), "-o", f"{bindir}/.installed", "verify", f"RESULTS={tree}", f"BIN={bindir}"]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "OK: 4 files match" in ok.stdout, ok.stdout + ok.stderr
    (tree / "eval" / "S-base" / "base.json").write_text("{}\n")
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "ALTERED     eval/S-base/base.json" in bad.stdout
    # without RESULTS: the `results` of CONFIG (an overlay over config/config.yaml, as `make run` takes it)
    overlay = tree.parent / "overlay.yaml"
    overlay.write_text(f"results: {json.dumps(str(tree))}\n")
    cmd = [c for c in cmd if not c.startswith("RESULTS=")] + [f"CONFIG={overlay}"]
    by_config = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert by_config.returncode != 0 and "ALTERED     eval/S-base/base.json" in by_config.stdout, by_config.stderr


def test_verify_reports_deleted_added_and_clean(tree):
    """A clean tree verifies (exit 0); a deleted result is MISSING, a file no writer recorded is UNRECORDED (a
    file added to a recorded model folder included), both exit 1; logs and resume checkpoints are ignored."""
    with io.atomic_dir(tree / "runs" / "S-base" / "grpo" / "model") as tmp:
        (tmp / "model.safetensors").write_bytes(b"w")
    (tree / "logs").mkdir()
    (tree / "logs" / "rl.log").write_text("anything")
    (tree / "runs" / "S-base" / "grpo" / "checkpoints" / "step_1").mkdir(parents=True)
    (tree / "runs" / "S-base" / "grpo" / "checkpoints" / "step_1" / "w").write_bytes(b"resume state")
    (tree / "runs" / "S-base" / "grpo" / "model" / ".snakemake_timestamp").write_text("")
    clean = verify_cli(tree)
    assert clean.returncode == 0 and "OK: 5 files match the manifest, 0 altered, 0 missing, 0 unrecorded" \
        in clean.stdout, clean.stdout + clean.stderr
    (tree / "eval" / "S-base" / "rlrt.json").unlink()
    (tree / "tables").mkdir()
    (tree / "tables" / "hand_made.csv").write_text("a\n1\n")
    (tree / "runs" / "S-base" / "grpo" / "model" / "extra.bin").write_bytes(b"x")
    proc = verify_cli(tree)
    assert proc.returncode == 1
    assert "MISSING     eval/S-base/rlrt.json" in proc.stdout
    assert "UNRECORDED  tables/hand_made.csv" in proc.stdout
    assert "UNRECORDED  runs/S-base/grpo/model/extra.bin" in proc.stdout
    shutil.rmtree(tree / "runs" / "S-base" / "grpo" / "model")
    assert "MISSING     runs/S-base/grpo/model/" in verify_cli(tree).stdout


def test_a_tree_without_manifest_is_refused_by_verify(tmp_path):
    (tmp_path / "eval").mkdir()
    io.write_json(tmp_path / "eval" / "x.json", {})  # no manifest here: recorded nowhere, read unchecked
    assert io.read_json(tmp_path / "eval" / "x.json") == {}
    proc = verify_cli(tmp_path)
    assert proc.returncode == 2 and "no manifest" in proc.stderr


def test_unrecorded_result_is_read_with_a_warning(tree, caplog):
    """The chosen policy (docs/reliability.md): a result of a manifested tree with no entry -- written by code
    older than the manifest -- is used, with one logged warning naming it; `make verify` fails on it."""
    old = tree / "eval" / "S-base" / "old.json"
    old.write_text(json.dumps(ev("S-base", "old", 1.0, 2.0)))
    with caplog.at_level(logging.WARNING, logger="rlrt.manifest"):
        assert io.read_json(old)["method"] == "old"
    assert any(str(old) in r.getMessage() and "no manifest entry" in r.getMessage() for r in caplog.records)
    assert "UNRECORDED  eval/S-base/old.json" in verify_cli(tree).stdout


def test_jsonl_parquet_and_docs_readers_check_too(tmp_path):
    """read_jsonl / read_problems (what training and evaluation read) and the docs stage's reads refuse an altered
    result as read_json does."""
    from rlrt.docs import reward_rank

    res = tmp_path / "results"
    manifest.init(res)
    io.write_jsonl(res / "data/train.jsonl", [{"question": "q", "answer": "1"}])
    io.write_problems(res / "data/test.parquet", [dict.fromkeys(io.PROBLEM_COLUMNS, "x")])
    rr = {"pearson_r": 0.5, "ranks": [1], "mean_reward": [0.1], "accuracy": [3.0]}
    io.write_json(res / "rlt/reward_rank.json", rr)
    assert io.read_jsonl(res / "data/train.jsonl") and io.read_problems(res / "data/test.parquet")
    assert reward_rank(res / "rlt/reward_rank.json")
    (res / "data/train.jsonl").write_text('{"question": "q", "answer": "2"}\n')
    with pytest.raises(ManifestError, match="train.jsonl"):
        io.read_jsonl(res / "data/train.jsonl")
    with open(res / "data/test.parquet", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ManifestError, match="test.parquet"):
        io.read_problems(res / "data/test.parquet")
    (res / "rlt/reward_rank.json").write_text(json.dumps({**rr, "pearson_r": 0.9}))
    with pytest.raises(ManifestError, match="reward_rank.json"):
        reward_rank(res / "rlt/reward_rank.json")


def test_benchmark_files_snakemake_writes_are_recorded_when_the_run_ends(tree):
    """Snakemake writes benchmark files itself; record_new (Snakefile onsuccess / onerror) records those without
    an entry or rewritten since, and a later edit whose mtime was put back is caught."""
    b = tree / "benchmarks" / "eval" / "S-base" / "grpo.tsv"
    b.parent.mkdir(parents=True)
    b.write_text("s\th:m:s\n1.5\t0:00:01\n")
    assert not manifest.verify(tree).ok
    assert manifest.record_new(tree / "benchmarks") == 1 and manifest.record_new(tree / "benchmarks") == 0
    assert manifest.verify(tree).ok
    st = b.stat()
    b.write_text("s\th:m:s\n0.1\t0:00:00\n")
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))
    manifest.record_new(tree / "benchmarks")  # not newer than its entry: not re-recorded
    rel = "benchmarks/eval/S-base/grpo.tsv"
    assert manifest.verify(tree).altered == [f"{rel} (recorded {entry(tree, rel)[rel][:12]}…, now {sha(b)[:12]}…)"]


def test_a_pulled_tree_is_verified_within_what_was_published(tree):
    """`make pull` brings back only the published paths (the DAG's leaves and artifacts, rlrt.publish): verify
    forgives the absence of the other recorded files, never an absent published one or an altered pulled one."""
    run_table1(tree)
    (tree / "eval" / "S-base" / "grpo.json").unlink()  # an intermediate: not published
    published = ["tables/table1.md", "tables/table1.csv", ".manifest"]
    assert manifest.verify(tree, published=published).ok
    assert manifest.verify(tree).missing == ["eval/S-base/grpo.json"]
    (tree / "tables" / "table1.csv").unlink()
    assert manifest.verify(tree, published=published).missing == ["tables/table1.csv"]
    (tree / "tables" / "table1.md").write_text("edited")
    assert [a.split()[0] for a in manifest.verify(tree, published=published).altered] == ["tables/table1.md"]


def test_entries_are_sha256sum_lines(tree):
    """The manifest is checkable without this package: `sha256sum -c` over the entries, from the results folder."""
    lines = "".join(p.read_text() for p in sorted((tree / ".manifest").rglob("*.sha256")))
    ok = subprocess.run(["sha256sum", "-c", "--quiet", "-"], input=lines, cwd=tree, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (tree / "eval" / "S-base" / "base.json").write_text("{}")
    bad = subprocess.run(["sha256sum", "-c", "--quiet", "-"], input=lines, cwd=tree, capture_output=True, text=True)
    assert bad.returncode == 1 and "eval/S-base/base.json: FAILED" in bad.stdout


def test_a_snakemake_run_records_its_outputs_and_benchmark(tmp_path):
    """Through Snakemake (config/ci.yaml, the one job without inputs): onstart makes the tree manifested, the job's
    outputs are recorded by the stage, its benchmark file by the driver at the end, and the tree verifies."""
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(ROOT / "config" / "ci.yaml"), "--cores", "1", "results/tables/table4.md"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "PATH": path})
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = tmp_path / "results"
    for rel in ("tables/table4.md", "tables/table4.csv", "benchmarks/table4.tsv"):
        assert entry(res, rel) == {rel: sha(res / rel)}, rel
    rep = manifest.verify(res)
    assert rep.ok and rep.checked == 3, rep.lines()


def test_the_ci_dag_tree_verifies(dag_run):
    """Every output of the whole ci DAG was recorded by its writer (no stage writes around rlrt.io) and still
    matches: `make verify` on a finished run is clean. (A reused tree from before manifests is skipped locally;
    CI always runs the DAG fresh.)"""
    res = dag_run / "results"
    if not (res / ".manifest" / "FORMAT").is_file() and not os.environ.get("CI"):
        pytest.skip(f"{res}: written before manifests (RLRT_TEST_LOCAL_DAG names an older run)")
    rep = manifest.verify(res)
    assert rep.ok, "\n".join(rep.lines())
    assert rep.checked > 100 and any(f.startswith("tables/table1") for f in manifest._tree_files(res))
