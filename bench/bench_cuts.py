"""Benchmark: what cutting work would do to the claims (issue 34's "work that adds no information"), measured on a
finished results tree, with no model run.

Every claim row that compares two arms' evaluations at avg@n (``rlrt.claims.claims_plan``: Tables 1/3, RLT's
students, claim 0, the ablations) is scored as the ``claims`` stage scores it (``rlrt.analysis.claims.seed_t``:
the t interval over seeds), once on the run's own evaluations and once under each cut, made from the same files:

* ``samples/2``: avg@(n/2) instead of avg@n. Each problem's n/2 samples are a draw without replacement from its n
  (a hypergeometric draw from its correct count): exactly what an evaluation with half the samples would have
  seen, up to which half. Repeated over ``--draws`` draws; reported: the mean standard error and the share of
  draws whose verdict is the full evaluation's.
* ``problems/2``: the first half of every split's problems (each problem is drawn independently when the splits
  are made, so the first half is a random half).
* ``one seed fewer`` (with 3 seeds or more; S -> S - 1): the last seed's replicates never trained, a t over the
  other seeds' per-seed means (S - 2 degrees of freedom).

Beside each cut, what it saves, from the tree's own benchmark files: the evaluation stages' job-seconds that
sampling is proportional to (``evaluate``, and RLT's student evaluations), and for the seeds the job-seconds of
every job of the last seed (``+seed=<S-1>``). pass@k rows (Fig 8's n samples) and the analysis studies are
left out: halving their n would remove the k they score.

    python bench/bench_cuts.py [--config config/config.yaml] [--draws 20] [--out results/bench/cuts.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EVAL_STAGES = ("evaluate", "rlt")  # benchmark folders whose jobs' time is sampling for an evaluation


def halve_samples(result: dict, rng: np.random.Generator) -> dict:
    """The evaluation JSON ``result`` as avg@(n/2): each problem's correct count replaced by a hypergeometric draw
    of n/2 of its n samples."""
    n = int(result["n"])
    if n < 2:
        raise ValueError(f"avg@{n} has no half to keep")
    half = n // 2
    splits = {}
    for name, d in result["splits"].items():
        c = np.asarray(d["correct_counts"], dtype=np.int64)
        splits[name] = {**d, "correct_counts": rng.hypergeometric(c, n - c, half).tolist()}
    return {**result, "n": half, "splits": splits}


def halve_problems(result: dict) -> dict:
    """The evaluation JSON ``result`` on the first half of every split's problems."""
    return {**result, "splits": {name: {**d, "correct_counts": list(d["correct_counts"])[:len(d["correct_counts"])
                                                                                       // 2]}
                                 for name, d in result["splits"].items()}}


def matrix(results: list[dict], split) -> np.ndarray:
    """(S, P) avg@n scores of one arm from its seeds' evaluation JSONs (as the claims stage reads them)."""
    from rlrt.stages.claims import problem_scores

    return np.stack([problem_scores(r, "avg@n", split)[0] for r in results])


def score(a: list[dict], b: list[dict], split, direction: int) -> dict:
    from rlrt.analysis.claims import seed_t, verdict

    c = seed_t(matrix(a, split), matrix(b, split))
    return {"diff": 100 * c.diff, "se": 100 * c.se, "seeds": c.n_seeds, "problems": c.n_problems,
            "verdict": verdict(c.lo, c.hi, direction) if np.isfinite(c.lo) else "inconclusive"}


def cut_rows(plan: list[dict], draws: int, seed: int = 0, load=None) -> list[dict]:
    """Each avg@n two-arm row of a claims plan under the three cuts (see the module doc). ``load``: path -> the
    evaluation JSON (default: read through the run's manifest check)."""
    if load is None:
        from rlrt.io import read_json as load
    out = []
    for i, row in enumerate(plan):
        if row.get("missing") or row.get("study") or row.get("files_arms") or row["metric"] != "avg@n":
            continue
        a, b = [load(f) for f in row["files_a"]], [load(f) for f in row["files_b"]]
        which, d = row.get("split") or row.get("splits"), int(row["direction"])
        full = score(a, b, which, d)
        rng = np.random.default_rng([seed, i])
        half = [score([halve_samples(r, rng) for r in a], [halve_samples(r, rng) for r in b], which, d)
                for _ in range(draws)]
        rec = {"claim": row["claim"], "where": row["where"], "a": row["a"]["run"], "b": row["b"]["run"],
               "full": full,
               "samples_half": {"n": int(a[0]["n"]) // 2, "se": float(np.mean([h["se"] for h in half])),
                                "same_verdict": float(np.mean([h["verdict"] == full["verdict"] for h in half])),
                                "draws": draws},
               "problems_half": score([halve_problems(r) for r in a], [halve_problems(r) for r in b], which, d)}
        if len(a) >= 3:
            rec["fewer_seeds"] = score(a[:-1], b[:-1], which, d)
        out.append(rec)
    return out


def savings(bench_dir: Path, seeds: int) -> dict:
    """Job-seconds of the whole tree, of its evaluation stages (what halving samples or problems at most halves),
    and of the jobs of its last seed, ``+seed=<seeds - 1>`` (what one seed fewer saves; 0 with fewer than 3)."""
    total = evals = last = 0.0
    for tsv in bench_dir.rglob("*.tsv"):
        with tsv.open() as f:
            s = float(next(csv.DictReader(f, delimiter="\t"))["s"])
        rel = tsv.relative_to(bench_dir)
        total += s
        if rel.parts[0] in EVAL_STAGES and (rel.parts[0] == "evaluate" or "eval" in rel.parts[1:]):
            evals += s
        if seeds >= 3 and any(int(k) == seeds - 1 for k in re.findall(r"\+seed=(\d+)", str(rel))):
            last += s
    return {"job_seconds": total, "eval_job_seconds": evals, "seeds": seeds, "last_seed_job_seconds": last}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    p.add_argument("--results", default=None, help="the finished tree (default: the config's results:)")
    p.add_argument("--draws", type=int, default=20)
    p.add_argument("--out", default=str(ROOT / "results" / "bench" / "cuts.json"))
    args = p.parse_args(argv)
    from rlrt.claims import claims_plan
    from rlrt.config import load_overlay

    cfg = load_overlay(args.config)
    results = args.results or str(ROOT / cfg["results"])
    seeds = int(cfg.get("claims", {}).get("seeds", 1))
    res = {"rows": cut_rows(claims_plan(cfg, results), args.draws), **savings(Path(results) / "benchmarks", seeds),
           "draws": args.draws}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
