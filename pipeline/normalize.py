"""Normalize raw lines to the notebook's ASCII alphabet, validate them, and write the names table.

Vectorized with pyarrow compute (NFD, regex over whole columns in C++), not a Python loop per
name: that is what makes a million names a second possible.
"""

from __future__ import annotations

import hashlib
import json
import string
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.atomic import atomic_paths
from pipeline.config import ALLOWED_CHARACTERS, MAX_NAME_CHARS, OOV_CHARACTER
from pipeline.errors import NamelangError, NamelangWarning, first_line

if TYPE_CHECKING:  # a logged model carries this module (to_ascii), not ingest's download client (httpx)
    from pipeline.ingest import IngestResult

PROVENANCE_KEY = b"namelang.provenance"
NAMES_FILE, REJECTED_FILE = "names.parquet", "rejected.parquet"
QUALITY_JSON, QUALITY_MD = "quality.json", "quality.md"
MAX_EXAMPLES = 20
REJECTION_REASONS = ("blank", "control_characters", "too_long", "empty_after_normalization",
                     "no_latin_letters")


# typographic apostrophes (O’Neil as a phone or a word processor types it, the ʻokina of Hawaiian and
# Uzbek names, the full-width one of East Asian keyboards) are the alphabet's "'"
APOSTROPHES = "\u2018\u2019\u201b\u02bb\u02bc\uff07"


def normalization_spec(max_name_chars: int) -> dict:
    return {
        "trim": "leading and trailing Unicode whitespace, before folding and again after it",
        "unicode_form": "NFD",
        "drop_categories": ["Mn", "Cf"],
        "apostrophes": {"from": [f"U+{ord(c):04X}" for c in APOSTROPHES], "to": "'"},
        "alphabet": ALLOWED_CHARACTERS,
        "out_of_alphabet": OOV_CHARACTER,
        "max_name_chars": max_name_chars,
        "rejections": list(REJECTION_REASONS),
    }


_ALLOWED_BYTES = np.frombuffer(ALLOWED_CHARACTERS.encode("ascii"), dtype=np.uint8)
# ASCII bytes through the notebook's alphabet: kept when in it, OOV_CHARACTER otherwise
_ASCII_MAP = np.full(256, ord(OOV_CHARACTER), dtype=np.uint8)
_ASCII_MAP[_ALLOWED_BYTES] = _ALLOWED_BYTES
_LETTER = np.zeros(256, dtype=bool)
_LETTER[np.frombuffer(string.ascii_letters.encode("ascii"), dtype=np.uint8)] = True
_C0_CONTROL = np.zeros(256, dtype=bool)  # U+0000-U+001F and U+007F; C1 (U+0080-U+009F) is C2 80-9F
_C0_CONTROL[:0x20] = True
_C0_CONTROL[0x7F] = True


def _offsets_and_data(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A string array's value offsets (its slice only) and its whole data buffer, as numpy views."""
    offsets_buf, data_buf = arr.buffers()[1:3]
    offsets = np.frombuffer(offsets_buf, dtype=np.int32)[arr.offset:arr.offset + len(arr) + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    return offsets, data


def _chunkwise(values: pa.Array | pa.ChunkedArray, fn) -> pa.Array | pa.ChunkedArray:
    if isinstance(values, pa.ChunkedArray):
        return pa.chunked_array([fn(chunk) for chunk in values.chunks], type=pa.string())
    return fn(values)


def _to_ascii_unicode(names: pa.Array) -> pa.Array:
    """The general path: NFD, drop combining marks (Mn) and invisible format characters (Cf: a BOM
    inside a file, zero-width spaces and joiners, soft hyphens, direction marks, which a copy from a web
    page or a join of files leaves in a name: `Bro\u200bwn` is Brown, not `Bro_wn`), typographic
    apostrophes -> "'", anything else outside the alphabet -> '_'."""
    decomposed = pc.utf8_normalize(names, form="NFD")
    unmarked = pc.replace_substring_regex(decomposed, pattern=r"[\p{Mn}\p{Cf}]", replacement="")
    unmarked = pc.replace_substring_regex(unmarked, pattern=f"[{APOSTROPHES}]", replacement="'")
    allowed = "".join("\\" + c if c in r"\]^-[" else c for c in ALLOWED_CHARACTERS)
    return pc.replace_substring_regex(unmarked, pattern=f"[^{allowed}]", replacement=OOV_CHARACTER)


def _to_ascii_array(names: pa.Array) -> pa.Array:
    """ASCII rows (nearly all of them) map byte by byte through a table; the rest take the general path.

    For ASCII text NFD changes nothing and there are no combining marks, so the byte map gives the
    same result as `_to_ascii_unicode`, at memory speed.
    """
    if names.type != pa.string():
        names = names.cast(pa.string())
    if len(names) == 0:
        return names
    offsets, data = _offsets_and_data(names)
    mapped = np.array(data, copy=True)
    lo, hi = int(offsets[0]), int(offsets[-1])
    mapped[lo:hi] = _ASCII_MAP[data[lo:hi]]
    fast = pa.StringArray.from_buffers(len(names), names.buffers()[1], pa.py_buffer(mapped),
                                       names.buffers()[0], names.null_count, names.offset)
    non_ascii = pc.invert(pc.fill_null(pc.string_is_ascii(names), True))
    if not pc.any(non_ascii).as_py():
        return fast
    return pc.replace_with_mask(fast, non_ascii, _to_ascii_unicode(names.filter(non_ascii)))


def to_ascii(names: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The notebook's unicodeToAscii, except that unknown characters become '_' instead of vanishing
    and typographic apostrophes (`APOSTROPHES`) become the alphabet's "'" (the notebook drops them:
    O’Neil -> ONeil)."""
    return _chunkwise(names, _to_ascii_array)


def folded_names(names: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Names, trimmed as read, folded by `to_ascii` and trimmed again: an accent or an invisible character
    dropped at a name's end would otherwise leave the space before it ("Anna \u200b" is "Anna", not a
    second name "Anna ")."""
    return pc.utf8_trim_whitespace(to_ascii(names))


def _rows_with(arr: pa.Array, byte_set: np.ndarray) -> np.ndarray:
    """Per row of a string array: does any of its bytes fall in `byte_set` (a 256-entry bool table)?"""
    offsets, data = _offsets_and_data(arr)
    lo = int(offsets[0])
    hits = byte_set[data[lo:int(offsets[-1])]]
    found = np.zeros(len(arr), dtype=bool)
    non_empty = offsets[1:] > offsets[:-1]
    if hits.size:
        # logical_or.reduceat over each row's bytes; empty rows are skipped (reduceat needs non-empty)
        starts = (offsets[:-1] - lo)[non_empty]
        found[non_empty] = np.logical_or.reduceat(hits, starts)
    return found


def _rows_with_control(arr: pa.Array) -> np.ndarray:
    """Rows holding a Unicode control character (category Cc: U+0000-U+001F, U+007F-U+009F)."""
    offsets, data = _offsets_and_data(arr)
    lo, hi = int(offsets[0]), int(offsets[-1])
    window = data[lo:hi]
    positions = np.flatnonzero(_C0_CONTROL[window])
    lead = np.flatnonzero(window[:-1] == 0xC2) if window.size > 1 else np.zeros(0, np.int64)
    c1 = lead[(window[lead + 1] >= 0x80) & (window[lead + 1] <= 0x9F)] if lead.size else lead
    positions = np.concatenate((positions, c1)) + lo
    found = np.zeros(len(arr), dtype=bool)
    found[np.searchsorted(offsets, positions, side="right") - 1] = True
    return found


def _as_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array (chunks combined; a dictionary's chunks share one dictionary)."""
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _as_strings(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    values = _as_array(values)
    return values.cast(pa.string()) if values.type != pa.string() else values


def rejection_codes(name: pa.Array | pa.ChunkedArray, name_ascii: pa.Array | pa.ChunkedArray,
                    max_chars: int) -> np.ndarray:
    """Per row: 0 when fine, else 1 + the index of its reason in REJECTION_REASONS (first match wins)."""
    name, name_ascii = _as_strings(name), _as_strings(name_ascii)
    if len(name) == 0:
        return np.zeros(0, dtype=np.int8)
    offsets, _ = _offsets_and_data(name)
    ascii_offsets, _ = _offsets_and_data(name_ascii)
    conditions = [
        offsets[1:] == offsets[:-1],                                              # blank
        _rows_with_control(name),                                                 # control_characters
        pc.greater(pc.utf8_length(name), max_chars).to_numpy(zero_copy_only=False),  # too_long
        ascii_offsets[1:] == ascii_offsets[:-1],                                  # empty_after_normalization
        ~_rows_with(name_ascii, _LETTER),                                         # no_latin_letters
    ]
    return np.select(conditions, np.arange(1, len(conditions) + 1, dtype=np.int8), 0).astype(np.int8)


def _reasons_from_codes(codes: np.ndarray) -> pa.Array:
    indices = pa.array(codes.astype(np.int32) - 1, mask=codes == 0)
    return pa.DictionaryArray.from_arrays(indices, pa.array(REJECTION_REASONS)).cast(pa.string())


@dataclass(frozen=True)
class NameLanguageIndex:
    """Which (name_ascii, language) pairs occur: the basis of n_languages and the quality counts."""

    names: pa.Array             # distinct name_ascii values
    languages: pa.Array         # distinct languages
    name_idx: np.ndarray        # per row, index into `names`
    lang_idx: np.ndarray        # per row, index into `languages`
    pair_name: np.ndarray       # distinct pairs, sorted by name then language
    pair_lang: np.ndarray

    @classmethod
    def build(cls, name_ascii: pa.Array | pa.ChunkedArray, language: pa.Array | pa.ChunkedArray):
        names, langs = (_as_array(pc.dictionary_encode(v)) for v in (name_ascii, language))
        name_idx = names.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        lang_idx = langs.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        n_langs = max(len(langs.dictionary), 1)
        codes = name_idx * n_langs + lang_idx
        space = len(names.dictionary) * n_langs
        if space <= 1 << 26:  # a bitmap over every possible pair: no sort needed
            seen = np.zeros(space, dtype=bool)
            seen[codes] = True
            pairs = np.flatnonzero(seen)
        else:
            pairs = np.unique(codes)
        return cls(names.dictionary, langs.dictionary, name_idx, lang_idx,
                   pairs // n_langs, pairs % n_langs)

    def languages_per_name(self) -> np.ndarray:
        return np.bincount(self.pair_name, minlength=len(self.names))

    def languages_per_row(self) -> np.ndarray:
        """For each row, how many distinct languages carry its name (the `n_languages` column)."""
        return self.languages_per_name()[self.name_idx].astype(np.int16)


class _HashingSink:
    """A write-only file that hashes what is written instead of keeping it."""

    closed = False

    def __init__(self) -> None:
        self.digest = hashlib.sha256()

    def write(self, data) -> int:
        self.digest.update(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def table_sha256(table: pa.Table) -> str:
    """Content hash of a table's columns and values (schema metadata excluded).

    The SHA-256 of the table's Arrow IPC stream, hashed as it is written (never held in memory).
    """
    sink = _HashingSink()
    plain = table.replace_schema_metadata(None).combine_chunks()
    with pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), plain.schema) as writer:
        writer.write_table(plain)
    return sink.digest.hexdigest()


@dataclass(frozen=True)
class NamesTable:
    """The normalized names, the rows refused (with reasons), provenance and the quality report."""

    names: pa.Table
    rejected: pa.Table
    provenance: dict
    quality: dict

    @property
    def sha256(self) -> str:
        return self.provenance["content_sha256"]


def normalize(result: IngestResult, max_name_chars: int = MAX_NAME_CHARS) -> NamesTable:
    """The names table: each line trimmed and folded to the notebook's ASCII alphabet, unusable lines set
    aside with their reason, the quality report, and provenance carried over from ingest."""
    from pipeline.ingest import IngestResult

    if not isinstance(result, IngestResult):
        raise TypeError(f"normalize takes what pipeline.ingest.ingest returns (an IngestResult), "
                        f"not {type(result).__name__}")
    raw = result.table
    name = _as_strings(pc.utf8_trim_whitespace(raw["raw"]))
    folded = folded_names(name)
    codes = rejection_codes(name, folded, max_name_chars)
    ok = codes == 0
    if len(ok) and not ok.any():
        raise NamelangError(f"no usable names: all {len(ok)} lines were rejected (this one: "
                            f"{REJECTION_REASONS[codes[0] - 1]})", raw["source_file"][0].as_py(),
                            raw["line_number"][0].as_py())
    keep = pa.table({
        "name": name, "name_ascii": folded, "language": raw["language"],
        "source_file": raw["source_file"], "line_number": raw["line_number"],
    })
    if not ok.all():
        keep = keep.filter(pa.array(ok))
    index = NameLanguageIndex.build(keep["name_ascii"], keep["language"])
    names = keep.append_column("n_languages", pa.array(index.languages_per_row()))
    bad = np.flatnonzero(~ok)
    rejected = pa.table({
        "name": raw["raw"].take(bad), "language": raw["language"].take(bad),
        "source_file": raw["source_file"].take(bad), "line_number": raw["line_number"].take(bad),
        "reason": _reasons_from_codes(codes[bad]),
    })
    digest = table_sha256(names)
    quality = quality_report(names, rejected, raw, digest, index=index,
                             empty_files=[f.path for f in result.files if not f.lines])
    for language in quality["languages_all_rejected"]:
        lines = next(p["lines"] for p in quality["per_language"] if p["language"] == language)
        warnings.warn(f"every line of {language} was rejected ({lines}; see rejected.parquet): no {language} "
                      "names in the table", NamelangWarning, stacklevel=2)
    provenance = {
        **result.provenance(),
        "normalization": normalization_spec(max_name_chars),
        "counts": {"lines": raw.num_rows, "rows": names.num_rows, "rejected": rejected.num_rows,
                   "languages": quality["languages"]},
        "content_sha256": digest,
    }
    return NamesTable(names.replace_schema_metadata({PROVENANCE_KEY: json.dumps(provenance)}), rejected,
                      provenance, quality)


def _value_counts(values: pa.Array | pa.ChunkedArray) -> dict:
    counts = pc.value_counts(values)
    return dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True))


def _language_sets(index: NameLanguageIndex, shared: np.ndarray) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """For the names flagged in `shared`, an id of their language set per name, and the sets (sorted)."""
    in_shared = shared[index.pair_name]
    pair_name, pair_lang = index.pair_name[in_shared], index.pair_lang[in_shared]
    if not len(pair_name):
        return np.zeros(0, dtype=np.int64), []
    starts = np.flatnonzero(np.r_[True, pair_name[1:] != pair_name[:-1]])
    languages = index.languages.to_pylist()
    if len(languages) <= 62:  # each set as a bit mask: grouping is one np.unique
        masks = np.bitwise_or.reduceat(np.left_shift(1, pair_lang).astype(np.int64), starts)
        unique, set_id = np.unique(masks, return_inverse=True)
        sets = [tuple(sorted(languages[b] for b in range(len(languages)) if int(m) >> b & 1)) for m in unique]
        return set_id, sets
    groups = [tuple(sorted(languages[i] for i in g)) for g in np.split(pair_lang, starts[1:])]
    sets = sorted(set(groups))
    lookup = {g: i for i, g in enumerate(sets)}
    return np.array([lookup[g] for g in groups], dtype=np.int64), sets


def quality_report(names: pa.Table, rejected: pa.Table, raw: pa.Table, digest: str,
                   index: NameLanguageIndex | None = None, empty_files: list[str] | None = None) -> dict:
    """Counts a user should see before training: duplicates, shared names, imbalance, rejections,
    and files that gave no line at all (a language that silently vanished otherwise)."""
    if index is None:
        index = NameLanguageIndex.build(names["name_ascii"], names["language"])
    languages = index.languages.to_pylist()
    rows_by_lang = np.bincount(index.lang_idx, minlength=len(languages))
    distinct_by_lang = np.bincount(index.pair_lang, minlength=len(languages))
    lines_by_lang = _value_counts(raw["language"])
    rej_by_lang = _value_counts(rejected["language"]) if rejected.num_rows else {}
    per_language = []
    for i in sorted(range(len(languages)), key=languages.__getitem__):
        lang, rows, distinct = languages[i], int(rows_by_lang[i]), int(distinct_by_lang[i])
        per_language.append({"language": lang, "lines": lines_by_lang.get(lang, 0), "rows": rows,
                             "distinct_names": distinct, "duplicate_lines": rows - distinct,
                             "rejected": rej_by_lang.get(lang, 0)})
    for lang in sorted(set(lines_by_lang) - set(languages)):
        per_language.append({"language": lang, "lines": lines_by_lang[lang], "rows": 0, "distinct_names": 0,
                             "duplicate_lines": 0, "rejected": rej_by_lang.get(lang, 0)})
    shared = index.languages_per_name() > 1
    shared_ids = np.flatnonzero(shared)
    set_id, sets = _language_sets(index, shared)
    set_sizes = np.bincount(set_id, minlength=len(sets))
    pair_counts = {" + ".join(sets[i]): int(set_sizes[i])
                   for i in sorted(range(len(sets)), key=lambda i: (-set_sizes[i], sets[i]))}
    examples = []
    if len(shared_ids):
        shared_names = index.names.take(shared_ids)
        first = pc.select_k_unstable(shared_names, k=min(MAX_EXAMPLES, len(shared_ids)),
                                     sort_keys=[("name_ascii", "ascending")]).to_pylist()
        examples = [{"name_ascii": value, "languages": list(sets[set_id[i]])}
                    for value, i in sorted((shared_names[i].as_py(), i) for i in first)]
    row_counts = [p["rows"] for p in per_language if p["rows"]]
    # kept, but with characters outside the alphabet (digits, hyphens, ß, Ł, ...): data-entry slips to look at
    unknown = names.filter(pc.match_substring(names["name_ascii"], OOV_CHARACTER))
    unknown_rows = unknown.select(["name", "name_ascii", "source_file", "line_number"]).slice(0, MAX_EXAMPLES)
    by_reason = _value_counts(rejected["reason"]) if rejected.num_rows else {}
    rejected_rows = rejected.slice(0, 1000).to_pylist()
    for row in rejected_rows:
        row["name"] = row["name"][:80] + ("…" if len(row["name"]) > 80 else "")
    return {
        "content_sha256": digest,
        "lines": raw.num_rows,
        "rows": names.num_rows,
        "distinct_names": len(index.names),
        "duplicate_lines": sum(p["duplicate_lines"] for p in per_language),
        "languages": len(row_counts),  # those with names in the table
        # every line rejected: the language is not in the table, and would vanish without a word
        "languages_all_rejected": [p["language"] for p in per_language if p["lines"] and not p["rows"]],
        "class_imbalance_ratio": round(max(row_counts) / min(row_counts), 2) if row_counts else None,
        "empty_files": list(empty_files or []),
        "per_language": per_language,
        "multi_language_names": {
            "count": len(shared_ids),
            "by_languages": pair_counts,
            "examples": examples,
        },
        "unknown_characters": {"count": unknown.num_rows, "examples": unknown_rows.to_pylist()},
        "rejected": {
            "count": rejected.num_rows,
            "by_reason": {r: by_reason[r] for r in REJECTION_REASONS if r in by_reason},
            "rows": rejected_rows,
            "rows_truncated": rejected.num_rows > len(rejected_rows),
        },
    }


def quality_markdown(quality: dict) -> str:
    lines = [
        "# Data-quality report", "",
        f"- table content SHA-256: `{quality['content_sha256']}`",
        f"- lines read: {quality['lines']}, rows kept: {quality['rows']}, "
        f"rejected: {quality['rejected']['count']}",
        f"- distinct names: {quality['distinct_names']}, duplicate lines: {quality['duplicate_lines']}",
        f"- languages: {quality['languages']}, class-imbalance ratio (largest / smallest): "
        f"{quality['class_imbalance_ratio']}",
    ]
    if quality.get("empty_files"):
        lines.append(f"- **empty files, no names from them**: {', '.join(quality['empty_files'])}")
    if quality.get("languages_all_rejected"):
        lines.append(f"- **every line rejected, no names from them**: {', '.join(quality['languages_all_rejected'])}")
    lines += [
        "", "## Per language", "",
        "| language | lines | rows | distinct | duplicate lines | rejected |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {p['language']} | {p['lines']} | {p['rows']} | {p['distinct_names']} | "
              f"{p['duplicate_lines']} | {p['rejected']} |" for p in quality["per_language"]]
    shared = quality["multi_language_names"]
    lines += ["", f"## Names carrying several languages: {shared['count']}", ""]
    lines += [f"- {langs}: {n}" for langs, n in list(shared["by_languages"].items())[:10]]
    if shared["examples"]:
        lines += ["", "Examples: " + ", ".join(f"{e['name_ascii']} ({'/'.join(e['languages'])})"
                                               for e in shared["examples"][:10])]
    unknown = quality.get("unknown_characters", {"count": 0, "examples": []})
    lines += ["", f"## Names kept with characters outside the alphabet (as `{OOV_CHARACTER}`): {unknown['count']}", ""]
    if unknown["examples"]:
        lines += ["| file | line | name | as the model sees it |", "|---|---:|---|---|"]
        lines += [f"| {r['source_file']} | {r['line_number']} | {_cell(r['name'])} | {_cell(r['name_ascii'])} |"
                  for r in unknown["examples"]]
    rejected = quality["rejected"]
    lines += ["", f"## Rejected rows: {rejected['count']}", ""]
    if rejected["rows"]:
        lines += ["| file | line | reason | name |", "|---|---:|---|---|"]
        lines += [f"| {r['source_file']} | {r['line_number']} | {r['reason']} | {_cell(r['name'])} |"
                  for r in rejected["rows"][:50]]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """A name as a Markdown table cell: quoted, cut at 40 characters, its `|` escaped."""
    return repr(text[:40]).replace("|", "\\|")


def output_paths(out_dir: str | Path) -> dict[str, Path]:
    """Where `write_names_table` puts the names table, the rejected rows and the quality report."""
    out = Path(out_dir)
    return {"names": out / NAMES_FILE, "rejected": out / REJECTED_FILE,
            "quality_json": out / QUALITY_JSON, "quality_md": out / QUALITY_MD}


def write_names_table(table: NamesTable, out_dir: str | Path) -> dict[str, Path]:
    """Write names, rejected rows and the quality report, all or nothing: a failure, while writing or
    while replacing the old files, leaves the previous four as they were."""
    paths = output_paths(out_dir)
    with atomic_paths(paths) as tmp:
        # the provenance travels in the file's metadata, always the table's own (a names table
        # reused from a cache may carry the metadata of an earlier run with the same rows)
        names = table.names.replace_schema_metadata({PROVENANCE_KEY: json.dumps(table.provenance)})
        pq.write_table(names, tmp["names"], compression="zstd")
        pq.write_table(table.rejected, tmp["rejected"], compression="zstd")
        for key, text in quality_texts(table.quality).items():
            tmp[key].write_text(text, encoding="utf-8")
    return paths


def quality_texts(quality: dict) -> dict[str, str]:
    """The quality report as `quality.json` and `quality.md` hold it, by `output_paths` key."""
    return {"quality_json": json.dumps(quality, indent=2, ensure_ascii=False), "quality_md": quality_markdown(quality)}


def read_provenance(path: str | Path) -> dict:
    """The provenance a names table carries in its Parquet metadata."""
    if Path(path).is_dir():
        raise NamelangError("a folder, not a names table", path)
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException) as exc:  # "Parquet magic bytes not found" (cut off), a damaged footer
        raise NamelangError(f"not a Parquet file, or a damaged one ({first_line(exc)})", path) from exc
    if PROVENANCE_KEY not in metadata:
        raise NamelangError("not a namelang names table (no provenance in its metadata)", path)
    try:
        provenance = json.loads(metadata[PROVENANCE_KEY])
    except ValueError as exc:  # not UTF-8, not JSON
        raise NamelangError(f"is damaged: its provenance is not JSON ({first_line(exc)})", path) from exc
    if not isinstance(provenance, dict):
        raise NamelangError("is damaged: its provenance is not a JSON object", path)
    return provenance


def read_names_table(path: str | Path) -> tuple[pa.Table, dict]:
    """The names table and its provenance; a clear error if it is missing, not ours, or damaged (its rows
    checked against the content hash its provenance records: Parquet pages carry no checksum here)."""
    path = Path(path)
    if not path.exists():
        raise NamelangError("names table not found; run `namelang ingest --source ...` first", path)
    provenance = read_provenance(path)
    try:
        names = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:  # a damaged page: "Corrupt ZSTD stream", "Couldn't deserialize"
        raise NamelangError(f"is damaged: its rows cannot be read ({first_line(exc)}); ingest again", path) from exc
    if table_sha256(names) != provenance.get("content_sha256"):
        raise NamelangError("is damaged: its rows do not match the content hash its provenance records; ingest "
                            "again", path)
    return names, provenance
