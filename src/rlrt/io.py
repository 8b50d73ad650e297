"""Atomic file outputs: a killed job never leaves a complete-looking file.

Every stage writes through these helpers: the content goes to a temporary sibling first and is renamed into
place only when complete (``os.replace`` is atomic on POSIX within one file system).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> None:
    """Write ``rows`` one JSON object a line, atomically (through ``atomic_path``)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file (blank lines skipped); a malformed line raises ValueError naming it."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: malformed JSON line: {e}") from e
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


# ---- problem sets: the normalised rows every engine reads (synthetic JSONL or hub parquet) ----

PROBLEM_COLUMNS = ("id", "question", "answer", "solution", "explanation", "source")
"""The normalised problem row of a real data set (``rlrt.tasks.benchmarks``): all strings. ``answer`` is the gold
final answer ("" where a data set has none, e.g. RLT's distillation traces); ``solution`` a reference solution or
""; ``explanation`` a reference reasoning trace or "" (Bespoke-Stratos: the post-processed R1 thought, RLT's
reference traces and the teacher's SFT warm-up data). Synthetic rows (JSONL) carry extra task keys and are read, never written, through ``write_problems``."""


def read_problems(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a problem file: ``.jsonl`` (the synthetic task, any keys) or ``.parquet`` (a staged hub data
    set, ``PROBLEM_COLUMNS``). Both engines (local and verl) read splits through this one function."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise ValueError(f"{path}: unknown problem file type {path.suffix!r} (expected .jsonl or .parquet)")


def write_problems(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> None:
    """Write normalised problem rows to parquet, atomically, with the fixed all-string schema ``PROBLEM_COLUMNS``.

    A row with a missing, extra or non-string column raises ValueError naming the row and column: a malformed
    row must never reach training as a silently cast or dropped value. Zero rows still write the schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols: dict[str, list[str]] = {c: [] for c in PROBLEM_COLUMNS}
    for k, row in enumerate(rows):
        missing = [c for c in PROBLEM_COLUMNS if c not in row]
        extra = sorted(set(row) - set(PROBLEM_COLUMNS))
        if missing or extra:
            raise ValueError(f"{path}: row {k}: missing columns {missing}, unexpected columns {extra} "
                             f"(a problem row has exactly {list(PROBLEM_COLUMNS)})")
        for c in PROBLEM_COLUMNS:
            v = row[c]
            if not isinstance(v, str):
                raise ValueError(f"{path}: row {k}: column {c!r} is {type(v).__name__}, expected str")
            cols[c].append(v)
    schema = pa.schema([(c, pa.string()) for c in PROBLEM_COLUMNS])
    table = pa.table(cols, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
