"""Stage: one real data set -> ``<results>/data/<split>.parquet`` (id, question, answer, solution, source).

``--cfg`` is one ``data.datasets.<split>`` entry plus ``split`` and ``seed``: ``{"loader", "hub_id", "revision",
"hub_config", "hub_split", "path", "max_rows", "split", "seed"}``. Load (hub at the revision, or the local copy
at ``path``) -> normalise with the loader (bad rows skipped and counted by reason) -> optional ``max_rows``
seeded subsample (original order kept) -> parquet with the fixed all-string schema, written atomically.
"""

from __future__ import annotations

import logging
import random

from rlrt.hub import load_rows
from rlrt.io import write_problems
from rlrt.stages.common import parse, parser
from rlrt.tasks.benchmarks import LOADERS, normalise

log = logging.getLogger("rlrt.prepare_dataset")


def subsample(rows: list[dict], max_rows: int | None, seed: int, split: str) -> list[dict]:
    """At most ``max_rows`` rows, chosen by a ``random.Random`` keyed on (seed, split) and returned in their
    original order (so the file is the same for the same config, and a larger ``max_rows`` is not reshuffled)."""
    if max_rows is None or max_rows >= len(rows):
        return rows
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    keep = sorted(random.Random(f"{seed}:{split}").sample(range(len(rows)), max_rows))
    return [rows[i] for i in keep]


def prepare(cfg: dict, out: str) -> dict:
    """Run the stage on ``cfg``; returns the counts it logs: read, kept, written, skipped by reason."""
    loader = cfg["loader"]
    if loader not in LOADERS:
        raise SystemExit(f"data.datasets.{cfg.get('split')}.loader={loader!r}: known loaders {sorted(LOADERS)}")
    raw = load_rows(cfg.get("hub_id"), cfg.get("revision"), cfg.get("hub_config"), cfg.get("hub_split", "train"),
                    cfg.get("path"))
    rows, skipped = normalise(loader, raw)
    if not rows:
        raise SystemExit(f"split {cfg.get('split')!r} ({loader}): no usable rows out of {len(raw)} "
                         f"(skipped: {skipped}) -- wrong loader or a changed upstream layout?")
    kept = subsample(rows, cfg.get("max_rows"), int(cfg["seed"]), str(cfg["split"]))
    write_problems(out, kept)
    counts = {"read": len(raw), "kept": len(rows), "written": len(kept), "skipped": skipped}
    log.info("split %s (%s): %s -> %s", cfg["split"], loader, counts, out)
    return counts


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--out", required=True, help="<results>/data/<split>.parquet")
    args, cfg = parse(p, argv, offline=False)
    prepare(cfg, args.out)


if __name__ == "__main__":
    main()
