"""The papers' own numbers beside the claims table's (config/paper_numbers.yaml): load, check the shape, look up.

See the file's header for the format. :func:`lookup` gives the number the table shows for a row's key (mean(a) -
mean(b) of the cited cells, or a stated value), NaN where the paper gives none, and the text and source to print.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

__all__ = ["PAPER_NUMBERS", "load", "lookup"]

PAPER_NUMBERS = Path(__file__).resolve().parents[2] / "config" / "paper_numbers.yaml"


def load(path: str | Path = PAPER_NUMBERS) -> dict[str, Any]:
    """The file, checked: ``numbers`` maps keys to entries of one of the three forms (cells a/b of one length with
    a source; a numeric value with a source; value null with why); ``aliases`` maps names to names. Raises
    ValueError naming the first bad key."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if set(data) - {"aliases", "numbers"} or not isinstance(data.get("numbers"), dict):
        raise ValueError(f"{path}: need a 'numbers' mapping (and optional 'aliases'), got keys {sorted(data)}")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in (data.get("aliases") or {}).items()):
        raise ValueError(f"{path}: aliases must map names to names")
    for key, e in data["numbers"].items():
        where = f"{path}: numbers[{key!r}]"
        if not isinstance(e, dict):
            raise ValueError(f"{where}: not a mapping")
        if "a" in e or "b" in e:
            ok = (isinstance(e.get("a"), list) and isinstance(e.get("b"), list) and len(e["a"]) == len(e["b"]) > 0
                  and all(isinstance(x, (int, float)) for x in e["a"] + e["b"]) and isinstance(e.get("source"), str))
            if not ok or "value" in e:
                raise ValueError(f"{where}: cells need a and b (numbers, one length) and a source, and no value")
        elif e.get("value") is None:
            if not isinstance(e.get("why"), str) or not e["why"].strip():
                raise ValueError(f"{where}: an entry without a number must say why")
        elif not (isinstance(e["value"], (int, float)) and isinstance(e.get("source"), str)
                  and isinstance(e.get("text"), str)):
            raise ValueError(f"{where}: a stated value needs a number, its text and a source")
    return data


def _normalize(data: dict[str, Any], key: str) -> str:
    parts = key.split("/")
    if len(parts) > 1:
        parts[1] = (data.get("aliases") or {}).get(parts[1], parts[1])
    return "/".join(parts)


def lookup(data: dict[str, Any], key: str | None) -> tuple[float, str]:
    """(number, "text; source") for a row's key: the exact entry, else its claim's ("<claim>"). No entry: NaN and
    "no entry" (the coverage test keeps every planned key covered)."""
    if not key:
        return math.nan, ""
    numbers = data["numbers"]
    k = _normalize(data, key)
    e = numbers.get(k) or numbers.get(k.split("/")[0])
    if e is None:
        return math.nan, "no entry in config/paper_numbers.yaml"
    if "a" in e:
        v = sum(e["a"]) / len(e["a"]) - sum(e["b"]) / len(e["b"])
        return v, e["source"]
    if e.get("value") is None:
        return math.nan, "; ".join(x for x in (e.get("text"), e.get("source"), e["why"]) if x)
    return float(e["value"]), f"{e['text']}; {e['source']}"
