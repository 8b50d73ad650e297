"""Atomic file outputs: a killed job never leaves a complete-looking file.

Every stage writes through these helpers: the content goes to a temporary sibling first and is renamed into
place only when complete (``os.replace`` is atomic on POSIX within one file system).

Every output of a manifested results tree (``rlrt.manifest``) gets its SHA-256 recorded right after the rename,
and the readers below check what they read against it: a result altered after it was written is a
``rlrt.manifest.ManifestError`` naming the file, never a number silently carried into a table.

Reads are strict: a defect of an input file (not UTF-8, invalid or truncated JSON, empty, a problem row without
its question or answer) is a ValueError that names the file and line (``path:line: what is wrong``), never a
silently shorter or wrong list of rows.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from rlrt import manifest

log = logging.getLogger("rlrt.io")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; rename it onto ``path`` if the block succeeds. Temporary files
    of an earlier writer of ``path`` that was killed (``.<name>.*.tmp``) are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a writer killed before its rename
        if stale.is_file():
            stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        commit = manifest.prepare(path, tmp)  # the finished bytes' SHA-256, recorded after the rename
        os.replace(tmp, path)
        if commit:
            commit()
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; it replaces ``path`` only if the block succeeds. Temporary
    folders of an earlier writer of ``path`` that was killed (``.<name>.*.tmp``) are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a writer killed before its rename
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        commit = manifest.prepare(path, tmp)  # every file's SHA-256, recorded after the rename
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
        if commit:
            commit()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _utf8(raw: bytes, path: str | os.PathLike, lineno: int, offset: int = 0) -> str:
    """``raw`` decoded as UTF-8; invalid bytes raise ValueError ``path:line: not valid UTF-8 ...``."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = lineno + raw[:e.start].count(b"\n")
        raise ValueError(f"{path}:{line}: not valid UTF-8 (byte {raw[e.start]:#04x} at byte offset "
                         f"{offset + e.start}); re-encode the file as UTF-8") from None


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value in ``path`` (UTF-8). A missing file raises FileNotFoundError; invalid UTF-8 or invalid JSON
    (an empty or truncated file included) a ValueError starting ``path:line:``; bytes that differ from the
    manifest's record (``rlrt.manifest.check``) a ``ManifestError`` (a ValueError) naming the file."""
    raw = manifest.read_bytes(path)
    text = _utf8(raw, path, 1)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        what = "empty file" if not text.strip() else "invalid JSON (truncated?)"
        raise ValueError(f"{path}:{e.lineno}:{e.colno}: {what}: {e.msg}") from None


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


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a JSONL file, in order.

    Every defect is a ValueError starting ``path:line:`` -- bytes that are not UTF-8, a line that is not JSON (a
    last line without its newline is reported as truncated: a file cut off mid-write), a value that is not an
    object. A missing file raises FileNotFoundError naming it. An empty file yields nothing (see ``read_jsonl``)."""
    manifest.check(path)
    offset = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = _utf8(raw, path, lineno, offset)
            offset += len(raw)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                what = "malformed JSON line" if raw.endswith(b"\n") else \
                    "truncated last line (no newline at the end: was the file cut off mid-write?)"
                raise ValueError(f"{path}:{lineno}: {what}: {e}") from e
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file (blank lines skipped), with the ``path:line:`` errors of ``iter_jsonl``;
    a file with no rows (empty, or only blank lines) is an error too: every JSONL the pipeline reads has rows."""
    rows = [row for _, row in iter_jsonl(path)]
    if not rows:
        raise ValueError(f"{path}: empty JSONL file (no rows): an upstream step wrote nothing, or was cut off")
    return rows


# ---- problem sets: the normalised rows every engine reads (synthetic JSONL or hub parquet) ----

PROBLEM_COLUMNS = ("id", "question", "answer", "solution", "explanation", "source")
"""The normalised problem row of a real data set (``rlrt.tasks.benchmarks``): all strings. ``answer`` is the gold
final answer ("" where a data set has none, e.g. RLT's distillation traces); ``solution`` a reference solution or
""; ``explanation`` a reference reasoning trace or "" (Bespoke-Stratos: the post-processed R1 thought, RLT's
reference traces and the teacher's SFT warm-up data). Synthetic rows (JSONL) carry extra task keys and are read, never written, through ``write_problems``."""


def read_problems(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a problem file: ``.jsonl`` (the synthetic task, any keys) or ``.parquet`` (a staged hub data
    set, ``PROBLEM_COLUMNS``). Both engines (local and verl) read splits through this one function.

    Contract: every row has a non-empty string ``question`` and a string ``answer``; a row that breaks it is a
    ValueError naming the file and line (``path:line:``, JSONL) or row (``path: row k:``, parquet), as are the
    ``read_jsonl`` defects, an unreadable parquet file and a file without rows. Rows whose ``answer`` is "" (RLT's
    distillation split keeps code / puzzle traces without one) are kept, and their count is logged: they can
    never score in RL or evaluation."""
    path = Path(path)
    if path.suffix == ".jsonl":
        numbered = list(iter_jsonl(path))
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not path.is_file():
            raise FileNotFoundError(f"{path}: problem file does not exist")
        manifest.check(path)
        try:
            numbered = list(enumerate(pq.read_table(path).to_pylist()))
        except pa.ArrowException as e:
            raise ValueError(f"{path}: unreadable parquet file (truncated or not parquet?): {e}") from e
    else:
        raise ValueError(f"{path}: unknown problem file type {path.suffix!r} (expected .jsonl or .parquet)")
    if not numbered:
        raise ValueError(f"{path}: no problems in the file (empty): an upstream step wrote nothing")
    for n, row in numbered:
        where = f"{path}:{n}" if path.suffix == ".jsonl" else f"{path}: row {n}"
        q, a = row.get("question"), row.get("answer")
        if not isinstance(q, str) or not q.strip():
            raise ValueError(f"{where}: no question (question={q!r:.40})")
        if not isinstance(a, str):
            raise ValueError(f"{where}: no gold answer string (answer={a!r:.40}); every problem row needs one "
                             f"(\"\" where a data set has none)")
    rows = [row for _, row in numbered]
    blank = sum(not r["answer"].strip() for r in rows)
    if blank:
        log.warning("%s: %d of %d problems have no gold answer (they can never score)", path, blank, len(rows))
    return rows


def write_problems(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> None:
    """Write normalised problem rows, atomically, in the format the path's suffix names -- the one
    :func:`read_problems` reads it back with: ``.parquet`` (the fixed all-string schema ``PROBLEM_COLUMNS``) or
    ``.jsonl`` (one object a line, the same columns in that order). Any other suffix is a ValueError raised before
    anything is written (a parquet file under a ``.jsonl`` name would be unreadable as JSONL).

    A row with a missing, extra or non-string column raises ValueError naming the row and column: a malformed
    row must never reach training as a silently cast or dropped value. Zero rows still write the file (parquet:
    with its schema)."""
    suffix = Path(path).suffix
    if suffix not in (".parquet", ".jsonl"):
        raise ValueError(f"{path}: cannot write problems as {suffix or 'a file without a suffix'!r}: the suffix "
                         f"picks the format (.parquet or .jsonl, the two read_problems reads)")
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
    if suffix == ".jsonl":
        n = len(cols[PROBLEM_COLUMNS[0]])
        write_jsonl(path, ({c: cols[c][i] for c in PROBLEM_COLUMNS} for i in range(n)))
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(c, pa.string()) for c in PROBLEM_COLUMNS])
    table = pa.table(cols, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
