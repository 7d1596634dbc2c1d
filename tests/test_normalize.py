"""Normalization pieces on their own: ASCII folding, rejection rules, n_languages, hashing, reading back."""

from __future__ import annotations

import os
import string

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import DataConfig
from pipeline.errors import NamelangError
from pipeline.ingest import ingest
from pipeline.normalize import (
    REJECTION_REASONS,
    NameLanguageIndex,
    normalize,
    quality_markdown,
    read_names_table,
    rejection_codes,
    table_sha256,
    to_ascii,
    write_names_table,
)
from tests.support import reference_ascii


def random_names(n: int, seed: int = 0) -> list[str]:
    """Mostly ASCII names, some with accents, some with characters outside the alphabet."""
    rng = np.random.default_rng(seed)
    pools = [string.ascii_letters * 4 + " .,;'-_1/:", "éèêëàâäçñßøłśżąęőűÅÉÑŒ’‘ʼʻ‛＇`´′\u200b\ufeff\u00ad",
             "ИвановΠαπαд李",
             "\u0301\u0308"]
    out = []
    for _ in range(n):
        k = rng.integers(0, 12)
        chars = [pools[rng.choice(4, p=[0.85, 0.1, 0.03, 0.02])] for _ in range(k)]
        out.append("".join(pool[rng.integers(len(pool))] for pool in chars))
    return out


@pytest.mark.parametrize(("raw", "expected"), [
    ("Ślusàrski", "Slusarski"), ("ß", "_"), ("Groß", "Gro_"), ("Müller", "Muller"), ("Ou-Yang", "Ou_Yang"),
    ("O'Neil", "O'Neil"), ("Nguyễn", "Nguyen"), ("Иванов", "______"), ("Łukasz", "_ukasz"), ("Æsir", "_sir"),
    ("Smith1", "Smith_"), ("", ""), ("É", "E"), ("e\u0301", "e"), ("Dvořák", "Dvorak"),
    ("Ab.,; z", "Ab.,; z"), ("O’Neil", "O'Neil"), ("D‘Arcy", "D'Arcy"), ("Oʼbrien", "O'brien"),
    ("Ó’Súilleabháin", "O'Suilleabhain"), ("O`Neil", "O_Neil"), ("Oʻahu", "O'ahu"), ("O‛Neil", "O'Neil"),
    ("O＇Neil", "O'Neil"), ("O′Neil", "O_Neil"),
    # invisible format characters go: a BOM inside a joined file, a zero-width space, a soft hyphen, a
    # zero-width joiner, a right-to-left mark (each was a '_' inside the name)
    ("\ufeffJones", "Jones"), ("Bro\u200bwn", "Brown"), ("Schnei\u00adder", "Schneider"), ("Ab\u200dc", "Abc"),
    ("\u200fSmith", "Smith"), ("Le\u00a0Blanc", "Le_Blanc"),  # a no-break space is not invisible: kept as '_'
])
def test_to_ascii_examples(raw, expected):
    assert to_ascii(pa.array([raw])).to_pylist() == [expected]


def test_to_ascii_equals_the_reference_on_many_mixed_names():
    names = random_names(5000)
    assert any(not n.isascii() for n in names) and any(n.isascii() and n for n in names)
    assert to_ascii(pa.array(names)).to_pylist() == [reference_ascii(n) for n in names]


def test_to_ascii_on_chunked_sliced_and_null_input():
    names = random_names(300, seed=1)
    expected = [reference_ascii(n) for n in names]
    chunked = pa.chunked_array([names[:100], names[100:250], names[250:]])
    result = to_ascii(chunked)
    assert isinstance(result, pa.ChunkedArray) and result.to_pylist() == expected
    sliced = pa.array(names).slice(37, 150)
    assert to_ascii(sliced).to_pylist() == expected[37:187]
    assert to_ascii(pa.array(["Émile", None, "Smith"])).to_pylist() == ["Emile", None, "Smith"]
    assert to_ascii(pa.array([], type=pa.string())).to_pylist() == []


def reasons(codes: np.ndarray) -> list[str | None]:
    return [REJECTION_REASONS[c - 1] if c else None for c in codes.tolist()]


def test_a_mark_or_an_invisible_character_dropped_at_a_name_s_end_leaves_no_space(tmp_path):
    """Trimmed before folding, "Anna \u200b" became "Anna ": a second name beside "Anna", counted apart
    (n_languages), free to land on the other side of the split from it, and asked about with its space."""
    source = tmp_path / "names"
    source.mkdir()
    (source / "English.txt").write_text("Anna\nAnna \u200b\n\ufeff Bell\nCox \u0301\n\u200b\n", encoding="utf-8")
    (source / "German.txt").write_text("Anna\n", encoding="utf-8")
    table = normalize(ingest(DataConfig(source=str(source)))).names.to_pandas()
    assert table["name_ascii"].tolist() == ["Anna", "Anna", "Bell", "Cox", "Anna"]
    assert table["n_languages"].tolist() == [2, 2, 1, 1, 2]
    assert normalize(ingest(DataConfig(source=str(source)))).rejected["reason"].to_pylist() == [
        "empty_after_normalization"]  # the line of a zero-width space alone
    from pipeline.normalize import folded_names

    assert folded_names(pa.array(["Anna \u200b", "Cox \u0301", "Le\u00a0Blanc"])).to_pylist() == [
        "Anna", "Cox", "Le_Blanc"]


def test_rejection_reasons_first_matching_reason_wins():
    names = ["Smith", "", "Ab\x07c", "\x85", "x" * 65, "\u0301", "Иванов", "---", "x" * 64, "A\x9fb",
             "Ab\tc", "é" * 65]
    ascii_names = [reference_ascii(n) for n in names]
    got = reasons(rejection_codes(pa.array(names), pa.array(ascii_names), 64))
    assert got == [None, "blank", "control_characters", "control_characters", "too_long",
                   "empty_after_normalization", "no_latin_letters", "no_latin_letters", None,
                   "control_characters", "control_characters", "too_long"]
    assert set(got) - {None} <= set(REJECTION_REASONS)
    chunked = rejection_codes(pa.chunked_array([names[:5], names[5:]]),
                              pa.chunked_array([ascii_names[:3], ascii_names[3:]]), 64)
    assert reasons(chunked) == got


def test_count_languages_per_name_agrees_with_pandas():
    rng = np.random.default_rng(3)
    names = [f"N{i}" for i in rng.integers(0, 300, size=3000)]
    langs = [f"L{i}" for i in rng.integers(0, 7, size=3000)]
    expected = pd.DataFrame({"n": names, "l": langs}).groupby("n")["l"].transform("nunique").to_numpy()
    got = NameLanguageIndex.build(pa.chunked_array([names[:1000], names[1000:]]),
                                  pa.chunked_array([langs[:2000], langs[2000:]])).languages_per_row()
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got, expected)


def test_table_sha256_is_about_content_not_metadata_or_chunks():
    table = pa.table({"name": ["Smith", "Jones"], "n": pa.array([1, 2], type=pa.int16())})
    digest = table_sha256(table)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert table_sha256(table.replace_schema_metadata({b"k": b"v"})) == digest
    rechunked = pa.Table.from_batches(table.to_batches(max_chunksize=1))
    assert rechunked.column(0).num_chunks == 2 and table_sha256(rechunked) == digest
    assert table_sha256(pa.table({"name": ["Smith", "Jonez"], "n": table["n"]})) != digest
    assert table_sha256(table.slice(0, 1)) != digest


def test_quality_report_and_markdown(tmp_path):
    source = tmp_path / "names"
    source.mkdir()
    (source / "English.txt").write_text("Smith\nSmith\nBrown\n\nИванов\n")
    (source / "Scottish.txt").write_text("Smith\nMacDonald\nR2D2\n")
    (source / "Korean.txt").write_text("\n")
    table = normalize(ingest(DataConfig(source=str(source))))
    q = table.quality
    per = {p["language"]: p for p in q["per_language"]}
    assert per["English"] == {"language": "English", "lines": 5, "rows": 3, "distinct_names": 2,
                              "duplicate_lines": 1, "rejected": 2}
    assert per["Korean"] == {"language": "Korean", "lines": 1, "rows": 0, "distinct_names": 0,
                             "duplicate_lines": 0, "rejected": 1}
    assert [p["language"] for p in q["per_language"]] == ["English", "Scottish", "Korean"]
    assert q["class_imbalance_ratio"] == 1.0
    assert q["multi_language_names"] == {
        "count": 1, "by_languages": {"English + Scottish": 1},
        "examples": [{"name_ascii": "Smith", "languages": ["English", "Scottish"]}]}
    assert q["rejected"]["by_reason"] == {"blank": 2, "no_latin_letters": 1}
    assert (q["lines"], q["rows"], q["distinct_names"], q["duplicate_lines"]) == (9, 6, 4, 1)
    [slip] = q["unknown_characters"]["examples"]  # kept, but worth a look
    assert q["unknown_characters"]["count"] == 1 and (slip["name"], slip["name_ascii"], slip["line_number"]) == (
        "R2D2", "R_D_", 3)
    md = quality_markdown(q)
    assert "| English | 5 | 3 | 2 | 1 | 2 |" in md and "Smith (English/Scottish)" in md
    assert "outside the alphabet (as `_`): 1" in md and "| 3 | 'R2D2' | 'R_D_' |" in md


def test_read_names_table_round_trip_and_errors(tmp_path):
    source = tmp_path / "names"
    source.mkdir()
    (source / "English.txt").write_text("Smith\nJones\n")
    table = normalize(ingest(DataConfig(source=source)))  # a Path, as a notebook passes it, not only its text
    paths = write_names_table(table, tmp_path / "out")
    umask = os.umask(0)
    os.umask(umask)
    # written through temp files, yet with the permissions a plain open() would give (not mkstemp's 0600)
    assert {p.stat().st_mode & 0o777 for p in paths.values()} == {0o666 & ~umask}
    names, provenance = read_names_table(paths["names"])
    assert names.column("name").to_pylist() == ["Smith", "Jones"]
    assert provenance["content_sha256"] == table.sha256 == table_sha256(names)
    with pytest.raises(NamelangError, match="not found"):
        read_names_table(tmp_path / "missing.parquet")
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"x": [1]}), foreign)
    with pytest.raises(NamelangError, match="no provenance"):
        read_names_table(foreign)
    not_parquet = tmp_path / "names.parquet"
    not_parquet.write_text("name,language\nSmith,English\n")  # a CSV given the table's name
    with pytest.raises(NamelangError, match=r"names\.parquet: not a Parquet file, or a damaged one \("):
        read_names_table(not_parquet)

    # damaged inside, where the footer's check does not look: a value changed, the metadata kept...
    changed = names.set_column(0, "name", pa.array(["Smyth", "Jones"])).replace_schema_metadata(names.schema.metadata)
    pq.write_table(changed, not_parquet)
    with pytest.raises(NamelangError, match="is damaged: its rows do not match the content hash"):
        read_names_table(not_parquet)
    # ... and a compressed page that no longer decodes (pyarrow's OSError: "Corrupt ZSTD ...")
    data = bytearray(paths["names"].read_bytes())
    data[4:200] = bytes(196)
    not_parquet.write_bytes(bytes(data))
    with pytest.raises(NamelangError, match=r"is damaged: its rows cannot be read \("):
        read_names_table(not_parquet)
    # a damaged footer, provenance that is not JSON, a folder: each a traceback before
    data = bytearray(paths["names"].read_bytes())
    data[-40:-8] = b"\xff" * 32
    not_parquet.write_bytes(bytes(data))
    with pytest.raises(NamelangError, match=r"names\.parquet: not a Parquet file, or a damaged one \("):
        read_names_table(not_parquet)
    pq.write_table(names.replace_schema_metadata({**names.schema.metadata, b"namelang.provenance": b"{oops"}),
                   not_parquet)
    with pytest.raises(NamelangError, match=r"names\.parquet: is damaged: its provenance is not JSON \("):
        read_names_table(not_parquet)
    (tmp_path / "folder.parquet").mkdir()
    with pytest.raises(NamelangError, match=r"folder\.parquet: a folder, not a names table"):
        read_names_table(tmp_path / "folder.parquet")
