"""Stage: dataset prep -- the synthetic verifiable task's splits, generated from a seed.

Train (mixed lengths) and held-out test splits with no shared problem (same multiset of terms = same problem).
"""

from __future__ import annotations

import logging
from pathlib import Path

from rlrt.io import write_jsonl
from rlrt.stages.common import parse, parser
from rlrt.tasks.arithmetic import generate_splits

log = logging.getLogger("rlrt.prepare_data")


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--out-dir", required=True)
    args, cfg = parse(p, argv)
    if cfg.get("source", "synthetic") != "synthetic":
        raise SystemExit(f"data.source={cfg['source']!r}: only 'synthetic' is built into the embedded default")
    splits = generate_splits(int(cfg["seed"]), cfg["splits"])
    for name, rows in splits.items():
        write_jsonl(Path(args.out_dir) / f"{name}.jsonl", rows)
        log.info("split %s: %d problems", name, len(rows))


if __name__ == "__main__":
    main()
