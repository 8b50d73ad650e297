"""The results tree's manifest: the SHA-256 of every declared output, recorded when it is written, checked when
it is read, and checked for a whole tree by ``make verify`` (``python -m rlrt.manifest verify <results>``).

Layout. A results tree is *manifested* when it holds ``<results>/.manifest/FORMAT`` (created by the Snakefile's
``onstart`` through :func:`init`, or by ``python -m rlrt.manifest init``). Each output has its own entry file,
``<results>/.manifest/<path under results>.sha256``, in ``sha256sum``'s format with paths relative to the
results folder: one line ``<sha256>  <path>`` for a file output, one line per file for a folder output (a model
folder: every file under it). So no file is shared between jobs (each job writes only its own outputs' entries,
each atomically: a temporary sibling renamed into place), and a tree can also be checked without this package:
``cd results && find .manifest -name '*.sha256' -exec cat {} + | sha256sum -c --quiet``.

Who records. The atomic writers of :mod:`rlrt.io` (``atomic_path``, ``atomic_dir`` and everything built on them:
``write_json``, ``write_jsonl``, ``write_text``, ``write_problems``, figures saved into an ``atomic_path``, CSV /
Markdown tables, model folders) hash the finished temporary file or folder, rename it into place, then write its
entry (:func:`prepare`); a job killed between the rename and the entry leaves the previous entry (or none), so the
output reads as altered (or unrecorded) until its job, which Snakemake marks incomplete, reruns. The root is the
nearest ancestor of the output holding ``.manifest/FORMAT`` (:func:`find_root`): no environment variable to carry
to a cluster node, and a write outside a manifested tree (``docs/``, a test's scratch folder) records nothing.
Snakemake's own outputs: benchmark files are recorded by the driver when the workflow ends (:func:`record_new`,
Snakefile ``onsuccess`` / ``onerror``).

What is not a result (:func:`is_result`): ``logs/``, the MLflow store ``mlflow/`` (rewritten by every flush; its
``.initialized`` sentinel, which Snakemake touches, included), ``bench/`` (``make bench``), the RL jobs'
intermediate checkpoints ``runs/<backbone>/<run>/checkpoints/`` and a job's working folder beside its output
(``*.partial``, ``*.work``, ``*.verl``): resume state, whose checkpoints carry their own ``checksums.sha256``;
``.manifest/`` itself, DVC's ``*.dvc`` pointers, and hidden names (a writer's temporary ``.<name>.*.tmp``,
Snakemake's ``.snakemake_timestamp``).

Who checks. The readers of :mod:`rlrt.io` (``read_json``, ``iter_jsonl`` / ``read_jsonl``, ``read_problems``) and
:func:`read_bytes` / :func:`read_text` (``rlrt.docs``) check the bytes they read against the entry: a difference
is a :class:`ManifestError` naming the file with the expected and actual hash prefixes. A file of a manifested tree
with no entry (written by code older than the manifest) is accepted with one logged warning; ``make verify`` lists
it as unrecorded and fails.

Cost: one SHA-256 pass over each output when it is written, streamed 1 MiB at a time on one core (a paper-scale
checkpoint folder: one extra sequential read of its files, next to the hours of training that wrote them), and
one over each file a stage reads through the readers above (tables, figures and claims read small JSONs; a model
folder is loaded by transformers, checked by its own ``checksums.sha256``, not hashed again here). ``make verify``
hashes the whole tree once.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator

log = logging.getLogger("rlrt.manifest")

MANIFEST = ".manifest"
FORMAT_FILE = "FORMAT"
FORMAT = "rlrt-manifest 1: <path>.sha256 per output, sha256sum lines, paths relative to the results folder\n"
SUFFIX = ".sha256"
CHUNK = 1 << 20
NOT_RESULTS = ("logs", "mlflow", "bench", MANIFEST)
"""First-level folders of a results tree that hold no DAG results: job logs, the MLflow store (rewritten by every
flush), ``make bench``'s timings of this machine (bench/bench_pipeline.py, no DAG output), the manifest."""
WORK_SUFFIXES = (".partial", ".work", ".verl")
"""A job's working folder beside its output (``<output>.partial``: the RL stage's checkpoints until the run ends;
``<output>.work`` / ``<output>.verl``: the verl backend's state): resume state, not results."""


class ManifestError(ValueError):
    """A result whose bytes differ from those recorded when it was written."""


# ---- where, and what ----------------------------------------------------------------------------------------------

def init(results: str | os.PathLike) -> Path:
    """Make ``results`` a manifested tree (``<results>/.manifest/FORMAT``); idempotent. Returns the manifest dir."""
    d = Path(results) / MANIFEST
    d.mkdir(parents=True, exist_ok=True)
    marker = d / FORMAT_FILE
    if not marker.is_file():
        _atomic_write(marker, FORMAT.encode())
    return d


def find_root(path: str | os.PathLike) -> Path | None:
    """The nearest ancestor of ``path`` (itself excluded) holding ``.manifest/FORMAT``, or None."""
    p = Path(os.path.abspath(path))
    for anc in p.parents:
        if (anc / MANIFEST / FORMAT_FILE).is_file():
            return anc
    return None


def is_result(rel: str | PurePosixPath) -> bool:
    """Whether a path relative to the results folder is a result the manifest covers (see the module's doc)."""
    parts = PurePosixPath(rel).parts
    if not parts or parts[0] in NOT_RESULTS:
        return False
    if any(p.startswith(".") or p.endswith(WORK_SUFFIXES) for p in parts) or parts[-1].endswith(".dvc"):
        return False  # hidden, a job's working folder, DVC's pointer file (`make publish`)
    if len(parts) >= 4 and parts[0] == "runs" and parts[3] == "checkpoints":  # rules/rl.smk: resume checkpoints
        return False
    return True


def _rel(root: Path, path: str | os.PathLike) -> str:
    return Path(os.path.abspath(path)).relative_to(root).as_posix()


def entry_path(root: Path, rel: str) -> Path:
    return root / MANIFEST / f"{rel}{SUFFIX}"


# ---- hashing and the entry format ----------------------------------------------------------------------------------

def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _files(folder: Path) -> Iterator[Path]:
    """The files under ``folder`` a folder entry lists: every file, hidden names (and hidden folders) left out."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def _line(digest: str, rel: str) -> str:
    if "\\" in rel or "\n" in rel:  # sha256sum's escaping
        return "\\" + digest + "  " + rel.replace("\\", "\\\\").replace("\n", "\\n") + "\n"
    return f"{digest}  {rel}\n"


def parse_entry(text: str, where: Path) -> dict[str, str]:
    """``{path: sha256}`` of an entry file's lines."""
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        escaped = line.startswith("\\")
        body = line[1:] if escaped else line
        digest, sep, rel = body.partition("  ")
        if not sep or len(digest) != 64:
            raise ManifestError(f"{where}:{n}: not a sha256sum line: {line[:80]!r}")
        if escaped:
            rel = rel.replace("\\n", "\n").replace("\\\\", "\\")
        out[rel] = digest
    return out


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _entry_lines(source: Path, rel: str) -> str:
    """The entry text of an output whose bytes are at ``source`` (a file or a folder) and that will live at ``rel``."""
    if source.is_dir():
        return "".join(_line(file_digest(f), f"{rel}/{f.relative_to(source).as_posix()}") for f in _files(source))
    return _line(file_digest(source), rel)


def prepare(path: str | os.PathLike, source: str | os.PathLike) -> Callable[[], None] | None:
    """For a writer about to rename ``source`` (its finished temporary file or folder) onto ``path``: hash it now
    and return the function that writes the entry, to call right after the rename. None when ``path`` is no result
    of a manifested tree. ``rlrt.io``'s atomic writers call it; a stage never needs to."""
    root = find_root(path)
    if root is None:
        return None
    rel = _rel(root, path)
    if not is_result(rel):
        return None
    text = _entry_lines(Path(source), rel)
    return lambda: _atomic_write(entry_path(root, rel), text.encode())


def record(path: str | os.PathLike) -> bool:
    """Record an output already in place (a file Snakemake wrote, ``make report``'s HTML); False when it is no
    result of a manifested tree."""
    commit = prepare(path, path)
    if commit is None:
        return False
    commit()
    return True


def record_new(folder: str | os.PathLike) -> int:
    """Record every result file under ``folder`` (Snakemake's benchmark files: written by Snakemake after a job,
    never through ``rlrt.io``) that has no entry or was modified after its entry; returns how many. The Snakefile
    calls it when the workflow ends. An edit made after a rewritten benchmark file's job and before the workflow's
    end would be recorded with it: benchmark files are timings, not the numbers of a table."""
    folder = Path(folder)
    root = find_root(folder / "x")
    n = 0
    if root is None or not folder.is_dir():
        return 0
    for f in _files(folder):
        entry = entry_path(root, _rel(root, f))
        if not entry.exists() or entry.stat().st_mtime < f.stat().st_mtime:
            n += record(f)
    return n


# ---- checking a read -----------------------------------------------------------------------------------------------

def expected(root: Path, rel: str) -> str | None:
    """The recorded SHA-256 of file ``rel``: its own entry, or the entry of the folder output holding it; None when
    unrecorded."""
    prefix = PurePosixPath(rel)
    for cand in [prefix, *prefix.parents[:-1]]:
        entry = entry_path(root, cand.as_posix())
        if entry.is_file():
            return parse_entry(entry.read_text(), entry).get(rel)
    return None


_warned: set[str] = set()


def check(path: str | os.PathLike, data: bytes | None = None) -> None:
    """Check a result about to be used (its bytes ``data`` when already read) against the manifest: a difference
    raises :class:`ManifestError` naming the file; a result with no entry is logged once (an older tree)."""
    root = find_root(path)
    if root is None:
        return
    rel = _rel(root, path)
    if not is_result(rel):
        return
    want = expected(root, rel)
    if want is None:
        if str(path) not in _warned:
            _warned.add(str(path))
            log.warning("%s: no manifest entry (written before manifests, or not through rlrt.io); used unchecked "
                        "-- `make verify` lists it", path)
        return
    got = hashlib.sha256(data).hexdigest() if data is not None else file_digest(path)
    if got != want:
        raise ManifestError(f"{path}: altered after it was written: sha256 {got[:12]}… but the manifest "
                            f"({entry_path(root, rel)}) recorded {want[:12]}…; refusing to use it. Restore it, or "
                            f"delete it and `make run` to rebuild it (`make verify` checks the whole tree)")


def read_bytes(path: str | os.PathLike) -> bytes:
    """A result's bytes, checked against the manifest (:func:`check`)."""
    data = Path(path).read_bytes()
    check(path, data)
    return data


def read_text(path: str | os.PathLike) -> str:
    """A result's text (UTF-8), checked against the manifest (:func:`check`)."""
    return read_bytes(path).decode("utf-8")


# ---- checking a tree -----------------------------------------------------------------------------------------------

@dataclass
class Report:
    root: Path
    checked: int = 0
    altered: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.altered or self.missing or self.unrecorded)

    def lines(self) -> list[str]:
        out = [f"ALTERED     {x}" for x in self.altered] + [f"MISSING     {x}" for x in self.missing] + \
              [f"UNRECORDED  {x}" for x in self.unrecorded]
        verdict = "OK" if self.ok else "FAILED"
        out.append(f"verify {self.root}: {verdict}: {self.checked} files match the manifest, {len(self.altered)} "
                   f"altered, {len(self.missing)} missing, {len(self.unrecorded)} unrecorded")
        return out


def _entries(root: Path) -> Iterator[tuple[str, Path]]:
    base = root / MANIFEST
    for f in sorted(base.rglob(f"*{SUFFIX}")):
        if not any(p.startswith(".") for p in f.relative_to(base).parts):
            yield f.relative_to(base).as_posix()[: -len(SUFFIX)], f


def _tree_files(root: Path) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = sorted(d for d in dirnames if is_result(rel_dir + d))
        for name in sorted(filenames):
            if is_result(rel_dir + name):
                yield rel_dir + name


def verify(results: str | os.PathLike, published: Iterable[str] | None = None) -> Report:
    """Check every file of a results tree against its manifest: altered (hash differs), missing (recorded, gone),
    unrecorded (a result file no entry lists, a file added to a recorded folder included). ``published``: the paths
    (relative to ``results``; files or folders) a pulled tree was published with (``rlrt.publish.pull``): a
    recorded file outside them is not expected there, so only its absence is forgiven."""
    root = Path(results).resolve()
    scope = None if published is None else tuple(p.rstrip("/") for p in published)

    def expected_here(rel: str) -> bool:
        return scope is None or any(rel == p or rel.startswith(f"{p}/") for p in scope)

    if not (root / MANIFEST / FORMAT_FILE).is_file():
        raise ManifestError(f"{results}: no manifest ({MANIFEST}/{FORMAT_FILE}): not a results tree, or written "
                            "before manifests; rerun it with `make run` to record one")
    rep = Report(root)
    recorded: dict[str, str] = {}
    folders: list[str] = []
    for rel, entry in _entries(root):
        lines = parse_entry(entry.read_text(), entry)
        if set(lines) != {rel}:  # a folder output
            folders.append(rel)
            if not (root / rel).is_dir():
                if expected_here(rel):
                    rep.missing.append(f"{rel}/")
                continue
        recorded.update(lines)
    for rel, want in sorted(recorded.items()):
        f = root / rel
        got = file_digest(f) if f.is_file() else None
        if got is None:
            if expected_here(rel):
                rep.missing.append(rel)
        elif got != want:
            rep.altered.append(f"{rel} (recorded {want[:12]}…, now {got[:12]}…)")
        else:
            rep.checked += 1
    rep.unrecorded = [rel for rel in _tree_files(root) if rel not in recorded]
    return rep


def results_of(configfile: str) -> Path:
    """The ``results`` folder of a config as the workflow runs it (merged over config/config.yaml)."""
    from rlrt.config import load_overlay

    return Path(load_overlay(configfile)["results"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rlrt.manifest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="check a results tree against its manifest (exit 1 on any difference)")
    v.add_argument("results", nargs="?", help="the results folder (default: the config's `results`)")
    v.add_argument("--configfile", default="config/config.yaml", help="the config (overlay) whose `results` to check")
    r = sub.add_parser("record", help="record outputs already in place (files Snakemake or another tool wrote)")
    r.add_argument("paths", nargs="+")
    i = sub.add_parser("init", help="make a results folder a manifested tree")
    i.add_argument("results")
    a = p.parse_args(argv)
    if a.command == "init":
        print(init(a.results))
        return 0
    if a.command == "record":
        for path in a.paths:
            if not record(path):
                print(f"{path}: not a result of a manifested tree; nothing recorded", file=sys.stderr)
                return 1
        return 0
    results = Path(a.results) if a.results else results_of(a.configfile)
    try:
        rep = verify(results)
    except ManifestError as e:
        print(f"verify: {e}", file=sys.stderr)
        return 2
    print("\n".join(rep.lines()))
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
