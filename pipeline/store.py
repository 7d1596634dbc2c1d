"""Stage outputs kept as files in the cache folder, handed between steps as small references.

Orchestrators persist task results to reuse them; a million-row table pickled into a result
record costs about as much to read back as to recompute. Here each output is written once in
Arrow IPC (memory-mapped on read, near-free) or a tensors file, named by its content hash, and
the reference (`Stored`) is what gets persisted: a cached rerun reads a few hundred bytes.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from pipeline import features, normalize
from pipeline.atomic import atomic_path
from pipeline.features import TensorData
from pipeline.ingest import FileProvenance, IngestResult
from pipeline.normalize import NamesTable


@dataclass(frozen=True)
class Stored:
    """Where a stage output lives, its content hash, and the small metadata that travels with it.

    The metadata is kept as JSON text: an orchestrator walks every nested dict and list of a task's
    parameters looking for futures, and provenance plus quality reports are thousands of items.
    """

    paths: dict[str, str]
    sha256: str
    meta_json: str = "{}"

    @property
    def meta(self) -> dict:
        return json.loads(self.meta_json)

    def exists(self) -> bool:
        """Whether every file is there and whole: a deleted or damaged one makes the step run again."""
        return all(_intact(Path(p)) for p in self.paths.values())


def _intact(path: Path) -> bool:
    """The file exists and ends as its format does: an Arrow file's footer, a tensors file's zip
    directory (torch.save's format). Both sit at the end, so a truncated file fails, which would fail
    every cached rerun otherwise; neither check reads the data, which every cached run would pay for."""
    try:
        if path.suffix == ".arrow":
            with pa.memory_map(str(path)) as source:
                pa.ipc.open_file(source)
        else:
            zipfile.ZipFile(path).close()
    except (OSError, pa.ArrowInvalid, zipfile.BadZipFile):
        return False
    return True


def _write_arrow(table: pa.Table, path: Path) -> str:
    if not _intact(path):  # content-addressed: a whole existing file already holds these rows
        with atomic_path(path) as tmp, pa.OSFile(str(tmp), "wb") as sink, \
                pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    return str(path)


def _read_arrow(path: str) -> pa.Table:
    with pa.memory_map(path) as source:
        return pa.ipc.open_file(source).read_all()


def store_ingest(raw: IngestResult, cache_dir: Path, key: str) -> Stored:
    path = _write_arrow(raw.table, Path(cache_dir) / f"raw-{key}.arrow")
    return Stored({"raw": path}, key, json.dumps({"files": [asdict(f) for f in raw.files], "run": raw.run}))


def load_ingest(ref: Stored) -> IngestResult:
    meta = ref.meta
    return IngestResult(_read_arrow(ref.paths["raw"]), [FileProvenance(**f) for f in meta["files"]], meta["run"])


def store_table(table: NamesTable, cache_dir: Path) -> Stored:
    folder = Path(cache_dir)
    # each file is named by its own content: the same names may come with other rejected rows
    rejected_sha256 = normalize.table_sha256(table.rejected)
    paths = {"names": _write_arrow(table.names, folder / f"names-{table.sha256}.arrow"),
             "rejected": _write_arrow(table.rejected, folder / f"rejected-{rejected_sha256}.arrow")}
    return Stored(paths, table.sha256, json.dumps({"provenance": table.provenance, "quality": table.quality}))


def load_table(ref: Stored) -> NamesTable:
    meta = ref.meta
    names = _read_arrow(ref.paths["names"]).replace_schema_metadata(
        {normalize.PROVENANCE_KEY: json.dumps(meta["provenance"])})  # the file may hold an earlier run's
    return NamesTable(names, _read_arrow(ref.paths["rejected"]), meta["provenance"], meta["quality"])


def store_tensors(data: TensorData, cache_dir: Path) -> Stored:
    path = Path(cache_dir) / f"tensors-{data.sha256}.pt"
    if not _intact(path):
        features.save_tensors(data, path)
    return Stored({"tensors": str(path)}, data.sha256)


def load_tensors(ref: Stored) -> TensorData:
    return features.load_tensors(ref.paths["tensors"])
