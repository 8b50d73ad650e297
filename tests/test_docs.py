"""The documents: ``make docs`` (src/rlrt/docs.py) on a small results tree written here in the formats the report
rules write, the stamp and the tables it carries; every relative link of README.md and docs/*.md resolves; every
test docs/reliability.md names exists; the hand-written interpretation of docs/results.md quotes only numbers its
generated tables contain."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from rlrt import docs
from rlrt.config import load_overlay
from rlrt.stages import claims as claims_stage
from rlrt.stages import tables as tables_stage
from rlrt.tracking import git_commit

ROOT = Path(__file__).resolve().parents[1]
CI = ROOT / "config" / "ci.yaml"
BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
T0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC: the first benchmark's end


def _ev(backbone, method, avg, pas):
    return {"backbone": backbone, "method": method, "splits": {"test": {"metrics": {"avg@4": avg, "pass@4": pas}}}}


def _table_md(path: Path, title: str, rows: list[tuple[str, str, float, float]], methods: list[str]) -> None:
    evals = [_ev(b, m, a, p) for b, m, a, p in rows]
    df = tables_stage.table1(evals, sorted({b for b, *_ in rows}), methods, ["test"], 4)
    tables_stage.write_table(df, str(path.with_suffix(".csv")), str(path), title)


def _bench(path: Path, seconds: float, end: float, rss: str = "512.25") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(BENCH_HEADER + f"{seconds}\t0:00:{int(seconds):02d}\t{rss}\t900\t500\t500\t0\t0\t99.0\t{seconds}\n")
    os.utime(path, (end, end))


def write_tree(root: Path) -> Path:
    """A finished results tree of config/ci.yaml as the report, claims, RLT and summary rules write it."""
    r = root / "results"
    (r / "tables").mkdir(parents=True)
    cl = pd.DataFrame([
        {"claim": 1, "text": "RLRT > GRPO on base models", "source": "RLRT", "where": "S-base", "metric": "avg@n",
         "a": "rlrt", "b": "grpo", "direction": 1, "seeds": 3, "problems": 64, "mean_a": 41.25, "std_a": 1.5,
         "mean_b": 37.5, "std_b": 0.75, "value": 3.75, "lo": 1.25, "hi": 6.5, "se": 1.25, "verdict": "reproduced",
         "note": ""},
        {"claim": 8, "text": "reward rank predicts accuracy", "source": "RLT", "where": "S-base (4 ranks)",
         "metric": "pearson_r", "a": "", "b": "", "direction": 1, "seeds": 3, "problems": 64, "mean_a": None,
         "std_a": None, "mean_b": None, "std_b": None, "value": 0.87, "lo": 0.11, "hi": 1.0, "se": 0.2,
         "verdict": "reproduced", "note": "accuracy per rank: 30.5, 31.5, 32.5, 33.5"}])
    (r / "tables" / "claims.md").write_text(claims_stage.to_markdown(cl, 3))
    _table_md(r / "tables" / "table1.md", "Table 1 (embedded analogue): avg@4 and pass@4 (%).",
              [("S-base", "base", 12.5, 40.0), ("S-base", "grpo", 17.25, 45.0), ("S-base", "rlrt", 18.75, 43.5)],
              ["grpo", "rlrt"])
    _table_md(r / "tables" / "table3.md", "Table 3 (embedded analogue): the instruct backbone.",
              [("S-instruct", "base", 22.5, 50.0), ("S-instruct", "grpo", 23.75, 51.0),
               ("S-instruct", "rlrt", 21.25, 52.5)], ["grpo", "rlrt"])
    _table_md(r / "tables" / "rlt_table1.md", "RLT Table 1 (embedded analogue): students.",
              [("S-base", "base", 61.5, 80.0), ("S-base", "grpo", 52.25, 81.5), ("S-base", "rlrt", 55.75, 82.0)],
              ["grpo", "rlrt"])
    _table_md(r / "tables" / "rlt_table2.md", "RLT Table 2 (embedded analogue): cold start.",
              [("S-base", "base", 7.5, 20.0), ("S-base", "grpo", 8.75, 21.5), ("S-base", "rlrt", 9.25, 22.0)],
              ["grpo", "rlrt"])
    sweeps = pd.DataFrame([{"backbone": "S-base", "run": "rlrt@eps_w=0.2", "reward first": 33.3, "reward last": 44.4}])
    tables_stage.write_frame(sweeps, str(r / "tables" / "sweeps.csv"), str(r / "tables" / "sweeps.md"),
                             "Sweeps (RLRT Table 5 / Fig. 9b): training reward (%).")
    (r / "rlt").mkdir()
    (r / "rlt" / "reward_rank.json").write_text(json.dumps(
        {"pearson_r": 0.8766, "ranks": [1, 2], "accuracy": [30.125, 35.875], "mean_reward": [-8.5, -7.25],
         "y": "student avg@4 (%), mean over ['test']"}))
    (r / "figures").mkdir()
    for name in ("fig5_training_curves.png", "claims.png"):
        (r / "figures" / name).write_bytes(b"\x89PNG\r\n\x1a\n" + name.encode())
    (r / "plots" / "training").mkdir(parents=True)
    steps = range(1, 11)
    pd.DataFrame({"step": steps, "grpo": [0.1 * s for s in steps], "rlrt": [0.5] * 10,
                  "grpo+seed=1": [9.0] * 10}).to_csv(r / "plots" / "training" / "training_S-base.csv", index=False)
    b = r / "benchmarks"
    _bench(b / "backbone" / "S-base.tsv", 100.0, T0, "1400.5")
    _bench(b / "rl" / "S-base" / "grpo.tsv", 300.0, T0 + 400)
    _bench(b / "rl" / "S-base" / "rlrt.tsv", 250.0, T0 + 600, "NA")
    _bench(b / "table1.tsv", 0.5, T0 + 700)
    return r


@pytest.fixture(scope="module")
def ci_cfg():
    return load_overlay(CI)


def test_results_doc_carries_stamp_tables_figures_and_training_summary(tmp_path, ci_cfg):
    results, out = write_tree(tmp_path), tmp_path / "docs"
    cpu = tmp_path / "cpuinfo"
    cpu.write_text("processor\t: 0\nmodel name\t: Test CPU 9000 @ 3.0GHz\n")
    now = datetime(2027, 1, 15, 9, 30, tzinfo=timezone.utc)
    doc = docs.results_doc(results, out, ci_cfg, ["config/config.yaml", "config/ci.yaml"], cpuinfo=cpu, now=now)
    # the stamp: machine, date, commit, config hash, and the jobs' wall span and job-seconds from the benchmarks
    assert f"| machine (where `make docs` ran) | {os.cpu_count()} cores, Test CPU 9000 @ 3.0GHz |" in doc
    assert "| written | 2027-01-15 09:30 UTC |" in doc
    assert f"| commit | `{git_commit()}` |" in doc and git_commit() != "unknown"
    assert f"sha256 `{docs.config_hash(ci_cfg)}`" in doc and "`config/config.yaml` + `config/ci.yaml`" in doc
    assert "| jobs | 4 " in doc and "| job-seconds | 650 |" in doc
    # first start: T0 - 100; last end: T0 + 700 -> 800 s
    assert "| wall time | 13.3 min: first job's start 2027-01-15 07:58 UTC to the last job's end 2027-01-15 " \
           "08:11 UTC" in doc
    assert "| rl | 2 | 550 | 512 |" in doc and "| backbone | 1 | 100 | 1,400 |" in doc
    # every table, verbatim (headings one level down), in the order of the document
    for name in ("claims", "table1", "table3", "rlt_table1", "rlt_table2", "sweeps"):
        body = (results / "tables" / f"{name}.md").read_text().strip()
        assert docs._demote(body) in doc, name
    assert "### Claims over 3 seeds" in doc and "+3.8 [+1.2, +6.5] (+3.0 SE)" in doc and "reproduced" in doc
    assert "| S-base " in doc and "17.2" in doc and "+1.5" in doc  # Δ = 18.75 - 17.25
    assert doc.index("## The claims") < doc.index("## Table 1") < doc.index("## Table 3") < doc.index("## RLT Table 1")
    assert "Pearson r of (rank, accuracy) = +0.88" in doc and "| 2 | -7.25 | 35.9 |" in doc
    # training reward: first and last fifth of 10 steps = 2 steps each; seeded replicates left out
    assert "| S-base | grpo | 10 | 0.150 | 0.950 |" in doc and "| S-base | rlrt | 10 | 0.500 | 0.500 |" in doc
    assert "grpo+seed=1" not in doc
    assert "![claims.png](figures/claims.png)" in doc and "![fig5_training_curves.png](figures/" in doc
    assert docs.BEGIN in doc and docs.END in doc and docs.unsupported_numbers(doc) == []


def test_make_docs_on_the_ci_run_carries_its_tables_figures_and_claims(tmp_path, dag_run):
    """`make docs` on a real finished tree (the ci DAG), not only on a written one: every table the config plans,
    the claims rows, the figures copied beside the document and linked, one sitting in the stamp."""
    results, out = dag_run / "results", tmp_path / "docs"
    assert docs.main(["--configfile", str(CI), "--results", str(results), "--out", str(out)]) == 0
    doc = (out / "results.md").read_text()
    for heading, path in docs.expected_tables(load_overlay(CI)):
        assert f"## {heading}" in doc and f"`{results}/{path}`" in doc, path
    assert docs._demote((results / "tables" / "claims.md").read_text().strip()) in doc  # every row, verbatim
    pngs = sorted(p.name for p in (results / "figures").glob("*.png"))
    assert pngs and all((out / "figures" / n).is_file() and f"(figures/{n})" in doc for n in pngs)
    assert "| wall time | " in doc and "sittings" not in doc and docs.unsupported_numbers(doc) == []


def test_an_unfinished_tree_is_refused_naming_what_is_missing(tmp_path, ci_cfg):
    results = write_tree(tmp_path)
    (results / "tables" / "table3.md").unlink()
    (results / "rlt" / "reward_rank.json").unlink()
    with pytest.raises(docs.DocsError, match=r"missing tables/table3.md, rlt/reward_rank.json"):
        docs.results_doc(results, tmp_path / "docs", ci_cfg, ["config/ci.yaml"])
    write_tree(tmp_path / "b")
    for f in (tmp_path / "b" / "results" / "benchmarks").rglob("*.tsv"):
        f.unlink()
    with pytest.raises(docs.DocsError, match="no Snakemake benchmark files"):
        docs.results_doc(tmp_path / "b" / "results", tmp_path / "docs", ci_cfg, ["config/ci.yaml"])


def test_config_hash_follows_the_merged_config(ci_cfg):
    base = load_overlay(ROOT / "config" / "config.yaml")
    assert docs.config_hash(ci_cfg) == docs.config_hash(json.loads(json.dumps(ci_cfg)))
    assert docs.config_hash(ci_cfg) != docs.config_hash(base)
    assert docs.config_hash(base) != docs.config_hash({**base, "seed": base["seed"] + 1})


def test_make_docs_keeps_the_interpretation_and_refuses_numbers_the_tables_lack(tmp_path):
    results, out = write_tree(tmp_path), tmp_path / "docs"
    argv = ["--configfile", str(CI), "--results", str(results), "--out", str(out)]
    assert docs.main(argv) == 0
    assert (out / "figures" / "claims.png").read_bytes() == (results / "figures" / "claims.png").read_bytes()
    (out / "figures" / "stale.png").write_bytes(b"old")
    text = (out / "results.md").read_text()
    good = (f"{docs.BEGIN}\n## Interpretation (hand-written)\n\nRLRT beats GRPO by +3.8 points (17.2 vs 18.8).\n"
            f"{docs.END}")
    (out / "results.md").write_text(text.replace(f"{docs.BEGIN}\n{docs.END}", good))
    assert docs.main(argv) == 0
    assert good in (out / "results.md").read_text() and not (out / "figures" / "stale.png").exists()
    bad = good.replace("+3.8 points", "+4.6 points")
    (out / "results.md").write_text((out / "results.md").read_text().replace(good, bad))
    assert docs.main(argv) == 1  # written, but the stale sentence is named
    assert bad in (out / "results.md").read_text()
    assert docs.unsupported_numbers((out / "results.md").read_text()) == ["4.6"]


def test_make_docs_writes_the_documents_from_a_results_tree(tmp_path):
    """The Makefile target itself: `make docs` on a finished tree (its config's tables present) writes results.md
    and its figures; on a tree missing a table it fails naming the file."""
    results = write_tree(tmp_path)
    cmd = ["make", "-C", str(ROOT), "docs", f"CONFIG={CI}", f"RESULTS={results}", f"DOCS={tmp_path / 'out'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = (tmp_path / "out" / "results.md").read_text()
    assert f"sha256 `{docs.config_hash(load_overlay(CI))}`" in doc
    assert (tmp_path / "out" / "figures" / "claims.png").exists()
    (results / "tables" / "claims.md").unlink()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "missing tables/claims.md" in proc.stderr


def test_a_run_stopped_and_resumed_counts_its_sittings_not_the_pause(tmp_path):
    b = tmp_path / "benchmarks"
    _bench(b / "backbone" / "S-base.tsv", 100.0, T0)                 # 07:58:20 - 08:00
    _bench(b / "rl" / "S-base" / "grpo.tsv", 300.0, T0 + 400)        # 08:01:40 - 08:06:40 (100 s idle: one sitting)
    _bench(b / "rl" / "S-base" / "rlrt.tsv", 600.0, T0 + 3 * 3600)   # resumed at 10:50 after a pause of ~2.7 h
    _bench(b / "table1.tsv", 0.5, T0 + 3 * 3600 + 60)
    tot = docs.benchmark_totals(b)
    assert tot["wall_s"] == pytest.approx(500 + 660) and tot["span_s"] == pytest.approx(3 * 3600 + 160)
    assert len(tot["segments"]) == 2
    text = docs.wall_time(tot)
    assert text.startswith("19.3 min with a job running, in 2 sittings")
    assert "2027-01-15 07:58 UTC to 08:06 (8 min); 2027-01-15 10:50 UTC to 11:01 (11 min)" in text
    # overlapping jobs (2 cores) are counted once
    assert docs.busy_segments([(0, 100), (50, 120), (110, 130)]) == [(0, 130)]
    assert docs.busy_segments([(0, 10), (500, 510)], gap_s=120) == [(0, 10), (500, 510)]


def test_numbers_are_compared_without_sign_or_thousands_separator():
    assert docs.numbers("−5.6, +6.1 and 23,779 job-seconds; Qwen3-4B at 1e-6 and eps_w=0.2") == \
        {"5.6", "6.1", "23779", "1e-6", "0.2"}


PIPELINE = {
    "date": "2027-01-15", "machine": "2 cores, Test CPU 9000, Linux 6.1", "commit": "abc1234", "cores": 2,
    "wall_s": 5460.0, "jobs": 3, "job_seconds_total": 900.0,
    "stages": {"evaluate": {"jobs": 1, "job_seconds": 150.0, "peak_rss_mb": 800.0},
               "rl": {"jobs": 2, "job_seconds": 750.0, "peak_rss_mb": 1300.4}},
    "job_seconds_by_stage": {"evaluate": 150.0, "rl": 750.0},
    "claims_replicates": {"jobs": 1, "job_seconds": 300.0, "share": 1 / 3},
    "step_time": {"question_batch": 16, "n_rollouts": 8, "steps": 8, "grpo_step_s": 2.0, "rlrt_step_s": 2.1,
                  "rlsd_step_s": 2.5, "rlrt_over_grpo": 1.05, "rlsd_over_grpo": 1.25,
                  "breakdown_s": {m: {"time_gen": 0.9, "time_grade": 0.01, "time_old_logp": 0.35, "time_teacher": t,
                                      "time_update": 1.05, "teacher_rows": rows}
                                  for m, t, rows in (("grpo", 0.0, 0), ("rlrt", 0.25, 56), ("rlsd", 0.45, 109))}},
    "sampler": {"results": {"rl_step": {"rows": 128, "generated_tokens": 4351, "generate_tok_per_s": 2150.0,
                                        "lean_tok_per_s": 3397.0, "speedup": 1.58, "same_tokens": True}}},
    "dryrun_s": 1.37, "imports_s": {"model_job": 3.21, "table_job": 0.9},
}


def test_performance_doc_from_the_bench_json(tmp_path):
    (tmp_path / "pipeline.json").write_text(json.dumps(PIPELINE))
    assert docs.main(["--no-results", "--bench", str(tmp_path / "pipeline.json"), "--out", str(tmp_path / "d")]) == 0
    doc = (tmp_path / "d" / "performance.md").read_text()
    assert not (tmp_path / "d" / "results.md").exists()
    stamp = "2027-01-15, 2 cores, Test CPU 9000, Linux 6.1, commit `abc1234`"
    assert doc.count(stamp) >= 5  # the top, and each section's figure
    assert "`config/config.yaml`, in a fresh folder, one uninterrupted run: **91.0 min** wall, 3 jobs, 900 " \
           "job-seconds" in doc
    assert "| rl | 2 | 750 | 1,300 |" in doc and "| evaluate | 1 | 150 | 800 |" in doc
    assert "1 jobs, 300 job-seconds, 33 % of the DAG's job-seconds" in doc
    assert "| teacher pass | 0.000 | 0.250 | 0.450 |" in doc and "| teacher rows (count) | 0 | 56 | 109 |" in doc
    assert "| rl_step | 128 | 4351 | 2,150 | 3,397 | 1.58x | True |" in doc
    assert "| whole default DAG, wall | 91.0 min | ≤ 90 min | **no** |" in doc
    stitched = {**PIPELINE, "run": {"from": "the finished tree of `make run` (results/), measured where it ran",
                                    "sittings": [["2027-01-15T08:00:00+00:00", "2027-01-15T09:00:00+00:00"],
                                                 ["2027-01-16T10:00:00+00:00", "2027-01-16T10:31:00+00:00"]]}}
    assert "`make run` (results/), measured where it ran, in 2 sittings (stopped and resumed; the wall time is " \
           "their sum" in docs.performance_doc(stitched, "p.json")
    assert "2027-01-15 08:00 to 09:00; 2027-01-16 10:00 to 10:31 UTC)" in docs.performance_doc(stitched, "p.json")
    assert "| one RLRT step over one GRPO step | 1.05x | ≤ 1.10x | yes |" in doc
    assert "| a model job's imports | 3.21 s | ≤ 2 s | **no** |" in doc
    assert "| `snakemake -n` on the finished tree | 1.37 s | ≤ 3 s | yes |" in doc
    assert "recomputed" not in doc  # a bench without the fourth arm (old_logp: recompute) claims nothing about it
    st = PIPELINE["step_time"]
    four = {**PIPELINE, "step_time": {**st, "grpo_recompute_step_s": 2.4, "rollout_logp_speedup": 1.2,
                                      "breakdown_s": {**st["breakdown_s"], "grpo_recompute": {
                                          **st["breakdown_s"]["grpo"], "time_old_logp": 0.4}}}}
    doc4 = docs.performance_doc(four, "p.json")
    assert "| phase (s) | GRPO | RLRT | RLSD | GRPO, θ_old recomputed |" in doc4
    assert "| old log-probs | 0.350 | 0.350 | 0.350 | 0.400 |" in doc4
    assert "the fourth arm: 2.40 s, so the sampler's save 1.20x of a GRPO step." in doc4
    assert "fifth arm" not in doc4
    five = {**four, "step_time": {**four["step_time"], "grpo_every_row_step_s": 2.6, "idle_rows_speedup": 1.3,
                                  "breakdown_s": {**four["step_time"]["breakdown_s"], "grpo_every_row": {
                                      **st["breakdown_s"]["grpo"], "time_update": 1.5}}}}
    doc5 = docs.performance_doc(five, "p.json")
    assert "| GRPO, θ_old recomputed | GRPO, every row updated |" in doc5
    assert "| update | 1.050 | 1.050 | 1.050 | 1.050 | 1.500 |" in doc5
    assert "GRPO running every row, the fifth arm: 2.60 s (1.30x)." in doc5
    broken = {**PIPELINE, "sampler": {"results": {"x": {**PIPELINE["sampler"]["results"]["rl_step"],
                                                        "speedup": 3.5, "same_tokens": False}}}}
    assert "| 0.00x | ≥ 3x | **no** |" in docs.performance_doc(broken, "p.json")  # other tokens: no speed-up counts
    (tmp_path / "bad.json").write_text("{}")
    assert docs.main(["--no-results", "--bench", str(tmp_path / "bad.json"), "--out", str(tmp_path / "d")]) == 1


def test_performance_doc_states_what_each_cut_of_work_does_to_the_claims():
    row = {"claim": "1", "where": "M-base", "a": "rlrt", "b": "grpo",
           "full": {"diff": 2.5, "se": 0.8, "verdict": "reproduced", "seeds": 3, "problems": 256},
           "samples_half": {"n": 8, "se": 1.0, "same_verdict": 0.75, "draws": 20},
           "problems_half": {"diff": 2.0, "se": 1.1, "verdict": "inconclusive", "seeds": 3, "problems": 128},
           "fewer_seeds": {"diff": 2.4, "se": 0.5, "verdict": "reproduced", "seeds": 2, "problems": 256}}
    steady = {**row, "claim": "0", "samples_half": {**row["samples_half"], "same_verdict": 1.0},
              "problems_half": {**row["problems_half"], "verdict": "reproduced"}}
    cuts = {"rows": [steady, row], "job_seconds": 30_000.0, "eval_job_seconds": 2_400.0, "seeds": 3,
            "last_seed_job_seconds": 7_500.0, "draws": 20}
    doc = docs.performance_doc({**PIPELINE, "cuts": cuts}, "p.json")
    assert "The evaluations are 2,400 of the run's 30,000 job-seconds (8 %): halving their samples or problems " \
           "saves at most 1,200 (~10 min on 2 cores). The last seed's jobs are 7,500 job-seconds (25 %)." in doc
    assert "of every split, and **2 seeds** (0 to 1). The evaluations" in doc
    assert "Verdicts moved: avg@8 in 1 of 2 rows (in at least one draw), half the problems in 1, 2 seeds in 0." \
           in doc
    assert "| 1 | M-base | rlrt − grpo | +2.5 | 0.80, reproduced | 1.00 (1.25x), 75 % | 1.10, inconclusive | " \
           "0.50, reproduced |" in doc


# ---- the committed documents ----------------------------------------------------------------------------------------

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _links(text: str) -> list[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks and spans are not links
    text = re.sub(r"`[^`\n]*`", "", text)
    return [a or b for a, b in _LINK.findall(text)]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(path):
    links = [u for u in _links(path.read_text()) if not re.match(r"[a-z]+:|#", u)]
    missing = [u for u in links if not (path.parent / u.split("#", 1)[0]).exists()]
    assert not missing, f"{path.relative_to(ROOT)}: links to missing files: {missing}"


def test_the_link_check_sees_a_broken_link(tmp_path):
    assert _links("see [the docs](docs/x.md#a) and ![fig](f.png), `[no](link)` is [web](https://x.org)") == \
        ["docs/x.md#a", "f.png", "https://x.org"]


def named_tests(text: str) -> list[tuple[str, str]]:
    """(file, test) of every ``tests/<file>.py::<test>`` in ``text``; ``::<test>`` alone names the file before it."""
    out, current = [], None
    for m in re.finditer(r"`(tests/[\w/]+\.py)?::(test_\w+)`", text):
        current = m.group(1) or current
        assert current, f"`::{m.group(2)}` with no file before it"
        out.append((current, m.group(2)))
    return out


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_every_test_the_reliability_catalogue_names_exists():
    names = named_tests((ROOT / "docs" / "reliability.md").read_text())
    assert len(names) >= 40
    missing = [f"{f}::{t}" for f, t in names if not (ROOT / f).is_file() or t not in _test_functions(ROOT / f)]
    assert not missing, f"docs/reliability.md names tests that do not exist: {missing}"


def test_the_catalogue_check_sees_a_missing_test():
    names = named_tests("| a | `tests/test_docs.py::test_nope`, `::test_the_catalogue_check_sees_a_missing_test` |")
    assert names == [("tests/test_docs.py", "test_nope"),
                     ("tests/test_docs.py", "test_the_catalogue_check_sees_a_missing_test")]
    assert "test_nope" not in _test_functions(ROOT / "tests" / "test_docs.py")


def test_the_committed_results_document_quotes_only_its_own_numbers():
    path = ROOT / "docs" / "results.md"
    if not path.exists():
        pytest.skip("docs/results.md is written by `make docs` after the first full `make run`; none committed yet")
    assert docs.unsupported_numbers(path.read_text()) == []
