"""The files torch.save writes (tensors, checkpoints, model bundles): written atomically, read with
damage told apart.

torch.save writes a zip whose members carry CRC-32 checksums, and torch's reader never checks them:
a byte changed inside a tensor loads as another number without a word (a resumed training, a served
model). Python's zipfile checks them, at about 2 GB/s, before torch reads the file.

torch's writer, for its part, reports a full disk as "unexpected pos 704 vs 598" (a RuntimeError without
an errno): after such a failure the bytes are written again by Python, whose OSError says "No space left
on device". Not always through Python: that costs a 70 MB checkpoint about 0.1 s more.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path

import torch

from pipeline.atomic import atomic_path
from pipeline.errors import DamagedFileError, NamelangError, typed_first_line


def save_torch_file(obj: object, target: str | Path) -> Path:
    """torch.save `obj` to `target` atomically; a disk without room is a NamelangError naming `target`."""
    with atomic_path(target) as tmp:
        try:
            with open(tmp, "wb") as fh:  # Python's file, closed on failure: torch's own writer keeps its
                torch.save(obj, fh)      # handle, and a full disk's space, while its error lives
        except RuntimeError:
            buffer = io.BytesIO()  # the same bytes through Python's write, to learn why torch's failed
            torch.save(obj, buffer)
            tmp.write_bytes(buffer.getbuffer())
            raise  # Python's write went through: torch's error was not the disk's
    return Path(target)


def load_torch_file(path: str | Path, what: str, advice: str = "") -> object:
    """`torch.load(path)` of plain data (weights_only), on the CPU; a damaged file is a DamagedFileError
    saying "<what> is corrupt or unreadable (why)<advice>", a missing one "<what> not found<advice>"."""
    damaged = _damaged_member(Path(path))
    if damaged is not None:
        raise DamagedFileError(f"{what} is corrupt or unreadable ({damaged}){advice}", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise NamelangError(f"{what} not found{advice}", path) from exc
    except Exception as exc:  # a truncated or foreign file fails in many ways inside torch
        raise DamagedFileError(f"{what} is corrupt or unreadable ({typed_first_line(exc)}){advice}", path) from exc


def _damaged_member(path: Path) -> str | None:
    """Why the zip's data is damaged (a member failing its checksum), or None. A file that is not a zip
    at all is left to torch.load, which says what it found."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:  # a zip's start without its end: cut short (torch says so in a paragraph)
        with open(path, "rb") as fh:
            return "cut short: the zip it starts as has no directory at its end" if fh.read(4) == b"PK\x03\x04" \
                else None  # not a zip at all: torch.load says what it found
    except OSError:  # missing, a folder: torch.load says which
        return None
    with archive:
        try:
            member = archive.testzip()
        # a member's data cut or garbled; a foreign zip's encryption (RuntimeError) or compression
        except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as exc:
            return typed_first_line(exc)
    return None if member is None else f"{member} is damaged: its checksum or header does not match"
