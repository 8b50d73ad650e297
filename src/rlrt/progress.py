"""Progress bars for long work: live on a terminal, a line every few seconds in a job's log file."""

from __future__ import annotations

import sys
from typing import Iterable, TypeVar

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str, unit: str = "it", leave: bool = True, **kw) -> Iterable[T]:
    """``kw`` goes to tqdm (e.g. ``initial``/``total`` for a resumed loop)."""
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(iterable, desc=desc, unit=unit, leave=leave, mininterval=0.5 if tty else 15.0,
                dynamic_ncols=tty, ascii=not tty, **kw)
