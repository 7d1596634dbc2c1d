"""Normalize raw lines to the notebook's ASCII alphabet, validate them, and write the names table.

Vectorized with pyarrow compute (NFD, regex over whole columns in C++), not a Python loop per
name: that is what makes a million names a second possible.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.atomic import atomic_path, write_text_atomic
from pipeline.config import ALLOWED_CHARACTERS, OOV_CHARACTER
from pipeline.errors import NamelangError
from pipeline.ingest import IngestResult

PROVENANCE_KEY = b"namelang.provenance"
NAMES_FILE, REJECTED_FILE = "names.parquet", "rejected.parquet"
QUALITY_JSON, QUALITY_MD = "quality.json", "quality.md"
MAX_EXAMPLES = 20
REJECTION_REASONS = ("blank", "control_characters", "too_long", "empty_after_normalization",
                     "no_latin_letters")


def normalization_spec(max_name_chars: int) -> dict:
    return {
        "trim": "leading and trailing Unicode whitespace",
        "unicode_form": "NFD",
        "drop_categories": ["Mn"],
        "alphabet": ALLOWED_CHARACTERS,
        "out_of_alphabet": OOV_CHARACTER,
        "max_name_chars": max_name_chars,
        "rejections": list(REJECTION_REASONS),
    }


def to_ascii(names: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The notebook's unicodeToAscii, except that unknown characters become '_' instead of vanishing."""
    decomposed = pc.utf8_normalize(names, form="NFD")
    unmarked = pc.replace_substring_regex(decomposed, pattern=r"\p{Mn}", replacement="")
    allowed = "".join("\\" + c if c in r"\]^-[" else c for c in ALLOWED_CHARACTERS)
    return pc.replace_substring_regex(unmarked, pattern=f"[^{allowed}]", replacement=OOV_CHARACTER)


def ascii_name(name: str) -> str:
    """One name through `to_ascii` (for prediction-time use on a handful of names)."""
    return to_ascii(pa.array([name.strip()], type=pa.string()))[0].as_py()


def rejection_reasons(name: pa.ChunkedArray, name_ascii: pa.ChunkedArray, max_chars: int) -> pa.Array:
    """Why each row is unusable (null where it is fine), first matching reason wins."""
    conditions = [
        pc.equal(name, ""),
        pc.match_substring_regex(name, r"\p{Cc}"),
        pc.greater(pc.utf8_length(name), max_chars),
        pc.equal(name_ascii, ""),
        pc.invert(pc.match_substring_regex(name_ascii, "[A-Za-z]")),
    ]
    cond = pc.make_struct(*conditions, field_names=list(REJECTION_REASONS))
    return pc.case_when(cond, *[pa.scalar(r) for r in REJECTION_REASONS])


def count_languages_per_name(name_ascii: pa.ChunkedArray, language: pa.ChunkedArray) -> np.ndarray:
    """For each row, how many distinct languages carry its `name_ascii` (order preserved)."""
    names = pc.dictionary_encode(name_ascii).combine_chunks()
    langs = pc.dictionary_encode(language).combine_chunks()
    name_idx = names.indices.to_numpy().astype(np.int64)
    lang_idx = langs.indices.to_numpy().astype(np.int64)
    pairs = np.unique(name_idx * len(langs.dictionary) + lang_idx)
    per_name = np.bincount(pairs // len(langs.dictionary), minlength=len(names.dictionary))
    return per_name[name_idx].astype(np.int16)


def table_sha256(table: pa.Table) -> str:
    """Content hash of a table's columns and values (schema metadata excluded)."""
    sink = pa.BufferOutputStream()
    plain = table.replace_schema_metadata(None).combine_chunks()
    with pa.ipc.new_stream(sink, plain.schema) as writer:
        writer.write_table(plain)
    return hashlib.sha256(sink.getvalue()).hexdigest()


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


def normalize(result: IngestResult, max_name_chars: int = 64) -> NamesTable:
    raw = result.table
    name = pc.utf8_trim_whitespace(raw["raw"])
    name_ascii = to_ascii(name)
    reason = rejection_reasons(name, name_ascii, max_name_chars)
    ok = pc.is_null(reason)
    keep = pa.table({
        "name": name, "name_ascii": name_ascii, "language": raw["language"],
        "source_file": raw["source_file"], "line_number": raw["line_number"],
    }).filter(ok)
    names = keep.append_column("n_languages", pa.array(count_languages_per_name(keep["name_ascii"],
                                                                                keep["language"])))
    rejected = pa.table({
        "name": raw["raw"], "language": raw["language"], "source_file": raw["source_file"],
        "line_number": raw["line_number"], "reason": reason,
    }).filter(pc.invert(ok))
    digest = table_sha256(names)
    quality = quality_report(names, rejected, raw, digest)
    provenance = {
        **result.provenance(),
        "normalization": normalization_spec(max_name_chars),
        "counts": {"lines": raw.num_rows, "rows": names.num_rows, "rejected": rejected.num_rows,
                   "languages": len(quality["per_language"])},
        "content_sha256": digest,
    }
    return NamesTable(names.replace_schema_metadata({PROVENANCE_KEY: json.dumps(provenance)}), rejected,
                      provenance, quality)


def quality_report(names: pa.Table, rejected: pa.Table, raw: pa.Table, digest: str) -> dict:
    """Counts a user should see before training: duplicates, shared names, imbalance, rejections."""
    by_lang = names.group_by("language").aggregate([("name_ascii", "count"), ("name_ascii", "count_distinct")])
    lines_by_lang = dict(zip(*raw.group_by("language").aggregate([("raw", "count")])
                             .select(["language", "raw_count"]).to_pydict().values(), strict=True))
    rej_by_lang = dict(zip(*rejected.group_by("language").aggregate([("reason", "count")])
                           .select(["language", "reason_count"]).to_pydict().values(), strict=True)) \
        if rejected.num_rows else {}
    per_language = []
    for lang, rows, distinct in sorted(zip(*by_lang.select(
            ["language", "name_ascii_count", "name_ascii_count_distinct"]).to_pydict().values(), strict=True)):
        per_language.append({"language": lang, "lines": lines_by_lang.get(lang, 0), "rows": rows,
                             "distinct_names": distinct, "duplicate_lines": rows - distinct,
                             "rejected": rej_by_lang.get(lang, 0)})
    for lang in sorted(set(lines_by_lang) - {p["language"] for p in per_language}):
        per_language.append({"language": lang, "lines": lines_by_lang[lang], "rows": 0, "distinct_names": 0,
                             "duplicate_lines": 0, "rejected": rej_by_lang.get(lang, 0)})
    shared = names.filter(pc.greater(names["n_languages"], 1)).select(["name_ascii", "language"])
    shared_groups = shared.group_by("name_ascii").aggregate([("language", "distinct")]).to_pylist()
    pair_counts: dict[str, int] = {}
    for group in shared_groups:
        key = " + ".join(sorted(group["language_distinct"]))
        pair_counts[key] = pair_counts.get(key, 0) + 1
    examples = sorted(shared_groups, key=lambda g: g["name_ascii"])[:MAX_EXAMPLES]
    row_counts = [p["rows"] for p in per_language if p["rows"]]
    reasons = rejected.group_by("reason").aggregate([("reason", "count")]).to_pydict() if rejected.num_rows \
        else {"reason": [], "reason_count": []}
    rejected_rows = rejected.slice(0, 1000).to_pylist()
    for row in rejected_rows:
        row["name"] = row["name"][:80] + ("…" if len(row["name"]) > 80 else "")
    return {
        "content_sha256": digest,
        "lines": raw.num_rows,
        "rows": names.num_rows,
        "distinct_names": pc.count_distinct(names["name_ascii"]).as_py(),
        "duplicate_lines": sum(p["duplicate_lines"] for p in per_language),
        "languages": len(per_language),
        "class_imbalance_ratio": round(max(row_counts) / min(row_counts), 2) if row_counts else None,
        "per_language": per_language,
        "multi_language_names": {
            "count": len(shared_groups),
            "by_languages": dict(sorted(pair_counts.items(), key=lambda kv: -kv[1])),
            "examples": [{"name_ascii": g["name_ascii"], "languages": sorted(g["language_distinct"])}
                         for g in examples],
        },
        "rejected": {
            "count": rejected.num_rows,
            "by_reason": dict(zip(reasons["reason"], reasons["reason_count"], strict=True)),
            "rows": rejected_rows,
            "rows_truncated": rejected.num_rows > len(rejected_rows),
        },
    }


def quality_markdown(quality: dict) -> str:
    lines = [
        "# Data-quality report", "",
        f"- table content SHA-256: `{quality['content_sha256']}`",
        f"- lines read: {quality['lines']}, rows kept: {quality['rows']}, rejected: {quality['rejected']['count']}",
        f"- distinct names: {quality['distinct_names']}, duplicate lines: {quality['duplicate_lines']}",
        f"- languages: {quality['languages']}, class-imbalance ratio (largest / smallest): "
        f"{quality['class_imbalance_ratio']}",
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
    rejected = quality["rejected"]
    lines += ["", f"## Rejected rows: {rejected['count']}", ""]
    if rejected["rows"]:
        lines += ["| file | line | reason | name |", "|---|---:|---|---|"]
        lines += [f"| {r['source_file']} | {r['line_number']} | {r['reason']} | {r['name'][:40]!r} |"
                  for r in rejected["rows"][:50]]
    return "\n".join(lines) + "\n"


def write_names_table(table: NamesTable, out_dir: str | Path) -> dict[str, Path]:
    """Write names, rejected rows and the quality report; each file atomically."""
    out = Path(out_dir)
    paths = {"names": out / NAMES_FILE, "rejected": out / REJECTED_FILE,
             "quality_json": out / QUALITY_JSON, "quality_md": out / QUALITY_MD}
    for key, data in (("rejected", table.rejected), ("names", table.names)):
        with atomic_path(paths[key]) as tmp:
            pq.write_table(data, tmp, compression="zstd")
    write_text_atomic(paths["quality_json"], json.dumps(table.quality, indent=2, ensure_ascii=False))
    write_text_atomic(paths["quality_md"], quality_markdown(table.quality))
    return paths


def read_provenance(path: str | Path) -> dict:
    metadata = pq.read_schema(path).metadata or {}
    if PROVENANCE_KEY not in metadata:
        raise NamelangError("not a namelang names table (no provenance in its metadata)", path)
    return json.loads(metadata[PROVENANCE_KEY])


def read_names_table(path: str | Path) -> tuple[pa.Table, dict]:
    """The names table and its provenance; a clear error if it is missing or not ours."""
    path = Path(path)
    if not path.exists():
        raise NamelangError("names table not found; run `namelang ingest --source ...` first", path)
    provenance = read_provenance(path)
    return pq.read_table(path), provenance
