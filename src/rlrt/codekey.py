"""A content hash of the code one stage runs: the rule's ``code`` param, so that editing a module reruns exactly
the jobs whose stage imports it (Snakemake's own ``code`` trigger sees only the rule's shell line).

The closure is read statically: every ``import rlrt...`` / ``from rlrt... import`` anywhere in a module (function
bodies included, so lazy imports count) is followed, transitively, inside this package. Two narrowings keep it to
what can change a stage's outputs:

* ``exclude`` prefixes are dropped with everything only they import, e.g. ``rlrt.backends.verl`` on the local
  backend (a stage imports it lazily only under ``backend: verl``);
* :data:`NO_OUTPUT_EFFECT`: modules that only report (MLflow logging, progress lines) never key a rerun.

The key is the SHA-256 of the closure's sources (module names and bytes), so it is the same on every machine and
after a fresh clone (no modification times involved).
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Iterable

PACKAGE = "rlrt"
ROOT = Path(__file__).resolve().parent  # src/rlrt

NO_OUTPUT_EFFECT = ("rlrt.tracking", "rlrt.progress", "rlrt.driverwatch", "rlrt.manifest", "rlrt.joblog")
"""Modules whose edits cannot change any stage's outputs: they log (MLflow), print progress, stop a job whose
driver has gone, record and check outputs' hashes beside them (rlrt.manifest), or write a failed job's cause to
its log (rlrt.joblog)."""


def module_file(name: str) -> Path | None:
    """``rlrt.a.b`` -> its source file (module or package ``__init__``), None when it is not in this package."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = ROOT.joinpath(*parts[1:])
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


@lru_cache(maxsize=None)
def direct_imports(name: str) -> tuple[str, ...]:
    """The ``rlrt`` modules one module names in any import statement (sorted)."""
    path = module_file(name)
    if path is None:
        return ()
    out: set[str] = set()
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                anchor = pkg.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)  # `from rlrt.x import module`
    return tuple(sorted(m for m in out if module_file(m) is not None))


def closure(module: str, exclude: Iterable[str] = ()) -> list[str]:
    """``module`` and every ``rlrt`` module it imports, transitively, less ``exclude`` prefixes and
    :data:`NO_OUTPUT_EFFECT`; the parent packages' ``__init__`` files run on import, so they are included."""
    skip = tuple(exclude) + NO_OUTPUT_EFFECT

    def skipped(m: str) -> bool:
        return any(m == s or m.startswith(s + ".") for s in skip)

    seen: set[str] = set()
    todo = [module]
    while todo:
        m = todo.pop()
        if m in seen or skipped(m) or module_file(m) is None:
            continue
        seen.add(m)
        parts = m.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages
        todo.extend(direct_imports(m))
    return sorted(seen)


@lru_cache(maxsize=None)
def code_key(module: str, exclude: tuple[str, ...] = ()) -> str:
    """SHA-256 (hex, 16 characters) of the sources of ``closure(module, exclude)``."""
    h = hashlib.sha256()
    for m in closure(module, exclude):
        h.update(m.encode() + b"\0" + module_file(m).read_bytes() + b"\0")
    return h.hexdigest()[:16]
