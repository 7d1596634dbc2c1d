"""Batch prediction over a file of names, in chunks, so memory stays bounded for any file size."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.atomic import atomic_path, refuse_folder
from pipeline.config import BATCH_CHUNK_NAMES, NAME_COLUMN
from pipeline.errors import NamelangError, first_line

if TYPE_CHECKING:  # annotations only: importing them would slow every command's start
    from mlflow.pyfunc import PyFuncModel


def iter_names(path: Path, column: str = NAME_COLUMN, chunk_size: int = BATCH_CHUNK_NAMES) -> Iterator[list]:
    """Names from a Parquet, CSV or plain-text file (one name per line), `chunk_size` at a time."""
    if chunk_size < 1:  # else a CSV fails in range()'s words or reads as "no names", Parquet in pyarrow's
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    if not path.exists():
        raise NamelangError("input file not found", path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            pf = pq.ParquetFile(path)
            _one_column_named(column, pf.schema_arrow.names, path)
            first_row = 0
            for batch in pf.iter_batches(batch_size=chunk_size, columns=[column]):
                yield _parquet_names(batch.column(0), path, column, first_row)
                first_row += batch.num_rows
        elif suffix == ".csv":
            header = _csv_header(path)
            _one_column_named(column, header, path)
            # only the names are read: other columns' types, guessed from the first block, could
            # refuse a later row (an id column turning alphanumeric) that has nothing to do with them
            # in a one-column CSV a blank line is an empty name, a row of the output as in a text
            # file (rows keep their input's numbering); with more columns it is no record: skipped
            one_column = len(header) == 1
            reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(
                                        block_size=1 << 22, skip_rows=_blank_lines_first(path) if one_column else 0),
                                    # a quoted line break in another column (an address) is its
                                    # value's: blocks are cut where no quote is open, at any size
                                    parse_options=pacsv.ParseOptions(ignore_empty_lines=not one_column,
                                                                     newlines_in_values=True),
                                    convert_options=pacsv.ConvertOptions(column_types={column: pa.string()},
                                                                         include_columns=[column]))
            for batch in reader:
                names = batch.column(batch.schema.get_field_index(column))
                if pc.any(pc.match_substring_regex(names, "[\r\n]")).as_py():
                    # a name is one line: a quoted field running over lines is an unclosed quote, which
                    # would swallow the rows after it into one name
                    line, problem = _first_bad_csv_line(path, column) or (None, "a name runs over several lines")
                    raise NamelangError(problem, path, line)
                names = names.to_pylist()
                for i in range(0, len(names), chunk_size):
                    yield names[i:i + chunk_size]
        else:
            if column != NAME_COLUMN:  # a text file has no columns to choose from
                raise NamelangError(f"a text file holds one name per line, no columns: column {column!r} applies "
                                    "to Parquet and CSV only", path)
            yield from text_lines(path, chunk_size)
    except (pa.ArrowInvalid, pa.ArrowKeyError, OSError) as exc:
        located = _first_bad_csv_line(path, column) if suffix == ".csv" and isinstance(exc, pa.ArrowInvalid) else None
        if located is not None:
            raise NamelangError(located[1], path, located[0]) from exc
        raise NamelangError(f"cannot read names: {first_line(exc)}", path) from exc


def _parquet_names(names: pa.Array, path: Path, column: str, first_row: int) -> list:
    """A Parquet chunk's names as text: a binary column is decoded as UTF-8, as a string column is
    (bytes would reach the model as "name must be a string", "b'Smith'" in the output); a name that
    is not UTF-8 stops the run, named by its row (the output's numbering, from 0). Other types pass
    as they are: each such name gets its own error from the model."""
    if pa.types.is_dictionary(names.type):  # pandas' category columns: their values, as names
        names = names.dictionary_decode()
    kind = names.type
    textual = pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)
    binary = (pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind)
              or pa.types.is_fixed_size_binary(kind))
    if not (textual or binary):
        return names.to_pylist()
    try:  # Arrow checks UTF-8 when it casts bytes to text; a string column is trusted until read
        return (names.cast(pa.large_string()) if binary else names).to_pylist()
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        row, byte, reason = _first_bad_utf8(names.cast(pa.large_binary()).to_pylist())
        problem = f"column {column!r}, row {first_row + row}: not valid UTF-8 (byte 0x{byte:02x}: {reason})"
        raise NamelangError(problem, path) from exc


def _first_bad_utf8(values: list[bytes | None]) -> tuple[int, int, str]:
    """(index, byte, reason) of the first value that is not UTF-8; called only once one is known."""
    for i, raw in enumerate(values):
        try:
            (raw or b"").decode("utf-8")
        except UnicodeDecodeError as exc:
            return i, raw[exc.start], exc.reason
    raise AssertionError("no value that is not UTF-8")


def _csv_header(path: Path) -> list[str]:
    """The header's column names, read from a small first block, larger ones only for a header that
    does not fit (the reader after it infers nothing from them)."""
    block = 1 << 16
    while True:
        try:
            return pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=block)).schema.names
        except pa.ArrowInvalid:
            if block >= 1 << 26 or block >= path.stat().st_size:
                raise
            block *= 8
        except UnicodeDecodeError as exc:  # Arrow keeps the header's bytes; Python's decoding of a name fails
            with open(path, "rb") as fh:
                utf16 = fh.read(2) in (b"\xff\xfe", b"\xfe\xff")  # Excel's "Unicode text", say
            byte = exc.object[exc.start]
            raise NamelangError(f"header not valid UTF-8 (byte 0x{byte:02x}: {exc.reason}"
                                f"{'; the file is UTF-16' if utf16 else ''}); save it as UTF-8",
                                path, _blank_lines_first(path) + 1) from exc


def _blank_lines_first(path: Path) -> int:
    """Blank lines before a CSV's header: skipped as no record, since the header is not a name. Lines
    end as Arrow's do, at a lone \\r too (an old Mac's files): counted by \\n alone, a blank line
    there was taken for the header."""
    with open(path, encoding="latin-1", newline=None) as fh:  # any bytes; universal newlines
        for count, line in enumerate(fh):
            if line.removeprefix("\xef\xbb\xbf").rstrip("\n"):
                return count
    return 0


def _first_bad_csv_line(path: Path, column: str) -> tuple[int, str] | None:
    """Where a CSV goes wrong, as (line, problem), for the failures Arrow's streaming reader does not
    place: a bad byte, a row with too many fields, a name running over lines (an unclosed quote,
    which swallows the rows after it). Runs only after a failure, so it may read the file again."""
    try:
        for _ in text_lines(path):  # the text reader names the line of a bad byte
            pass
    except NamelangError as exc:
        return exc.line, exc.problem
    unclosed = "a quoted field runs over several lines from here (an unclosed quote?)"
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        previous = 0
        try:
            header = next(reader, [])
            at = header.index(column) if column in header else None
            previous = reader.line_num
            for row in reader:
                if at is not None and len(row) > at and reader.line_num > previous + 1 and \
                        ("\n" in row[at] or "\r" in row[at]):
                    return previous + 1, unclosed
                if row and len(row) != len(header):  # blank lines are skipped, by Arrow too
                    return reader.line_num, f"expected {len(header)} fields as in the header, found {len(row)}"
                previous = reader.line_num
        except csv.Error as exc:  # a field over the csv module's size limit: a quote left open, most likely
            return previous + 1, f"unreadable CSV record from here ({exc}; an unclosed quote?)"
    return None


def _one_column_named(column: str, columns: list[str], path: Path) -> None:
    """Exactly one: with two, which one holds the names would be a guess (the first, silently)."""
    if column not in columns:
        raise NamelangError(f"no column {column!r} (columns: {columns})", path)
    if columns.count(column) > 1:
        raise NamelangError(f"{columns.count(column)} columns are named {column!r}: which holds the names is "
                            "ambiguous; rename one, or choose another column (--column, or the flow's `column` "
                            "parameter)", path)


def text_lines(path: Path, chunk_size: int = BATCH_CHUNK_NAMES) -> Iterator[list[str]]:
    """Lines of a UTF-8 text file (BOM and line endings removed), decoded one by one so that a bad
    byte is reported on its own line (a text-mode file decodes blocks ahead of the line read)."""
    with open(path, "rb") as fh:
        yield from stream_lines(fh, path, chunk_size)


def stream_lines(stream: BinaryIO, source: str | Path, chunk_size: int = BATCH_CHUNK_NAMES) -> Iterator[list[str]]:
    """`text_lines` of an open binary stream (standard input too), errors naming it `source`.

    Lines end at LF, CRLF or a lone CR (an old Mac's files), as ingest reads them: a names file that
    trains predicts too ("Nakamura\\rSmith" was one name, refused for its control character). Read as
    text with undecodable bytes kept aside (surrogateescape), so that a file of lone CRs streams in
    blocks like any other, and a bad byte is still reported on its own line."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline=None)
    chunk: list[str] = []
    try:
        for line_number, line in enumerate(text, 1):
            line = line.removesuffix("\n")  # every line ending reads as "\n"
            if not line.isascii():
                _check_utf8(line, source, line_number)
            chunk.append(line)
            if len(chunk) >= chunk_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
    finally:
        text.detach()  # the caller's stream stays open


def _check_utf8(line: str, source: str | Path, line_number: int) -> None:
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # a byte that was not UTF-8, kept as a lone surrogate
        raw = line.encode("utf-8", "surrogateescape")
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problem = f"not valid UTF-8 (byte 0x{raw[exc.start]:02x}: {exc.reason})"  # as ingest says it
            raise NamelangError(problem, source, line_number) from exc


def _output_schema(columns: list[str]) -> pa.Schema:
    """Fixed column types: a chunk whose errors (or languages) are all missing must not make the
    file's column type null, which no later chunk could be written into."""
    def kind(col: str) -> pa.DataType:
        return pa.int64() if col == "row" else pa.float64() if col.startswith("probability") else pa.string()

    return pa.schema([(col, kind(col)) for col in columns])


def check_paths(input_path: str | Path, output_path: str | Path | None = None) -> Path:
    """The output path for `input_path` (by default beside it, after its whole name: names.csv and
    names.txt make two outputs, not one), once both are known to be usable: an input not there, or an
    output `check_output_path` refuses, is said before any work (the CLI: before Prefect starts)."""
    source = Path(input_path)
    if not source.exists():
        raise NamelangError("input file not found", source)
    if source.is_dir():  # read only after Prefect, the model and the output's checks: said first, as a missing one
        raise NamelangError("the input is a folder: give a file of names", source)
    return check_output_path(source, output_path or source.with_name(f"{source.name}.predictions.parquet"))


def check_output_path(input_path: str | Path, output_path: str | Path) -> Path:
    """Refuse, before any work, an output that would replace the input, or that is not named
    .parquet: the output is Parquet whatever its name, and "out.csv" would choke a CSV reader."""
    output_path = Path(output_path)
    # samefile: the same file by any path (relative, a symlink, a hard link)
    if output_path.exists() and Path(input_path).exists() and output_path.samefile(input_path):
        raise NamelangError("the output would replace the input file; write it elsewhere", output_path)
    refuse_folder(output_path)  # before the name: a folder's problem is not its name
    if output_path.suffix.lower() != ".parquet":  # ".parquet" alone is a hidden file without a suffix
        raise NamelangError(f"the output is written as Parquet: give it a name ending in .parquet, not "
                            f"{output_path.name!r}", output_path)
    return output_path


def predict_file(model: PyFuncModel, input_path: str | Path, output_path: str | Path, model_version: str,
                 column: str = NAME_COLUMN, chunk_size: int = BATCH_CHUNK_NAMES,
                 on_chunk: Callable[[int, int], None] | None = None) -> dict:
    """Predict every name of `input_path` with a pyfunc `model`; write Parquet atomically.

    `on_chunk(rows, errors)`, if given, hears the running totals after each chunk: a large file
    takes minutes, and its output appears only at the end."""
    input_path, output_path = Path(input_path), check_output_path(input_path, output_path)
    rows = failed = 0
    writer = None
    with atomic_path(output_path) as tmp:
        try:
            for chunk in iter_names(input_path, column, chunk_size):
                frame = model.predict(pd.DataFrame({"name": pd.Series(chunk, dtype=object)}))
                frame.insert(0, "row", range(rows, rows + len(frame)))
                frame["model_version"] = model_version
                if writer is None:
                    writer = pq.ParquetWriter(tmp, _output_schema(list(frame.columns)), compression="zstd")
                writer.write_table(pa.Table.from_pandas(frame, schema=writer.schema, preserve_index=False))
                rows += len(frame)
                failed += int(frame["error"].notna().sum())
                if on_chunk is not None:
                    on_chunk(rows, failed)
            if writer is None:
                raise NamelangError("input holds no names", input_path)
        finally:
            if writer is not None:
                writer.close()
    return {"input": str(input_path), "output": str(output_path), "rows": rows, "errors": failed,
            "model_version": model_version}
