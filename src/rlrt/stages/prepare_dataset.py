"""Stage: one real data set -> ``<results>/data/<split>.parquet`` (id, question, answer, solution, source).

``--cfg`` is one ``data.datasets.<split>`` entry plus ``split`` and ``seed``: ``{"loader", "hub_id", "revision",
"hub_config", "hub_split", "path", "max_rows", "split", "seed"}``. Load (hub at the revision, or the local copy
at ``path``) -> normalise with the loader (bad rows skipped and counted by reason) -> optional ``max_rows``
seeded subsample (original order kept) -> parquet with the fixed all-string schema, written atomically.

``--exclude`` names other staged splits (the evaluation splits, for a training split): rows whose question is
also one of theirs are removed before the subsample, counted per split and logged (``removed_overlap``), so the
model is never trained on a test question (``rlrt.tasks.validate.remove_overlap``). A local JSONL copy that the
``datasets`` reader rejects is re-read with ``rlrt.io.read_jsonl`` so the error names the file and line.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from rlrt.hub import load_rows, local_data_files
from rlrt.io import read_jsonl, read_problems, write_problems
from rlrt.stages.common import parse, parser
from rlrt.tasks.benchmarks import LOADERS, normalise
from rlrt.tasks.validate import remove_overlap

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


def _load(cfg: dict) -> list[dict]:
    """The raw rows (``hub.load_rows``). When a local JSONL copy fails to load, its files are re-read with
    ``read_jsonl``, whose error names the file and line (``datasets`` names neither); other errors pass through."""
    args = (cfg.get("hub_id"), cfg.get("revision"), cfg.get("hub_config"), cfg.get("hub_split", "train"),
            cfg.get("path"))
    try:
        return load_rows(*args)
    except Exception:
        if cfg.get("path") is None:
            raise
        for f in local_data_files(cfg["path"], args[3], args[2])[1]:
            if f.endswith(".jsonl"):
                read_jsonl(f)  # raises the file:line error
        raise


def prepare(cfg: dict, out: str, exclude: list[str] | None = None) -> dict:
    """Run the stage on ``cfg``; returns the counts it logs: read, kept, written, skipped by reason, and with
    ``exclude`` (problem files of other splits) ``removed_overlap`` -- rows removed per excluded split."""
    loader = cfg["loader"]
    if loader not in LOADERS:
        raise SystemExit(f"data.datasets.{cfg.get('split')}.loader={loader!r}: known loaders {sorted(LOADERS)}")
    raw = _load(cfg)
    rows, skipped = normalise(loader, raw)
    removed: dict[str, int] = {}
    if exclude:
        others = {Path(p).stem: read_problems(p) for p in exclude}
        rows, removed = remove_overlap(rows, others, f"split {cfg.get('split')!r}")
    if not rows:
        raise SystemExit(f"split {cfg.get('split')!r} ({loader}): no usable rows out of {len(raw)} "
                         f"(skipped: {skipped}, removed as overlap: {removed}) -- wrong loader or a changed "
                         f"upstream layout?")
    kept = subsample(rows, cfg.get("max_rows"), int(cfg["seed"]), str(cfg["split"]))
    write_problems(out, kept)
    counts = {"read": len(raw), "kept": len(rows), "written": len(kept), "skipped": skipped}
    if exclude:
        counts["removed_overlap"] = removed
    log.info("split %s (%s): %s -> %s", cfg["split"], loader, counts, out)
    return counts


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--out", required=True, help="<results>/data/<split>.parquet")
    p.add_argument("--exclude", nargs="*", default=[],
                   help="staged problem files (<split>.parquet) whose questions this split must not contain")
    args, cfg = parse(p, argv, offline=False)
    prepare(cfg, args.out, args.exclude)


if __name__ == "__main__":
    main()
