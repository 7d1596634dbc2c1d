"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Written by hand (a dozen lines) because the one library for it, `atomicwrites`, is archived;
the recipe is the standard one: temp file in the same folder, fsync, os.replace.

A writer holds a lock on its temp file until it is done, so that the next write of the same
target can tell a temp file a killed writer left (SIGKILL, a power cut: no cleanup runs) from one
being written, and delete it: the kernel drops a dead process's locks.
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import NamelangError

try:
    import fcntl
except ImportError:  # Windows, where the pyfunc model may be loaded: no locks, so nothing is deleted
    fcntl = None

# The process umask, read once: reading it means setting it, which is not safe while other
# threads create files.
_UMASK = os.umask(0)
os.umask(_UMASK)
ABANDONED_AFTER_S = 60.0  # a younger temp file may be one whose writer has not locked it yet


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `target`; on success it replaces `target`, on error it is removed.

    A target that cannot be written (a folder, under a file, a folder without write permission) is
    a NamelangError naming it, raised before the caller's work when it can be known then."""
    target = Path(target)
    if target.is_dir():
        raise NamelangError("cannot write this file: a folder has its name", target)
    with _cannot_write(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned(target)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held until this writer is done or dead
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        yield tmp
        with _cannot_write(target):
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        os.close(fd)


def remove_abandoned(target: Path) -> list[Path]:
    """Delete the temp files of `target` that killed writers left: older than a minute and not locked."""
    removed: list[Path] = []
    if fcntl is None:
        return removed
    for name in glob.glob(f".{glob.escape(target.name)}.*.tmp", root_dir=target.parent):
        path = target.parent / name
        try:
            if time.time() - path.stat().st_mtime < ABANDONED_AFTER_S:
                continue
            with open(path, "rb") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while its writer lives
                path.unlink()
            removed.append(path)
        except OSError:  # locked, gone meanwhile, or not ours to delete: leave it
            continue
    return removed


@contextlib.contextmanager
def _cannot_write(target: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        where = exc.filename if exc.filename and Path(exc.filename) != target else None
        detail = exc.strerror or type(exc).__name__
        raise NamelangError(f"cannot write this file ({detail}{f': {where}' if where else ''})", target) from exc


def write_bytes_atomic(target: str | Path, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_text_atomic(target: str | Path, text: str) -> Path:
    return write_bytes_atomic(target, text.encode("utf-8"))
