"""Stage: the RLT branch's data -- the distillation question set with its reference traces, and countdown.

* ``questions.jsonl``: ``rlt.n_questions`` problems of the train split (a seeded shuffle, so the first
  ``rlt.n_small`` rows are a random subset: the paper's 1K analog), each with its reference solution and a
  reference trace (``arithmetic.reference_explanation``: the sum worked in another order). The reference traces
  are the teacher's SFT warm-up explanations (as Bespoke's traces are in the paper) and the baseline student data.
* ``countdown_train.jsonl`` / ``countdown_test.jsonl``: locally generated countdown problems, disjoint (the OOD
  transfer task; paper: 16K / 1K).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from rlrt.io import read_problems, write_jsonl
from rlrt.stages.common import parse, parser
from rlrt.tasks import countdown
from rlrt.tasks.arithmetic import reference_explanation

log = logging.getLogger("rlrt.rlt_data")


def reference_trace(row: dict, rng: random.Random) -> str:
    """The reference trace of one question: the synthetic task's other-order working, or a real data set's own
    (Bespoke-Stratos: the post-processed R1 thought, as in the RLT paper). A real row without one is an error,
    not an empty explanation the teacher would learn to write."""
    if "terms" in row:
        return reference_explanation(row["terms"], row["solution"], rng)
    if row.get("explanation"):
        return row["explanation"]
    raise SystemExit(f"rlt data: question {row.get('id')!r} ({row.get('source')}) has no reference trace "
                     f"(explanation); RLT needs question + solution + reference trace (rlt.data_split)")


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--train", required=True, help="the split the questions come from (rlt.data_split)")
    p.add_argument("--out-dir", required=True)
    args, cfg = parse(p, argv)
    rng = random.Random(f"{cfg['seed']}:rlt")
    rows = read_problems(args.train)
    n = int(cfg["n_questions"])
    if n > len(rows):
        raise SystemExit(f"rlt.n_questions={n} exceeds the {len(rows)} problems of {args.train}")
    picked = rng.sample(rows, n)
    out = [{**r, "explanation": reference_trace(r, rng)} for r in picked]
    write_jsonl(Path(args.out_dir) / "questions.jsonl", out)
    cd = cfg["countdown"]
    splits = countdown.generate_splits(int(cd["seed"]), {"countdown_train": int(cd["n_train"]),
                                                         "countdown_test": int(cd["n_test"])},
                                       int(cd["n_numbers"]), int(cd["max_number"]))
    for name, split in splits.items():
        write_jsonl(Path(args.out_dir) / f"{name}.jsonl",
                    [{"id": f"{name}-{i:05d}", **r} for i, r in enumerate(split)])
    log.info("rlt data: %d questions (%d small), countdown %s", n, int(cfg["n_small"]),
             {k: len(v) for k, v in splits.items()})


if __name__ == "__main__":
    main()
