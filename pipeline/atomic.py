"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Written by hand because the one library for it, `atomicwrites`, is archived; the recipe is the
standard one: temp file in the same folder, fsync, os.replace, fsync of the folder.

A temp file's name carries a tag of where its writer runs (host, machine, pid namespace) and the
writer's process id, so that the next write of the same target can tell a temp file a killed writer
left (SIGKILL, a power cut: no cleanup runs) from one being written, and delete it. Not a lock file:
file locks are refused or emulated on network file systems, and on SMB a lock held by one handle
blocks writes through another. Only the replacing of several files together (`atomic_paths`) takes
turns, through an advisory lock on their folder where the file system offers one (not on NFS); a
file replaced on its own (the tensors beside the table) is not part of it.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import os
import secrets
import shutil
import socket
import stat
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import NamelangError, NamelangWarning
from pipeline.liveness import machine_id, pid_namespace

# The process umask, read once: reading it means setting it, which is not safe while other
# threads create files.
_UMASK = os.umask(0)
os.umask(_UMASK)
ABANDONED_AFTER_S = 60.0  # younger temp files are left alone whatever their writer's state
# Where a temp file's writer runs: its pid means something only there. The host name alone was not enough:
# two containers of one name (host networking) sharing a data folder each took the other's writers for dead.
_HOST = hashlib.sha256(f"{socket.gethostname()}\0{machine_id()}\0{pid_namespace()}".encode()).hexdigest()[:8]  # short
_NAME_IN_TEMP = 200  # bytes of a target's name in its temp files' names (the rest: at most 40)


def refuse_folder(target: Path) -> None:
    """A folder where a file is to be written: a NamelangError naming it, before any work."""
    if target.is_dir():
        raise NamelangError("cannot write this file: a folder has its name", target)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `target`; on success it replaces `target`, on error it is removed.

    A target that cannot be written (a folder, under a file, a folder without write permission) is
    a NamelangError naming it, raised before the caller's work when it can be known then."""
    target = Path(target)
    with _cannot_write(target):  # a name too long for the file system, say
        refuse_folder(target)
        created = _missing_folders(target.parent)  # removed again if nothing is written into them
    tmp: Path | None = None
    written = False
    try:  # from the first folder made: a failure anywhere (a name too long, a Ctrl-C) leaves nothing behind
        with _cannot_write(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            for left_over in remove_abandoned(target):
                warnings.warn(f"deleted {left_over}: a temp file that a killed writer left", NamelangWarning,
                              stacklevel=3)
            fd, tmp_name = tempfile.mkstemp(prefix=f"{_temp_prefix(target)}{_HOST}.{os.getpid()}.", suffix=".tmp",
                                            dir=target.parent)
            tmp = Path(tmp_name)
            os.close(fd)
        with contextlib.suppress(OSError):  # a file system without modes (vfat, exFAT) refuses it: no matter
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        with _cannot_write(target, only=_DEVICE_FULL):  # the caller's writes: not its other errors
            yield tmp
        with _cannot_write(target):
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        _sync_folder(target.parent)
        written = True
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if not written:  # a failed write leaves no trace, not even the folders made for it
            for folder in created:  # deepest first; one that another writer has filled meanwhile stays
                try:
                    folder.rmdir()
                except OSError:
                    break


def _temp_prefix(target: Path) -> str:
    """How a temp file of `target` starts: hidden, then its name, cut where a name of 255 bytes (the usual
    limit) would leave no room for what follows (host, pid, mkstemp's letters, `.tmp`); a cut letter's
    bytes stay bytes (os.fsdecode), which a file name may hold."""
    return f".{os.fsdecode(os.fsencode(target.name)[:_NAME_IN_TEMP])}."


@contextlib.contextmanager
def atomic_paths(targets: dict[str, Path]) -> Iterator[dict[str, Path]]:
    """Temp paths for several files that replace their targets together or not at all (a table and
    its reports). Each is written in full first; then they replace their targets one by one, last
    first, the old files kept aside meanwhile; if one cannot (a file made read-only, a folder put in
    its place), those already replaced get their old files back. An old file that cannot be put back
    stays where it was kept aside, and a warning says where. Two processes replacing files in the same
    folder take turns (`_turn_in`): interleaved, they left one's table beside the other's reports."""
    paths = {key: Path(path) for key, path in targets.items()}
    first = next(iter(paths.values()))
    turn = contextlib.ExitStack()
    old: dict[str, Path | None] = {}  # filled once every file is written: from then on, undo on failure
    stranded: set[str] = set()
    try:
        with contextlib.ExitStack() as stack:
            temps = {key: stack.enter_context(atomic_path(path)) for key, path in paths.items()}
            names = ", ".join(path.name for path in paths.values())
            # the caller's writes that find no room: said of the files together (the innermost temp
            # file's target, which the error would otherwise name, may not be the one being written)
            with _cannot_write(first.parent, only=_DEVICE_FULL, what=f"cannot write {names}"):
                yield temps
            turn.enter_context(_turn_in(first.parent))  # for the replacing only (milliseconds), not the writing
            for key, path in paths.items():
                old[key] = _set_aside(path)
    except BaseException:
        stranded = _put_back(paths, old)
        raise
    finally:
        turn.close()
        for key, kept in old.items():
            if kept is not None and key not in stranded:
                with contextlib.suppress(OSError):  # a leftover is deleted by the next write
                    kept.unlink(missing_ok=True)


@contextlib.contextmanager
def _turn_in(folder: Path) -> Iterator[None]:
    """One process at a time in the block, for `folder`: an advisory lock on the folder itself (flock on
    its descriptor), hand-written because filelock's lock file would stay in the user's output folder.
    Where a folder cannot be locked (not POSIX, a network file system that refuses it), no turn is taken."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        fd = None
    try:
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # and the lock with it


def _set_aside(target: Path) -> Path | None:
    """A second name for the file now at `target` (a hard link; a copy where links are refused), named
    as a temp file so that, left by a killed writer, the next write deletes it; None if there is none."""
    if not target.is_file():  # none, or a folder in its place: replacing it fails, and says so
        return None
    kept = target.with_name(f"{_temp_prefix(target)}{_HOST}.{os.getpid()}.{secrets.token_hex(4)}old.tmp")
    with _cannot_write(target, what="cannot keep the old file aside"):
        try:
            os.link(target, kept)
        except OSError:
            try:
                shutil.copy2(target, kept)
            except OSError:
                kept.unlink(missing_ok=True)
                raise
    return kept


def _put_back(targets: dict[str, Path], old: dict[str, Path | None]) -> set[str]:
    """Undo the replacements made; the keys whose old file could not be put back (it stays aside)."""
    stranded = set()
    for key, kept in old.items():
        target = targets[key]
        try:
            if kept is None:
                target.unlink(missing_ok=True)  # it was not there before
            elif not os.path.samefile(kept, target):
                os.replace(kept, target)
        except OSError as exc:
            if kept is not None:
                stranded.add(key)
                warnings.warn(f"{target}: could not put the old file back ({exc.strerror or exc}); it is kept as "
                              f"{kept}", NamelangWarning, stacklevel=4)
    return stranded


def _sync_folder(folder: Path) -> None:
    """The rename on disk too: until the folder is synced, a power cut may bring back the old file."""
    if os.name != "posix":  # Windows cannot open a folder to sync it
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a folder we may write but not read: the file itself is synced
        return
    try:
        os.fsync(fd)
    except OSError:  # a file system that does not sync folders (EINVAL)
        pass
    finally:
        os.close(fd)


def _missing_folders(folder: Path) -> list[Path]:
    """The folders of `folder`'s path that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def remove_abandoned(target: Path) -> list[Path]:
    """Delete the temp files of `target` whose writer, here (host, machine and pid namespace), is dead:
    regular files over a minute old. Another place's, a live process's or one that cannot be told apart stay."""
    removed: list[Path] = []
    for path, info, letters in _left_by_the_dead(target.parent, _temp_prefix(target), ".tmp"):
        # an old file set aside (`atomic_paths`, a hard link) keeps its old mtime: its age is its ctime's
        since = info.st_ctime if letters.endswith("old") else info.st_mtime
        if stat.S_ISREG(info.st_mode) and time.time() - since >= ABANDONED_AFTER_S:
            with contextlib.suppress(OSError):  # gone meanwhile, or not ours to delete: leave it
                path.unlink()
                removed.append(path)
    return removed


@contextlib.contextmanager
def scratch_folder(prefix: str) -> Iterator[str]:
    """A temporary folder, removed after the block, named `<prefix><where>.<pid>.<letters>` so that one a
    killed process left (SIGKILL, the out-of-memory killer: no cleanup runs; a model's 20 MB download,
    say) is removed by the next process that takes one of the same prefix, once it is a minute old.
    Only this user's folders: a link or another user's is left alone (anyone can make a name in /tmp)."""
    for path, info, _ in _left_by_the_dead(Path(tempfile.gettempdir()), prefix):
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and \
                time.time() - info.st_mtime >= ABANDONED_AFTER_S:
            shutil.rmtree(path, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f"{prefix}{_HOST}.{os.getpid()}.") as folder:
        yield folder


def _left_by_the_dead(folder: Path, prefix: str, suffix: str = "") -> Iterator[tuple[Path, os.stat_result, str]]:
    """The entries of `folder` named `<prefix><where>.<pid>.<letters><suffix>` by a process that ran here
    and is dead, with their lstat and letters; none off POSIX (os.kill(pid, 0) would end a process on
    Windows, not probe it)."""
    if os.name != "posix":
        return
    for name in glob.glob(f"{glob.escape(prefix)}*{suffix}", root_dir=folder):
        parts = name.removeprefix(prefix).removesuffix(suffix).rsplit(".", 2)  # where, pid, mkstemp's letters
        if len(parts) != 3 or parts[0] != _HOST or not parts[1].isdigit() or _alive(int(parts[1])):
            continue
        try:
            info = (folder / name).lstat()
        except OSError:  # gone meanwhile
            continue
        yield folder / name, info, parts[2]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process, say: alive
        return True
    return True


# a write refused for want of room: the disk full, a quota, a file-size limit (Arrow's errors carry these too)
_DEVICE_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@contextlib.contextmanager
def _cannot_write(target: Path, only: frozenset[int] | None = None, what: str = "cannot write this file"
                  ) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if only is not None and exc.errno not in only:
            raise
        where = exc.filename if exc.filename and Path(exc.filename) != target else None
        detail = os.strerror(exc.errno) if exc.errno else exc.strerror or type(exc).__name__
        raise NamelangError(f"{what} ({detail}{f': {where}' if where else ''})", target) from exc


def write_bytes_atomic(target: str | Path, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_text_atomic(target: str | Path, text: str) -> Path:
    return write_bytes_atomic(target, text.encode("utf-8"))
