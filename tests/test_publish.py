"""DVC over the Snakemake DAG: dvc.yaml is current, and a finished config/ci.yaml run goes to a remote and comes
back into a fresh clone where Snakemake has nothing left to do.

The round trip works on a copy of the shared ``dag_run`` tree inside a throw-away git repository (the project's
files + that run's ``results/`` and ``.snakemake/`` metadata), so the other DAG tests keep their tree untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

CI = ["config/ci.yaml"]


def _env() -> dict:
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "PYTHONHASHSEED": "0", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=_env(), timeout=900)
    assert proc.returncode == 0, f"{cmd}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run([str(Path(sys.executable).with_name("dvc")), *args], cwd)


def planned_jobs(workdir: Path) -> str:
    """Snakemake's dry-run output on ``workdir`` (the clone's own Snakefile and ci config)."""
    return run([sys.executable, "-m", "snakemake", "--snakefile", str(workdir / "Snakefile"), "--directory",
                str(workdir), "--configfile", str(workdir / "config" / "ci.yaml"), "-n", "--cores", "2"], workdir).stdout


def test_dvc_yaml_is_generated_from_the_workflow(tmp_path):
    """The committed dvc.yaml is what `python -m rlrt.publish dvc-yaml` writes for config/config.yaml: no stages,
    params, metrics, plots (one per RL backbone + pass@k), artifacts (Table 1 models, teacher, students)."""
    from rlrt.publish import dag_outputs, dvc_yaml, load_config, render

    configs = ["config/config.yaml"]
    doc = dvc_yaml(load_config(ROOT, configs), dag_outputs(tmp_path, [str(ROOT / c) for c in configs]), configs)
    assert (ROOT / "dvc.yaml").read_text() == render(doc), "dvc.yaml is stale: run python -m rlrt.publish dvc-yaml"
    assert "stages" not in doc and doc["params"] == ["config/config.yaml"]
    arts = doc["artifacts"]
    assert len([a for a in arts.values() if "rl" in a["labels"]]) == 4 * 5  # Table 1: 4 backbones x 5 methods
    assert "rlt-teacher-rl" in arts and all(a["type"] == "model" for a in arts.values())
    assert len(doc["plots"]) == 4 + 1


@pytest.fixture(scope="module")
def published(dag_run, tmp_path_factory):
    """A git repo holding the project and a copy of the finished ci run, published to a local remote."""
    base = tmp_path_factory.mktemp("dvc")
    proj, remote = base / "proj", base / "remote"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (proj / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, proj / f)
    shutil.copytree(dag_run / "results", proj / "results", symlinks=True)  # copy2: modification times kept
    shutil.copytree(dag_run / ".snakemake" / "metadata", proj / ".snakemake" / "metadata")
    run(["git", "init", "-q"], proj)
    dvc("remote", "modify", "local", "url", str(remote), cwd=proj)
    run([sys.executable, "-m", "rlrt.publish", "dvc-yaml", "--configfile", *CI, "--repo", str(proj)], proj)
    run(["git", "add", "-A"], proj)
    run(["git", "commit", "-qm", "project + ci config"], proj)
    out = run([sys.executable, "-m", "rlrt.publish", "publish", "--configfile", *CI, "--repo", str(proj)], proj)
    run(["git", "add", "-A"], proj)
    run(["git", "commit", "-qm", "published ci run"], proj)
    return proj, remote, out.stdout


def test_publish_versions_leaves_and_artifacts_and_reruns_nothing(published, dag_run):
    proj, remote, out = published
    assert "published" in out and "dvc push done" in out
    tracked = {str(p.relative_to(proj)) for p in (proj / "results").rglob("*.dvc")}
    assert "results/tables/table1.csv.dvc" in tracked and "results/metrics/eval.json.dvc" in tracked
    assert "results/runs/S-base/rlrt/model.dvc" in tracked  # an artifact, although evaluation reads it
    assert "results/eval/S-base/rlrt.json.dvc" not in tracked  # read by the tables: not a leaf
    assert any(remote.rglob("*")), "dvc push wrote nothing to the remote"
    # dvc add kept every output's inode and time (hardlinked cache): Snakemake sees an up-to-date tree
    assert "Nothing to be done" in planned_jobs(proj)
    committed = run(["git", "ls-files", "results"], proj).stdout.split()
    assert committed and all(f.endswith(".dvc") for f in committed)


def test_dvc_metrics_and_plots_read_the_run(published, dag_run):
    proj = published[0]
    shown = json.loads(dvc("metrics", "show", "--json", cwd=proj).stdout)
    data = next(iter(shown.values()))["data"]["results/metrics/eval.json"]["data"]
    want = json.loads((dag_run / "results/eval/S-base/rlrt.json").read_text())["splits"]["test"]["metrics"]
    assert data["eval/S-base/rlrt"]["test"] == pytest.approx(want)
    # between two commits: before the publish the metrics file was not versioned, after it is
    diff = json.loads(dvc("metrics", "diff", "HEAD~1", "HEAD", "--json", cwd=proj).stdout)
    cell = diff["results/metrics/eval.json"]["eval/S-base/rlrt.test.avg@4"]
    assert cell["new"] == pytest.approx(want["avg@4"]) and cell["old"] is None
    html = proj / "dvc_plots" / "index.html"
    dvc("plots", "show", "--out", "dvc_plots", cwd=proj)
    text = html.read_text()  # one vega-lite plot per dvc.yaml entry, with the run's own rows embedded
    for plot in ("RL_reward_S-base", "RL_reward_M-base", "RL_reward_S-instruct", "RL_reward_M-thinking", "pass_k"):
        assert f"vegaEmbed('#{plot}'" in text, plot
    assert "RL training reward (mean over rollouts), S-base" in text and '"rlrt@eps_w=0.5": ' in text


def test_fresh_clone_pulls_and_plans_zero_jobs(published, tmp_path):
    proj = published[0]
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(proj), str(clone)], tmp_path)
    assert not (clone / "results" / "tables" / "table1.csv").exists()
    pulled = run([sys.executable, "-m", "rlrt.publish", "pull", "--configfile", *CI, "--repo", str(clone)], clone)
    assert ": OK: " in pulled.stdout and " 0 altered, 0 missing, 0 unrecorded" in pulled.stdout  # the manifest
    for rel in ("results/tables/table1.csv", "results/runs/S-base/rlrt/model/model.safetensors",
                "results/figures/fig5_training_curves.png"):
        assert (clone / rel).read_bytes() == (proj / rel).read_bytes(), rel
    assert "Nothing to be done" in planned_jobs(clone)
    doc = yaml.safe_load((clone / "dvc.yaml").read_text())
    assert set(doc) == {"params", "metrics", "plots", "artifacts"}
