"""Read a source of names (folder, .zip or URL) into raw lines, with provenance.

Provenance answers where, when and what: per file its origin, SHA-256, size, line count and
modified time; per ingest the source URI, UTC load time, package version and git commit.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import stat
import subprocess
import unicodedata
import warnings
import zipfile
import zlib
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import httpx
import numpy as np
import pyarrow as pa

from pipeline import __version__
from pipeline.atomic import atomic_path
from pipeline.config import DataConfig
from pipeline.errors import DamagedFileError, DownloadError, NamelangError, NamelangWarning, recordable_url

ARCHIVE_NAMES_FOLDER = "data/names"  # where the tutorial's data.zip keeps its files
# what else the tutorial's data.zip holds: the translation tutorial's English-French sentence pairs
TUTORIAL_ARCHIVE_OTHERS = frozenset({"data/eng-fra.txt"})


@dataclass(frozen=True)
class SourceFile:
    """One `<Language>.txt` as read: its label, where it came from, and its bytes."""

    language: str
    origin: str
    data: bytes
    modified_utc: str | None
    listed_as: str = ""  # a folder's file: its name in the folder (a link's, not its target's)


@dataclass(frozen=True)
class FileProvenance:
    language: str
    path: str
    sha256: str
    bytes: int
    lines: int
    modified_utc: str | None
    bom: bool
    crlf: bool


@dataclass(frozen=True)
class IngestResult:
    """Raw lines (`raw`, `language`, `source_file`, `line_number`) plus their provenance."""

    table: pa.Table
    files: list[FileProvenance]
    run: dict
    fingerprint: str | None = None  # `source_fingerprint` of the bytes read (not kept in the cache)

    def provenance(self) -> dict:
        return {"ingest": self.run, "files": [asdict(f) for f in self.files]}


# answers that may change on a second try: timeout, too many requests, the server's own failures
_WORTH_ANOTHER_TRY = {408, 425, 429, 500, 502, 503, 504}


def is_url(source: str) -> bool:
    """http:// or https://, in any case; a malformed one too (`check_source` says what is wrong with
    it): urlparse raised ValueError on an unclosed bracket, a traceback wherever a source was looked at."""
    return re.match(r"\s*https?://", str(source), re.IGNORECASE) is not None


def check_url(source: str) -> bool:
    """Whether `source` is a URL (else a local path); a URL that cannot be fetched as written (not
    http(s), malformed, no host) is an error in one line, before any download."""
    if not is_url(source):
        if "://" in str(source):  # a URL, not http(s); a Windows drive or a folder "names:v2" has no "//"
            scheme = str(source).split("://", 1)[0]
            raise NamelangError(f"unsupported URL scheme {scheme!r}: a source URL must be http or https", source)
        return False
    try:
        host = httpx.URL(source).host
    except httpx.InvalidURL as exc:  # an unclosed IPv6 bracket, a control character, a bad port
        raise NamelangError(f"not a valid URL: {exc}", source) from None
    if not host:
        raise NamelangError("not a valid URL: it names no host", source)
    return True


def download(url: str, raw_dir: Path, expected_sha256: str | None, timeout_s: float, max_bytes: int) -> Path:
    """Fetch `url` into `raw_dir` through a temp file.

    Nothing replaces the last download unless the new one is complete, verified and a zip archive.
    """
    name = PurePosixPath(urlparse(url).path).name or "download"
    target = Path(raw_dir) / name
    if expected_sha256 and target.exists() and sha256_file(target) == expected_sha256.lower():
        return target
    digest = hashlib.sha256()
    received = 0
    response = None
    try:
        # the archive's own bytes are wanted; a server may still compress them for transfer, and
        # then Content-Length counts the compressed bytes (`num_bytes_downloaded`), not the file's
        with atomic_path(target) as tmp, httpx.stream("GET", url, timeout=timeout_s, follow_redirects=True,
                                                      headers={"Accept-Encoding": "identity"}) as response:
            if response.status_code != 200:
                error = DownloadError if response.status_code in _WORTH_ANOTHER_TRY else NamelangError
                raise error(f"download failed: HTTP {response.status_code}", url)
            declared = response.headers.get("content-length")
            with open(tmp, "wb") as out:
                for chunk in response.iter_bytes(1 << 20):
                    received += len(chunk)
                    if received > max_bytes:
                        raise NamelangError(f"download larger than the {max_bytes}-byte limit", url)
                    digest.update(chunk)
                    out.write(chunk)
            if declared is not None and int(declared) != response.num_bytes_downloaded:
                raise DownloadError(f"download incomplete: {response.num_bytes_downloaded} of {declared} bytes",
                                    url)
            actual = digest.hexdigest()
            if expected_sha256 and actual != expected_sha256.lower():
                raise NamelangError(f"SHA-256 mismatch: expected {expected_sha256.lower()}, got {actual}",
                                    url)
            if not zipfile.is_zipfile(tmp):  # an error page answered with 200, say: kept beside the last
                rejected = target.with_name(f"{target.name}.not-a-zip")  # good archive for a look, not over it
                os.replace(tmp, rejected)
                raise NamelangError(f"not a readable zip archive (downloaded from {recordable_url(url)})", rejected)
    except httpx.HTTPError as exc:
        problem = " ".join(str(exc).split()) or type(exc).__name__  # one line, whatever httpx says
        # the network failing may pass; a URL httpx cannot fetch at all, or endless redirects, will not
        transient = isinstance(exc, httpx.TransportError) and not isinstance(exc, httpx.UnsupportedProtocol)
        # httpx's own count: a connection cut inside the first chunk leaves `received` at 0
        got = max(received, response.num_bytes_downloaded if response is not None else 0)
        raise (DownloadError if transient else NamelangError)(f"download failed after {got} bytes: {problem}",
                                                              url) from exc
    return target


def check_source(config: DataConfig) -> Path | None:
    """What can be said of the configured source without reading or downloading it: none given, a
    URL scheme other than http(s), a path that is not there. The local path; None for a URL."""
    if not str(config.source).strip():
        raise NamelangError("no source given: pass a folder of <Language>.txt files, a .zip or a URL")
    if check_url(config.source):
        return None
    path = Path(config.source).expanduser()
    if not path.exists():
        raise NamelangError("source does not exist", path)
    return path


def resolve_source(config: DataConfig) -> Path:
    """A local path for the configured source, downloading it first when it is a URL."""
    path = check_source(config)
    if path is None:
        return download(config.source, config.raw_dir, config.source_sha256, config.download_timeout_s,
                        config.max_download_bytes)
    if config.source_sha256 and path.is_dir():
        raise NamelangError("a SHA-256 (--sha256, data.source_sha256) pins an archive or a download, and this "
                            "source is a folder; its files' hashes are recorded in the table's provenance", path)
    if config.source_sha256 and path.is_file():
        actual = sha256_file(path)  # read once: an archive may be hundreds of MB
        if actual != config.source_sha256.lower():
            raise NamelangError(f"SHA-256 mismatch: expected {config.source_sha256.lower()}, got {actual}", path)
    return path


def language_files(folder: Path) -> list[Path]:
    """The folder's `<Language>.txt` files, in name order (a folder named `X.txt` is not one; the
    extension in any case: `Greek.TXT` is Greek); one that cannot be read as a file is an error."""
    named = sorted(p for p in _entries(folder) if _is_language_file(p.name) and not p.is_dir())
    for p in named:
        try:
            p.name.encode("utf-8")
        except UnicodeEncodeError:  # bytes Python could not decode, kept as surrogates
            shown = p.name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            raise NamelangError(f"file name '{shown}' is not valid UTF-8, so it names no language; rename it",
                                folder) from None
        # a broken link, a pipe (reading it would wait for ever): not skipped without a word
        if not p.is_file():
            kind = "a broken link" if p.is_symlink() and not p.exists() else "not a regular file"
            raise NamelangError(f"cannot read this file: {kind}", p)
    return named


def _entries(folder: Path) -> list[Path]:
    """What a source folder holds; one this user may not list is an error in one line."""
    try:
        return list(folder.iterdir())
    except OSError as exc:
        raise NamelangError(f"cannot list this folder: {exc.strerror or exc}", folder) from exc


def language_of(file_name: str) -> str:
    """The language a `<Language>.txt` names: Unicode composed (NFC; a Mac writes "Français" decomposed,
    which would be another label that looks the same) and without spaces around it."""
    return unicodedata.normalize("NFC", PurePosixPath(file_name).stem).strip()


def _is_language_file(file_name: str) -> bool:
    """`<Language>.txt`, the extension in any case; not a hidden file: `.txt` alone (no language),
    macOS's `._<Language>.txt` (AppleDouble metadata a copy from a Mac leaves beside each file), an
    editor's `.#<Language>.txt` lock, or another hidden file, which made a language ".hidden"."""
    path = PurePosixPath(file_name)
    return path.suffix.lower() == ".txt" and not path.name.startswith(".")


def _subfolders_with_language_files(folder: Path) -> list[str]:
    """The folder's sub-folders (one level down) that hold `<Language>.txt` files: not read, and said;
    hidden ones (Jupyter's `.ipynb_checkpoints`) and macOS's `__MACOSX` are no one's names."""
    found = []
    for sub in sorted(_entries(folder)):
        if sub.name.startswith((".", "__MACOSX")):
            continue
        try:
            if sub.is_dir() and any(_is_language_file(p.name) and not p.is_dir() for p in sub.iterdir()):
                found.append(sub.name)
        except OSError:  # a sub-folder this user may not list holds nothing read
            continue
    return found


def _folders_named_as_language_files(folder: Path) -> list[str]:
    """Folders named `<Language>.txt` (an unpacked archive's, a mistaken `mkdir`): a language that
    would otherwise go missing from the table without a word."""
    return sorted(p.name for p in _entries(folder) if _is_language_file(p.name) and p.is_dir())


def read_folder(folder: Path) -> list[SourceFile]:
    files = language_files(folder)
    below = _subfolders_with_language_files(folder)
    named_as_files = [name for name in _folders_named_as_language_files(folder) if name not in below]
    if named_as_files:
        warnings.warn(f"{folder}: {named_as_files} {'is a folder' if len(named_as_files) == 1 else 'are folders'}"
                      ", not a file of names: not read", NamelangWarning, stacklevel=2)
    if not files:
        hint = f" (the sub-folder {below[0]!r} holds some: give it as the source)" if len(below) == 1 else (
            f" (sub-folders {below} hold some: give one as the source)" if below else "")
        raise NamelangError(f"no <Language>.txt files in this folder{hint}", folder)
    if below:
        warnings.warn(f"{folder}: only this folder's .txt files are read; those in its sub-folder"
                      f"{'s' if len(below) > 1 else ''} {below} are not", NamelangWarning, stacklevel=2)
    read = []
    for p in files:
        try:
            read.append(SourceFile(language_of(p.name), str(p.resolve()), p.read_bytes(),
                                   datetime.fromtimestamp(p.stat().st_mtime, UTC).isoformat(), p.name))
        except OSError as exc:
            raise NamelangError(f"cannot read this file: {exc.strerror or exc}", p) from exc
    return read


# what Python's zipfile decompresses; Deflate64 (9, Windows Explorer's for large files) and AES (99) it cannot
_READABLE_COMPRESSION = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


def _member_name(info: zipfile.ZipInfo) -> str:
    """The member's name as its writer meant it: Linux's `zip` (Info-ZIP) writes UTF-8 names without
    the flag that says so, which zipfile then reads as cp437 ("Fran├ºais" for "Français")."""
    if info.flag_bits & 0x800:
        return info.filename
    try:
        return info.filename.encode("cp437").decode("utf-8")
    except UnicodeError:  # not UTF-8 after all: an old DOS or Windows archive, in cp437 indeed
        return info.filename


def _member_modified(info: zipfile.ZipInfo) -> str | None:
    try:
        return datetime(*info.date_time, tzinfo=UTC).isoformat()
    except ValueError:  # a zeroed DOS date (1980-00-00), as some writers leave it
        return None


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, archive: Path) -> bytes:
    if info.flag_bits & 0x1:
        raise NamelangError(f"archive member {info.filename!r} is encrypted; give the archive without a "
                            "password", archive)
    if info.compress_type not in _READABLE_COMPRESSION:
        raise NamelangError(f"archive member {info.filename!r} uses compression method {info.compress_type} "
                            "(Deflate64 or AES?), which cannot be read; make the archive with plain Deflate",
                            archive)
    try:
        return zf.read(info)
    except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError) as exc:  # a bad CRC, garbled data
        raise DamagedFileError(f"archive member {info.filename!r} is damaged ({exc})", archive) from exc


def _check_member(archive: Path, info: zipfile.ZipInfo, max_member_bytes: int) -> None:
    member = PurePosixPath(info.filename)
    if member.is_absolute() or ".." in member.parts or "\\" in info.filename or ":" in info.filename:
        raise NamelangError(f"unsafe path in archive: {info.filename!r} (path traversal refused)", archive)
    if stat.S_ISLNK(info.external_attr >> 16):
        raise NamelangError(f"link in archive refused: {info.filename!r}", archive)
    if info.file_size > max_member_bytes:
        raise NamelangError(f"archive member {info.filename!r} is {info.file_size} bytes, over the "
                            f"{max_member_bytes}-byte limit", archive)


def read_archive(archive: Path, max_member_bytes: int) -> list[SourceFile]:
    """Read `<Language>.txt` members straight from the zip (nothing is extracted to disk)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                info.filename = _member_name(info)
                _check_member(archive, info, max_member_bytes)
            txt = [i for i in infos if not i.is_dir() and _is_language_file(i.filename)
                   and not i.filename.startswith("__MACOSX/")]
            folders = sorted({str(PurePosixPath(i.filename).parent) for i in txt})
            if ARCHIVE_NAMES_FOLDER in folders:
                folder = ARCHIVE_NAMES_FOLDER
                # the tutorial's layout wins; the rest is not dropped without a word, but the tutorial's
                # own other file is no one's names (said, it warned on every ingest of the default source)
                others = sorted({str(PurePosixPath(i.filename).parent) for i in txt
                                 if i.filename not in TUTORIAL_ARCHIVE_OTHERS} - {folder})
                if others:
                    warnings.warn(f"{archive}: only {ARCHIVE_NAMES_FOLDER}/ is read; the .txt files in "
                                  f"{others} are not", NamelangWarning, stacklevel=2)
            elif len(folders) == 1:
                folder = folders[0]
            elif not folders:
                raise NamelangError("archive holds no <Language>.txt files", archive)
            else:
                raise NamelangError(f"archive holds .txt files in several folders {folders}; "
                                    f"expected one, or {ARCHIVE_NAMES_FOLDER}/", archive)
            chosen = sorted((i for i in txt if str(PurePosixPath(i.filename).parent) == folder),
                            key=lambda i: i.filename)
            return [
                SourceFile(language_of(i.filename), f"{archive.resolve()}!{i.filename}",
                           _read_member(zf, i, archive), _member_modified(i))
                for i in chosen
            ]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        raise NamelangError(f"not a readable zip archive: {exc}", archive) from exc


def read_source_files(path: Path, config: DataConfig) -> list[SourceFile]:
    if path.is_dir():
        return read_folder(path)
    if zipfile.is_zipfile(path) or path.suffix.lower() == ".zip":
        return read_archive(path, config.max_member_bytes)
    raise NamelangError("source is neither a folder of <Language>.txt files nor a .zip archive", path)


def check_utf8(file: SourceFile) -> None:
    """Raise a NamelangError naming the file and line unless its bytes are valid UTF-8."""
    data = file.data
    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int64))
    try:  # Arrow's validator (SIMD) first; Python's decoder only to locate a bad byte
        whole = pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(data)])
        whole.cast(pa.large_string())
        return
    except pa.ArrowInvalid:
        pass
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # lines end at LF, CRLF or a lone CR (as `split_lines` reads them)
        line = data.count(b"\n", 0, exc.start) + data.count(b"\r", 0, exc.start) - data.count(b"\r\n", 0, exc.start) + 1
        raise NamelangError(f"not valid UTF-8 (byte 0x{data[exc.start]:02x}: {exc.reason})",
                            file.origin, line) from exc
    raise NamelangError("not valid UTF-8", file.origin)


def split_lines(file: SourceFile) -> tuple[np.ndarray, np.ndarray, bool, bool]:
    """A file's lines without making a Python string per line: its UTF-8 bytes with BOM and line
    endings removed, and each line's length in bytes. Lines end as in Python's text mode (the
    notebook's `open().read()`): at LF, CRLF or a CR alone (old Mac files, whose CRs were read as one
    line of control characters).

    Vectorized with numpy so that a million lines take milliseconds; the tests hold the lines equal
    to Python's own decoding and splitting.
    """
    data = file.data
    check_utf8(file)
    buf = np.frombuffer(data, dtype=np.uint8)
    bom = data.startswith(b"\xef\xbb\xbf")
    first = 3 if bom else 0
    lf = buf == 0x0A
    lone_cr = (buf == 0x0D) & ~np.append(lf[1:], False)  # a CR not followed by LF ends a line itself
    newlines = np.flatnonzero(lf | lone_cr)
    starts = np.concatenate(([first], newlines + 1)).astype(np.int64)
    ends = np.concatenate((newlines, [len(buf)])).astype(np.int64)
    if starts[-1] >= len(buf):  # the final newline ends the last line; it does not start a new one
        starts, ends = starts[:-1], ends[:-1]
    # a CR right before a line feed belongs to the line ending (CRLF), not to the line
    cr = np.zeros(len(ends), dtype=bool)
    n_breaks = len(newlines)
    if n_breaks:
        at = ends[:n_breaks]
        cr[:n_breaks] = lf[at] & (at > starts[:n_breaks]) & (buf[np.maximum(at - 1, 0)] == 0x0D)
    lengths = ends - starts - cr
    keep = np.ones(len(buf), dtype=bool)
    keep[:first] = False
    keep[newlines] = False
    keep[ends[cr] - 1] = False
    return buf[keep], lengths, bom, bool(cr.any())


def lines_array(chunks: list[np.ndarray], lengths: np.ndarray) -> pa.Array:
    """One Arrow string array over the concatenated line bytes (no copy per line)."""
    data = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint8)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if len(data) >= 2**31:
        raise NamelangError(f"{len(data)} bytes of names in one source; the limit is 2 GiB "
                            "(split it into several sources)")
    return pa.StringArray.from_buffers(len(lengths), pa.py_buffer(offsets.astype(np.int32)),
                                       pa.py_buffer(data))


def git_commit() -> str | None:
    """The commit of the code that ran, when it runs from a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def fingerprint(entries: list[tuple[str, str]]) -> str:
    """One hash of a source's (file name, SHA-256) pairs: a folder's `.txt` files as listed, or the
    archive itself. Taken before reading (the cache key) and from the bytes read, in one way."""
    h = hashlib.sha256()
    for name, digest in entries:
        h.update(name.encode() + b"\0" + digest.encode())
    return h.hexdigest()


def source_fingerprint(path: Path) -> str:
    """The fingerprint of a local source as it is now on disk."""
    if not path.exists():
        raise NamelangError("source does not exist", path)
    files = language_files(path) if path.is_dir() else [path]
    entries = []
    for file in files:
        try:
            entries.append((file.name, sha256_file(file)))
        except OSError as exc:
            raise NamelangError(f"cannot read this file: {exc.strerror or exc}", file) from exc
    return fingerprint(entries)


def ingest(config: DataConfig, fetched: Path | None = None) -> IngestResult:
    """Resolve the source, read every `<Language>.txt`, and return raw lines with provenance.

    `fetched`: the source as `resolve_source` already fetched it (a cached download); the
    configured source, a URL maybe, stays the recorded origin.
    """
    path = fetched if fetched is not None else resolve_source(config)
    try:
        return _ingest_local(path, config)
    except NamelangError as exc:
        if not is_url(config.source):
            raise
        # the file named is the local copy; say where its bytes came from
        raise NamelangError(f"{exc.problem} (downloaded from {config.source})", exc.file, exc.line) from exc


def _ingest_local(path: Path, config: DataConfig) -> IngestResult:
    files = read_source_files(path, config)
    chunks: list[np.ndarray] = []
    counts: list[int] = []
    lengths: list[np.ndarray] = []
    provenance: list[FileProvenance] = []
    seen: dict[str, str] = {}
    for file in files:
        if not file.language.strip():
            raise NamelangError("file name gives no language (expected <Language>.txt)", file.origin)
        key = file.language.casefold()  # English.txt and English.TXT; English.txt and english.txt
        if key in seen:
            # two names that print the same: the accents composed in one, decomposed in the other (a Mac's)
            alike = unicodedata.normalize("NFC", seen[key]) == unicodedata.normalize("NFC", file.origin)
            how = "(the same name, its accents composed in one and decomposed in the other)" if alike else \
                "(in some case)"
            raise NamelangError(f"two files give the language {file.language!r} {how}: this one and {seen[key]}",
                                file.origin)
        seen[key] = file.origin
        data, line_lengths, bom, crlf = split_lines(file)
        if not len(line_lengths):
            warnings.warn(f"{file.origin}: empty file: no {file.language} names from it", NamelangWarning,
                          stacklevel=2)
        chunks.append(data)
        lengths.append(line_lengths)
        counts.append(len(line_lengths))
        provenance.append(FileProvenance(file.language, file.origin, hashlib.sha256(file.data).hexdigest(),
                                         len(file.data), len(line_lengths), file.modified_utc, bom, crlf))
    n_lines = sum(counts)
    if not n_lines:
        raise NamelangError("source holds no names (every file is empty)", path)
    counts_np = np.asarray(counts, dtype=np.int64)
    file_index = np.repeat(np.arange(len(files), dtype=np.int32), counts_np)
    starts = np.repeat(np.cumsum(counts_np) - counts_np, counts_np)
    line_number = (np.arange(n_lines, dtype=np.int64) - starts + 1).astype(np.int32)
    table = pa.table({
        "raw": lines_array(chunks, np.concatenate(lengths)),
        "language": pa.array([f.language for f in files], type=pa.string()).take(file_index),
        "source_file": pa.array([f.origin for f in files], type=pa.string()).take(file_index),
        "line_number": line_number,
    })
    # the archive's own hash (what --sha256 pins), taken after its members were read; a folder's
    # files each have theirs
    archive_sha256 = sha256_file(path) if path.is_file() else None
    run = {
        "source_uri": recordable_url(config.source) if is_url(config.source) else str(path.resolve()),
        "source_path": str(path.resolve()),
        "source_sha256": archive_sha256,
        "loaded_at_utc": datetime.now(UTC).isoformat(),
        "package_version": __version__,
        "git_commit": git_commit(),
    }
    # the fingerprint of the bytes read, as `source_fingerprint` takes it from disk before reading
    read = ([(path.name, archive_sha256)] if archive_sha256
            else [(f.listed_as, p.sha256) for f, p in zip(files, provenance, strict=True)])
    return IngestResult(table, provenance, run, fingerprint(read))
