"""Every failure of a job writes its cause where the user looks: the job's log, else the driver's stderr.

A rule runs its job as ``python -m ... > {log} 2>&1``: the job's stdout and stderr *are* its log file. When that
file's disk is full (a concurrent job filled it), Python's traceback and the logging lines cannot be written, and
the job used to fail with an empty log. :func:`install` (called by every stage's entry, ``rlrt.stages.common
.parse``, and by ``python -m rlrt.tracking``) makes the job's output robust:

- a header line is written to the log at the job's start, so the file is identified and has its first block;
- an emergency reserve of :data:`RESERVE_BYTES` is allocated on the log's file system (an unlinked temporary file
  beside the log, held open: it never outlives the process, not even a ``kill -9``) and freed just before the
  cause of a failure is written;
- ``sys.stdout`` / ``sys.stderr`` write straight to file descriptors 1 / 2 and never raise: output that cannot be
  written is counted and its last :data:`TAIL_BYTES` kept;
- an uncaught exception (``sys.excepthook``) writes the cause first -- exception type, message, the path
  involved, and for a full disk ``disk full on <mount>: N bytes free`` (``shutil.disk_usage``) -- then the
  traceback; the process exits 1 as before;
- where the log cannot take even that, the cause (and the tail of what was lost) goes to the stderr of the
  process that started the job -- Snakemake's, which the user sees -- opened append-only through ``/proc`` (Linux);
  so does the note, at exit, of a job that lost output but did not fail (e.g. the MLflow flush's warnings).
"""

from __future__ import annotations

import atexit
import errno
import io
import os
import shutil
import stat
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Iterable

RESERVE_BYTES = 64 * 1024
TAIL_BYTES = 8 * 1024
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# messages of writers that do not raise an OSError with its errno (Rust's tokenizers / safetensors, SQLite, torch)
DISK_FULL_TEXT = ("no space left on device", "os error 28", "database or disk is full", "disk quota exceeded")
LOW_FREE_BYTES = 1 << 20  # a file system with less free is named in any failure's cause (torch's "write failed")


class _State:
    name = "job"
    log_path: str | None = None
    reserve_fd: int | None = None
    paths: list[str] = []
    lost_bytes = 0
    lost_tail = b""
    lost_error: str | None = None
    installed = False


_S = _State()


def _write_all(fd: int, data: bytes) -> int:
    """Write ``data`` to ``fd``; returns the bytes written before an OSError (re-raised with ``.written`` set)."""
    done = 0
    while done < len(data):
        try:
            n = os.write(fd, data[done:])
        except InterruptedError:
            continue
        except OSError as e:
            e.written = done  # type: ignore[attr-defined]
            raise
        if n == 0:
            err = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            err.written = done  # type: ignore[attr-defined]
            raise err
        done += n
    return done


def _lose(data: bytes, e: OSError) -> None:
    _S.lost_bytes += len(data)
    _S.lost_tail = (_S.lost_tail + data)[-TAIL_BYTES:]
    if _S.lost_error is None:
        _S.lost_error = f"{type(e).__name__}: {e}"


def _emit(fd: int, data: bytes) -> bool:
    """Write ``data`` to ``fd``; what cannot be written is counted as lost (never raises). True when all went."""
    try:
        _write_all(fd, data)
        return True
    except OSError as e:
        _lose(data[getattr(e, "written", 0):], e)
        return False


class _Stream(io.TextIOBase):
    """A text stream onto a file descriptor: unbuffered, UTF-8, and writes that fail are counted, never raised
    (a full disk must not turn a log line into a second failure, nor hide the first one's cause)."""

    def __init__(self, fd: int, original) -> None:
        super().__init__()
        self._fd = fd
        self._original = original

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "backslashreplace"

    @property
    def buffer(self):
        return self._original.buffer

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        try:
            return os.isatty(self._fd)
        except OSError:
            return False

    def write(self, s: str) -> int:
        _emit(self._fd, s.encode("utf-8", "backslashreplace"))
        return len(s)

    def flush(self) -> None:
        pass


def _regular_file(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


def _fd_path(fd: int, pid: int | str = "self") -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None


def _reserve(directory: str) -> int | None:
    """An open, unlinked file of RESERVE_BYTES in ``directory`` (its blocks held until closed); None if it cannot
    be made (the disk is already full: then there is nothing to keep)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".rlrt-log-reserve.", dir=directory)
    except OSError:
        return None
    try:
        os.unlink(tmp)
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
        except (AttributeError, OSError) as e:
            if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
                raise
            _write_all(fd, b"\0" * RESERVE_BYTES)  # a file system without fallocate
        return fd
    except OSError:
        os.close(fd)
        return None


def release_reserve() -> None:
    if _S.reserve_fd is not None:
        try:
            os.close(_S.reserve_fd)
        except OSError:
            pass
        _S.reserve_fd = None


def install(name: str, paths: Iterable[str | os.PathLike] = ()) -> None:
    """Make this process's output robust and its failures self-explaining (see the module's doc). ``name``: the
    job's name in the header and the cause; ``paths``: the job's input and output paths, whose file systems a
    failure's cause names when they are (nearly) full. Call once, at the job's start, from the entry point only
    (never from a test's in-process ``main(argv)``: it replaces ``sys.stdout``, ``sys.stderr`` and the hook)."""
    _S.name = name
    _S.paths = [str(p) for p in paths if p]
    if _S.installed:
        return
    _S.installed = True
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    if _regular_file(2):
        _S.log_path = _fd_path(2)
    _emit(2, f"[rlrt] {name}: started {time.strftime('%Y-%m-%d %H:%M:%S')} (pid {os.getpid()})\n".encode())
    if _S.log_path and os.path.isdir(os.path.dirname(_S.log_path)):
        _S.reserve_fd = _reserve(os.path.dirname(_S.log_path))
    sys.stdout = _Stream(1, sys.__stdout__)
    sys.stderr = _Stream(2, sys.__stderr__)
    sys.excepthook = _excepthook
    atexit.register(_at_exit)


def _mount(path: str) -> tuple[str, int] | None:
    """(mount point, free bytes) of the file system holding ``path`` (or its nearest existing parent)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        free = shutil.disk_usage(p).free
    except OSError:
        return None
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return str(p), free


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in out:
        out.append(e)
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    return out


def _caused(chain: list[BaseException], e: BaseException) -> bool:
    """Whether ``e`` is the explicit cause (``raise ... from e``) of the exception before it in ``chain``."""
    i = chain.index(e)
    return i > 0 and chain[i - 1].__cause__ is e


def disk_note(path: str | os.PathLike) -> str:
    """``disk full on <mount>: N bytes free`` when the file system of ``path`` has under LOW_FREE_BYTES free,
    else ""."""
    m = _mount(str(path))
    return f"disk full on {m[0]}: {m[1]} bytes free" if m and m[1] < LOW_FREE_BYTES else ""


def cause(exc: BaseException, paths: Iterable[str] = ()) -> list[str]:
    """The lines that say why ``exc`` failed the job: ``<Type>: <message>``, the path involved, and for a full
    disk ``disk full on <mount>: N bytes free`` (or, for any failure, a file system of ``paths`` that is nearly
    full)."""
    chain = _chain(exc)
    first = (str(exc).strip().splitlines() or [""])[0]
    lines = [f"{type(exc).__name__}: {first}" if first else type(exc).__name__]
    involved: list[str] = []
    full = False
    for e in chain:
        if isinstance(e, OSError):
            involved += [str(f) for f in (e.filename, e.filename2) if f]
            full = full or e.errno in DISK_FULL_ERRNOS
        full = full or any(t in str(e).lower() for t in DISK_FULL_TEXT)
        if e is not exc:
            inner = (str(e).strip().splitlines() or [""])[0]
            how = "caused by" if _caused(chain, e) else "while handling"
            lines.append(f"  {how} {type(e).__name__}: {inner}")
    involved = list(dict.fromkeys(involved))
    if involved:
        lines.append("path: " + ", ".join(involved))
    candidates = list(dict.fromkeys(involved + list(paths)))
    mounts: dict[str, tuple[int, str]] = {}
    for p in candidates:
        m = _mount(p)
        if m and m[0] not in mounts:
            mounts[m[0]] = (m[1], p)
    named = False
    for mnt, (free, p) in sorted(mounts.items(), key=lambda kv: kv[1][0]):
        if (full and not named) or free < LOW_FREE_BYTES:
            lines.append(f"disk full on {mnt}: {free} bytes free ({p})" if full or free == 0 else
                         f"nearly full: {mnt} has {free} bytes free ({p})")
            named = True
    if full and not named:
        lines.append("disk full (No space left on device)")
    return lines


def _fallback_fd() -> int | None:
    """The stderr of the process that started this job (Snakemake's, or the shell's it gave its own), opened
    append-only; None when there is none that differs from this job's log (or no /proc)."""
    try:
        mine = os.fstat(2)
    except OSError:
        mine = None
    pid = os.getppid()
    for _ in range(3):
        if pid <= 1:
            return None
        path = f"/proc/{pid}/fd/2"
        try:
            st = os.stat(path)
            if mine is None or (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino):
                return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOCTTY)
        except OSError:
            return None
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
            pid = int(raw[raw.rindex(")") + 2:].split()[1])
        except (OSError, ValueError):
            return None
    return None


def _lost_note() -> str:
    if not _S.lost_bytes:
        return ""
    return (f"[rlrt] {_S.name}: {_S.lost_bytes} bytes of this job's output could not be written to "
            f"{_S.log_path or 'its stderr'} ({_S.lost_error})\n")


def _to_fallback(text: str) -> bool:
    fd = _fallback_fd()
    if fd is None:
        return False
    try:
        _write_all(fd, text.encode("utf-8", "backslashreplace"))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def report(exc: BaseException) -> None:
    """Write the cause of the fatal ``exc`` (then its traceback) to the log, or, where the log cannot take it, to
    the starting process's stderr."""
    lines = cause(exc, _S.paths + ([_S.log_path] if _S.log_path else []))
    head = "".join(f"[rlrt] {_S.name} failed: {ln}\n" if i == 0 else f"[rlrt]   {ln}\n" for i, ln in enumerate(lines))
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    note = _lost_note()
    lost_tail = _S.lost_tail
    _S.lost_bytes, _S.lost_tail = 0, b""
    release_reserve()
    ok = _emit(2, (note + head).encode("utf-8", "backslashreplace"))
    ok = _emit(2, tb.encode("utf-8", "backslashreplace")) and ok
    if not ok:
        where = f"its log {_S.log_path}" if _S.log_path else "its stderr"
        tail = lost_tail.decode("utf-8", "replace")  # what it could not write before the failure
        _S.lost_bytes, _S.lost_tail = 0, b""  # said here: the exit adds no second note
        _to_fallback(f"[rlrt] {_S.name}: cannot write to {where}; the cause of its failure:\n{head}"
                     + (f"[rlrt] the last of its earlier output that could not be written:\n{tail[-2000:]}\n"
                        if tail.strip() else "") + tb)


def _excepthook(etype, value, tb) -> None:
    if value is None:
        value = etype()
    if value.__traceback__ is None:
        value = value.with_traceback(tb)
    try:
        report(value)
    except Exception:  # noqa: BLE001 - the report must never hide the original traceback
        sys.__excepthook__(etype, value, tb)


def _at_exit() -> None:
    """A job that lost output (a full disk) but did not fail says so: in its log if it can, else to the starting
    process's stderr, with the tail of what was lost (the MLflow flush's warnings, a SystemExit's message)."""
    if not _S.lost_bytes:
        release_reserve()
        return
    tail = _S.lost_tail.decode("utf-8", "replace")
    text = _lost_note() + (f"[rlrt] the last of it:\n{tail[-2000:]}\n" if tail.strip() else "")
    release_reserve()
    _S.lost_bytes, _S.lost_tail = 0, b""
    if not _emit(2, text.encode("utf-8", "backslashreplace")):
        _to_fallback(text)
