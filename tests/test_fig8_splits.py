"""Fig 8 is pass@k on AIME24 and AIME26 only (RLRT Sec. 6.4): ``experiments.fig8.splits`` picks the splits its
evaluation covers, its figure draws and claim 6 scores (issue 31 §3); the embedded default keeps all its splits."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from rlrt.claims import claim_files, claim_rows
from rlrt.config import ConfigError, load, load_overlay, validate
from rlrt.plan import fig8_splits
from rlrt.stages import claims as claims_stage
from rlrt.stages import figures

N = 16


@pytest.fixture(scope="module")
def paper():
    return load_overlay(ROOT / "config" / "paper.yaml")


@pytest.fixture(scope="module")
def default():
    return load(ROOT / "config" / "config.yaml")


def test_paper_names_the_papers_two_splits_and_the_default_keeps_its_own(paper, default):
    assert fig8_splits(paper) == ["aime24", "aime26"]
    assert fig8_splits(default) == default["data"]["test_splits"] == ["test", "test_hard"]
    rows6 = [r for r in claim_rows(paper) if r.claim == 6]
    assert rows6 and all(r.splits == ("aime24", "aime26") and "aime24 + aime26" in r.where for r in rows6)
    # the default's claim 6 rows score every split in the pass@k evaluation, named in the row with the k (issue 36)
    assert all(r.splits is None and r.where == f"M-base, test + test_hard, k = {r.k}"
               for r in claim_rows(default) if r.claim == 6)


def test_a_fig8_split_outside_the_test_splits_is_refused_naming_the_key(paper):
    cfg = copy.deepcopy(paper)
    cfg["experiments"]["fig8"]["splits"] = ["aime24", "gpqa_diamond"]
    with pytest.raises(ConfigError, match=r"^config key 'experiments.fig8.splits': 'gpqa_diamond' is not one of"):
        validate(cfg)


def write_tree(root, counts_by_run):
    """eval_passk/<backbone>/<run>.json as rlrt.stages.evaluate writes them (n samples per problem)."""
    for run, by_split in counts_by_run.items():
        f = root / "eval_passk" / "B" / f"{run}.json"
        f.parent.mkdir(parents=True, exist_ok=True)
        splits = {s: {"metrics": {f"pass@{N}": 0.0, "pass@1": 0.0}, "n_problems": len(c), "correct_counts": c}
                  for s, c in by_split.items()}
        f.write_text(json.dumps({"backbone": "B", "method": run, "n": N, "splits": splits}))


def test_claim6_scores_only_the_fig8_splits(tmp_path):
    # RLRT solves more AIME problems at k = 16 than GRPO; on math500 (not a Fig 8 split) it is far worse, so
    # pooling every split (the old behaviour) would call the claim "not reproduced"
    aime24, aime26, math500 = 20, 10, 200
    write_tree(tmp_path, {
        "rlrt": {"aime24": [3] * aime24, "aime26": [2] * aime26, "math500": [0] * math500},
        "grpo": {"aime24": [0] * 15 + [3] * 5, "aime26": [0] * 7 + [2] * 3, "math500": [4] * math500},
    })
    base = {"claim": 6, "text": "t", "source": "s", "metric": "pass@k", "direction": 1, "a": {"run": "rlrt"},
            "b": {"run": "grpo"}, "split": None,
            "files_a": [str(tmp_path / "eval_passk/B/rlrt.json")], "files_b": [str(tmp_path / "eval_passk/B/grpo.json")]}
    fig8 = claims_stage.compare_row({**base, "where": "B, aime24 + aime26", "splits": ["aime24", "aime26"]}, 2000, 0)
    assert fig8["problems"] == aime24 + aime26 and fig8["verdict"] == "reproduced" and fig8["metric"] == f"pass@{N}"
    pooled = claims_stage.compare_row({**base, "where": "B", "splits": None}, 2000, 0)
    assert pooled["problems"] == aime24 + aime26 + math500 and pooled["verdict"] == "not reproduced"


def test_claim_files_and_the_passk_evaluation_cover_the_fig8_splits(tmp_path, paper):
    """The paper plan: the pass@k evaluation reads AIME24 and AIME26 only (a dry run of one evaluate_passk job)."""
    row = next(r for r in claim_rows(paper) if r.claim == 6)
    target = claim_files(paper["results"], row.a, 0)
    assert target == "results-paper/eval_passk/Qwen3-8B-Base/rlrt.json"
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "-n", "-p", "--cores", "32", "--configfile", str(ROOT / "config" / "paper.yaml"), "--", target]
    env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    out = proc.stdout + proc.stderr
    shell = [line for line in out.splitlines() if "rlrt.stages.evaluate" in line and "eval_passk" in line]
    assert len(shell) == 1, out[-3000:]
    data = shell[0].split("--data ", 1)[1].split(" --out", 1)[0].split()
    assert data == ["results-paper/data/aime24.parquet", "results-paper/data/aime26.parquet"]


def test_fig8_draws_one_panel_per_fig8_split(tmp_path, monkeypatch):
    """The figure on a small written tree: the panels are Fig 8's splits, in order (the PNG is looked at by hand)."""
    runs = ["grpo", "grpo_eb", "diver", "rlrt"]
    counts = {"grpo": ([0] * 6 + [2] * 4, [0] * 8 + [1] * 2), "grpo_eb": ([0] * 5 + [3] * 5, [0] * 8 + [2] * 2),
              "diver": ([0] * 6 + [1] * 4, [0] * 9 + [1]), "rlrt": ([0] * 3 + [1] * 7, [0] * 6 + [1] * 4)}
    write_tree(tmp_path, {r: {"aime24": a, "aime26": b, "math500": [8] * 10} for r, (a, b) in counts.items()})
    titles = []
    real_save = figures.save

    def spy(fig, out, rect=None):
        titles.extend(ax.get_title() for ax in fig.axes if ax.get_visible())
        real_save(fig, out, rect)

    monkeypatch.setattr(figures, "save", spy)
    out = tmp_path / "fig8_passk.png"
    cfg = {"runs": runs, "splits": ["aime24", "aime26"]}
    figures.main(["--figure", "fig8", "--cfg", json.dumps(cfg), "--out", str(out),
                  "--evals", *[str(tmp_path / f"eval_passk/B/{r}.json") for r in runs]])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert titles == [f"aime24 (10 problems, n={N})", f"aime26 (10 problems, n={N})"]
