"""Stage outputs kept as files in the cache folder, handed between steps as small references.

Orchestrators persist task results to reuse them; a million-row table pickled into a result
record costs about as much to read back as to recompute. Here each output is written once in
Arrow IPC (memory-mapped on read, near-free) or a tensors file, named by its content hash, and
the reference (`Stored`) is what gets persisted: a cached rerun reads a few hundred bytes, and
checks the files' SHA-256 (a few milliseconds for the shared data's 3.5 MB).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from pipeline import features, normalize
from pipeline.atomic import atomic_path
from pipeline.errors import NamelangError
from pipeline.features import TensorData
from pipeline.ingest import FileProvenance, IngestResult
from pipeline.normalize import NamesTable


@dataclass(frozen=True)
class Stored:
    """Where a stage output lives, its content hash, and the small metadata that travels with it.

    The metadata is kept as JSON text: an orchestrator walks every nested dict and list of a task's
    parameters looking for futures, and provenance plus quality reports are thousands of items.
    `digests` are the files' SHA-256 as written (None in a reference cached before they were kept).
    """

    paths: dict[str, str]
    sha256: str
    meta_json: str = "{}"
    digests: dict[str, str] | None = None

    @property
    def meta(self) -> dict:
        return json.loads(self.meta_json)

    def exists(self) -> bool:
        """Whether every file is there and holds the bytes written: one deleted, truncated or changed
        anywhere (neither an Arrow file nor torch's reader checks its data) makes the step run again."""
        if self.digests is None or self.digests.keys() != self.paths.keys():
            return False
        return all(self.digests[key] is not None and _digest(Path(p)) == self.digests[key]
                   for key, p in self.paths.items())


def _stored(paths: dict[str, str], sha256: str, meta_json: str = "{}") -> Stored:
    return Stored(paths, sha256, meta_json, {key: _digest(Path(p)) for key, p in paths.items()})


def _digest(path: Path) -> str | None:
    """The file's SHA-256 (about 3 ms a megabyte here; the shared data's cache files are 3.5 MB), None if unreadable."""
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None


def _holds_table(path: Path, table: pa.Table) -> bool:
    """Whether a content-addressed file already there holds these rows, whole: it is kept then. Read
    in full, as the reference to it will be trusted; files are named by content, so this is rare."""
    try:
        return _read_arrow(str(path)).equals(table, check_metadata=False)
    except (OSError, pa.ArrowInvalid):
        return False


def _write_arrow(table: pa.Table, path: Path) -> str:
    if not _holds_table(path, table):
        with atomic_path(path) as tmp, pa.OSFile(str(tmp), "wb") as sink, \
                pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    return str(path)


def _read_arrow(path: str) -> pa.Table:
    with pa.memory_map(path) as source:
        return pa.ipc.open_file(source).read_all()


def store_ingest(raw: IngestResult, cache_dir: Path, key: str) -> Stored:
    path = _write_arrow(raw.table, Path(cache_dir) / f"raw-{key}.arrow")
    return _stored({"raw": path}, key, json.dumps({"files": [asdict(f) for f in raw.files], "run": raw.run}))


def load_ingest(ref: Stored) -> IngestResult:
    meta = ref.meta
    return IngestResult(_read_arrow(ref.paths["raw"]), [FileProvenance(**f) for f in meta["files"]], meta["run"])


def store_table(table: NamesTable, cache_dir: Path) -> Stored:
    folder = Path(cache_dir)
    # each file is named by its own content: the same names may come with other rejected rows
    rejected_sha256 = normalize.table_sha256(table.rejected)
    paths = {"names": _write_arrow(table.names, folder / f"names-{table.sha256}.arrow"),
             "rejected": _write_arrow(table.rejected, folder / f"rejected-{rejected_sha256}.arrow")}
    return _stored(paths, table.sha256, json.dumps({"provenance": table.provenance, "quality": table.quality}))


def load_table(ref: Stored) -> NamesTable:
    meta = ref.meta
    names = _read_arrow(ref.paths["names"]).replace_schema_metadata(
        {normalize.PROVENANCE_KEY: json.dumps(meta["provenance"])})  # the file may hold an earlier run's
    return NamesTable(names, _read_arrow(ref.paths["rejected"]), meta["provenance"], meta["quality"])


def store_tensors(data: TensorData, cache_dir: Path) -> Stored:
    path = Path(cache_dir) / f"tensors-{data.sha256}.pt"
    if not _holds_tensors(path, data):
        features.save_tensors(data, path)
    return _stored({"tensors": str(path)}, data.sha256)


def _holds_tensors(path: Path, data: TensorData) -> bool:
    """As `_holds_table`, for a tensors file."""
    if not path.is_file():
        return False
    try:
        held = features.load_tensors(path)
    except NamelangError:
        return False
    return held.sha256 == data.sha256 and held.names == data.names


def load_tensors(ref: Stored) -> TensorData:
    return features.load_tensors(ref.paths["tensors"])
