"""Stage: dataset prep -- the synthetic verifiable task's splits, generated from a seed.

Train (mixed lengths) and held-out test splits with no shared problem (same multiset of terms = same problem).
The generator guarantees unique ids and disjoint splits; both are checked again before anything is written
(``rlrt.tasks.validate``): a violation is a bug and fails the stage with no split written.
"""

from __future__ import annotations

import logging
from pathlib import Path

from rlrt.io import write_jsonl
from rlrt.stages.common import parse, parser
from rlrt.tasks.arithmetic import generate_splits
from rlrt.tasks.validate import check_unique_ids, find_overlap

log = logging.getLogger("rlrt.prepare_data")


def check_splits(splits: dict[str, list[dict]]) -> None:
    """Raise ValueError if an id repeats across ``splits`` or a train question is also in another split."""
    check_unique_ids(splits)
    if "train" in splits:
        overlap = find_overlap(splits["train"], {k: v for k, v in splits.items() if k != "train"})
        if overlap:
            raise ValueError(f"train shares questions with {({k: len(v) for k, v in overlap.items()})}: "
                             f"the generated splits must be disjoint")


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--out-dir", required=True)
    args, cfg = parse(p, argv)
    if cfg.get("source", "synthetic") != "synthetic":
        raise SystemExit(f"data.source={cfg['source']!r}: only 'synthetic' is built into the embedded default")
    splits = generate_splits(int(cfg["seed"]), cfg["splits"])
    check_splits(splits)
    for name, rows in splits.items():
        write_jsonl(Path(args.out_dir) / f"{name}.jsonl", rows)
        log.info("split %s: %d problems", name, len(rows))


if __name__ == "__main__":
    main()
