"""Where paper-scale inputs come from: data set rows and pretrained weights, from the Hugging Face hub at a
pinned revision or from a local copy (air-gapped clusters).

* :func:`load_rows` reads one data set split with ``datasets`` -- by hub id / config / split / revision, or from a
  local parquet / jsonl / json / csv file or a folder of them -- and returns plain Python rows in the data set's
  own column layout (``rlrt.tasks.benchmarks`` normalises them).
* :func:`stage_model` puts a model folder (config.json, tokenizer, weights) at ``out_dir``: symlinks into a
  local copy (cheap: weights are GBs) or a ``snapshot_download`` at the revision, plus ``rlrt_source.json``
  recording where it came from. Built in a temporary sibling and renamed, so a killed job leaves no
  complete-looking folder.

The hub branches need the network (and, for gated sets such as GPQA, a token in the environment); they have
never run from here -- the tests check the exact calls with stand-ins. ``HF_HUB_OFFLINE=1`` (set by the caller)
makes both read only the local hub cache.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from rlrt.io import atomic_dir

__all__ = ["load_rows", "stage_model", "local_data_files", "SOURCE_FILE", "DATA_BUILDERS"]

log = logging.getLogger("rlrt.hub")

SOURCE_FILE = "rlrt_source.json"
DATA_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}
"""Local file suffix -> the ``datasets`` packaged builder that reads it."""
_SHA = re.compile(r"^[0-9a-f]{40}$")


def local_data_files(path: str | os.PathLike, hub_split: str | None = None,
                     hub_config: str | None = None) -> tuple[str, list[str]]:
    """(builder, files) for a local data file or folder.

    A folder is searched recursively for data files (hidden files/folders skipped); all must share one format.
    A hub snapshot folder may hold several splits or configs: files named like the hub's own split shards
    (``<hub_split>-00000-of-00001.parquet``, ``<hub_split>.jsonl``) are preferred when present, else files whose
    stem is ``hub_config`` (GPQA ships ``gpqa_diamond.csv`` beside ``gpqa_main.csv``), else every data file.
    When that choice is ambiguous for your copy, point ``path`` at the file itself."""
    p = Path(path)
    if p.is_file():
        files = [p]
    elif p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in DATA_BUILDERS
                       and not any(part.startswith(".") for part in f.relative_to(p).parts))
        if hub_split:
            by_split = [f for f in files if f.stem == hub_split or f.name.startswith(f"{hub_split}-")]
            files = by_split or files
        if hub_config and len(files) > 1:
            by_config = [f for f in files if f.stem == hub_config]
            files = by_config or files
    else:
        raise FileNotFoundError(f"data path {p} does not exist")
    if not files:
        raise FileNotFoundError(f"no data files ({', '.join(DATA_BUILDERS)}) under {p}")
    builders = {DATA_BUILDERS.get(f.suffix) for f in files}
    if None in builders:
        raise ValueError(f"{p}: unsupported data file type (expected one of {sorted(DATA_BUILDERS)})")
    if len(builders) > 1:
        raise ValueError(f"{p}: data files of several formats {sorted(builders)}; point `path` at one file")
    return builders.pop(), [str(f) for f in files]


def load_rows(hub_id: str | None, revision: str | None = None, hub_config: str | None = None,
              hub_split: str | None = "train", path: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """The rows of one data set split as plain dicts (nested columns as lists / dicts).

    ``path`` given: a local copy (see :func:`local_data_files`), read with ``datasets``' packaged builder
    (hub id / revision / config are then only provenance). Otherwise ``datasets.load_dataset(hub_id,
    name=hub_config, split=hub_split, revision=revision)`` -- ``revision`` None means the default branch, which is
    not a pin."""
    import datasets

    if path is not None:
        builder, files = local_data_files(path, hub_split, hub_config)
        log.info("reading %d local %s file(s) from %s", len(files), builder, path)
        ds = datasets.load_dataset(builder, data_files=files, split="train")
    else:
        if not hub_id:
            raise ValueError("load_rows needs a hub_id or a local path")
        if not hub_split:
            raise ValueError(f"{hub_id}: hub_split is required (a split name such as 'train' or 'test')")
        if revision is None:
            log.warning("%s: no revision pinned; reading the default branch", hub_id)
        log.info("loading %s (config %s, split %s, revision %s)", hub_id, hub_config, hub_split, revision)
        ds = datasets.load_dataset(hub_id, name=hub_config, split=hub_split, revision=revision)
    rows = ds.to_list()
    log.info("%d rows, columns %s", len(rows), list(ds.column_names))
    return rows


def _resolve_revision(hub_id: str, revision: str | None) -> str | None:
    """The commit ``revision`` (a branch or tag) points to now, so the download and the provenance record name
    the same immutable snapshot. A 40-hex revision is already a commit. None when the hub cannot be asked
    (offline): the download then uses the requested revision and the record says it was not resolved."""
    if revision and _SHA.match(revision):
        return revision
    try:
        from huggingface_hub import HfApi

        return HfApi().model_info(hub_id, revision=revision).sha
    except Exception as e:  # noqa: BLE001 - offline, gated, no network: fall back, and say so
        log.warning("%s@%s: could not resolve the revision to a commit (%s); downloading it unresolved",
                    hub_id, revision, e)
        return None


def stage_model(hub_id: str, revision: str | None, path: str | os.PathLike | None,
                out_dir: str | os.PathLike) -> dict[str, Any]:
    """Put the model ``hub_id`` at ``out_dir`` and return its provenance (also written to
    ``out_dir/rlrt_source.json``): ``{"hub_id", "revision" (requested), "resolved_revision" (commit or None),
    "mode": "local" | "hub", "path" (the resolved local source or None)}``.

    ``path``: a local model folder; it must hold ``config.json``; its top-level entries are symlinked (absolute
    targets) into ``out_dir``. Otherwise ``huggingface_hub.snapshot_download(repo_id=hub_id, revision=<the
    resolved commit>, local_dir=...)``. Either way the folder is built in a temporary sibling and renamed."""
    out = Path(out_dir)
    if path is not None:
        src = Path(path).expanduser().resolve()
        if not (src / "config.json").is_file():
            raise FileNotFoundError(f"{hub_id}: local model folder {src} has no config.json")
        source = {"hub_id": hub_id, "revision": revision, "resolved_revision": None, "mode": "local",
                  "path": str(src)}
        with atomic_dir(out) as tmp:
            for entry in sorted(src.iterdir()):
                if entry.name == SOURCE_FILE:
                    continue
                os.symlink(entry, tmp / entry.name, target_is_directory=entry.is_dir())
            (tmp / SOURCE_FILE).write_text(json.dumps(source, indent=2, sort_keys=True) + "\n")
        log.info("%s: linked %s -> %s", hub_id, src, out)
        return source
    from huggingface_hub import snapshot_download

    resolved = _resolve_revision(hub_id, revision)
    source = {"hub_id": hub_id, "revision": revision, "resolved_revision": resolved, "mode": "hub", "path": None}
    with atomic_dir(out) as tmp:
        log.info("%s: downloading revision %s", hub_id, resolved or revision)
        snapshot_download(repo_id=hub_id, revision=resolved or revision, local_dir=str(tmp))
        if not (tmp / "config.json").is_file():
            raise FileNotFoundError(f"{hub_id}@{resolved or revision}: the snapshot has no config.json")
        (tmp / SOURCE_FILE).write_text(json.dumps(source, indent=2, sort_keys=True) + "\n")
    log.info("%s: staged at %s", hub_id, out)
    return source
