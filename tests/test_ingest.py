"""Ingest + normalize + write, on the real tutorial data and on every kind of bad input.

Expected values are computed here from the files themselves (never hard-coded counts), with small
independent reference implementations: line splitting with a regex, the notebook's unicodeToAscii,
the rejection rules one name at a time, n_languages with pandas.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import re
import stat
import string
import sys
import threading
import unicodedata
import warnings
import zipfile
import zlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline import __version__
from pipeline.config import DataConfig
from pipeline.errors import NamelangError, NamelangWarning, explained_by_input
from pipeline.ingest import SourceFile, ingest, source_fingerprint, split_lines
from pipeline.normalize import (
    NAMES_FILE,
    PROVENANCE_KEY,
    QUALITY_JSON,
    QUALITY_MD,
    REJECTED_FILE,
    NamesTable,
    normalize,
    read_provenance,
    table_sha256,
    write_names_table,
)
from tests.support import ALPHABET, reference_ascii

BOM = b"\xef\xbb\xbf"


# ---------------------------------------------------------------- independent reference code


def notebook_ascii(s: str) -> str:
    """The tutorial notebook's unicodeToAscii, verbatim."""
    return "".join(c for c in unicodedata.normalize("NFD", s)
                   if unicodedata.category(c) != "Mn" and c in ALPHABET)


def mappable(s: str) -> bool:
    return all(c in ALPHABET for c in unicodedata.normalize("NFD", s) if unicodedata.category(c) != "Mn")


def reference_lines(data: bytes) -> list[str]:
    """Lines of a UTF-8 file: BOM dropped, split on LF, CRLF or CR (Python's universal newlines), a
    final newline starts no line."""
    text = data.decode("utf-8")
    text = text.removeprefix("\ufeff")
    lines = re.split(r"\r\n|\r|\n", text)
    return lines[:-1] if lines[-1] == "" else lines


def reference_reason(raw: str, max_chars: int = 64) -> str | None:
    name = raw.strip()
    if name == "":
        return "blank"
    if any(unicodedata.category(c) == "Cc" for c in name):
        return "control_characters"
    if len(name) > max_chars:
        return "too_long"
    ascii_ = reference_ascii(name)
    if ascii_ == "":
        return "empty_after_normalization"
    if not any(c in string.ascii_letters for c in ascii_):
        return "no_latin_letters"
    return None


def make_source(folder: Path, files: dict[str, bytes | str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for language, content in files.items():
        data = content.encode("utf-8") if isinstance(content, str) else content
        (folder / f"{language}.txt").write_bytes(data)
    return folder


def run(source: Path | str, tmp_path: Path, **settings) -> NamesTable:
    config = DataConfig(source=str(source), raw_dir=tmp_path / "raw", **settings)
    return normalize(ingest(config), config.max_name_chars)


def make_zip(members: dict[str, bytes | str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return buffer.getvalue()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


def assert_left_empty(folder: Path) -> None:
    """A failed download leaves nothing: no file, no temp file, not even the folder made for it. No file
    at all beside it either (the test's own folder), so that a download into another folder than the
    one named here would not pass unseen."""
    assert not folder.exists(), sorted(p.name for p in folder.iterdir())
    assert not [p for p in folder.parent.rglob("*") if p.is_file()], sorted(folder.parent.rglob("*"))


# ---------------------------------------------------------------- the real data


@pytest.fixture(scope="module")
def shared_run(shared_names: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("shared")
    config = DataConfig(source=str(shared_names), raw_dir=tmp / "raw", processed_dir=tmp / "out")
    result = ingest(config)
    table = normalize(result, config.max_name_chars)
    paths = write_names_table(table, config.processed_dir)
    files = {p.stem: p.read_bytes() for p in sorted(shared_names.glob("*.txt"))}
    lines = {language: reference_lines(data) for language, data in files.items()}
    return {"result": result, "table": table, "paths": paths, "files": files, "lines": lines,
            "dir": shared_names}


def test_shared_counts_are_the_files_line_counts(shared_run):
    files, lines = shared_run["files"], shared_run["lines"]
    table, result = shared_run["table"], shared_run["result"]
    assert len(files) == 18
    for language, data in files.items():  # the reference split agrees with a plain newline count
        assert len(lines[language]) == data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    per_language = {p["language"]: p for p in table.quality["per_language"]}
    assert sorted(per_language) == sorted(files)
    expected_rejected = {lang: sum(reference_reason(x) is not None for x in ls) for lang, ls in lines.items()}
    for language, ls in lines.items():
        assert per_language[language]["lines"] == len(ls)
        assert per_language[language]["rejected"] == expected_rejected[language]
        assert per_language[language]["rows"] == len(ls) - expected_rejected[language]
    total = sum(len(ls) for ls in lines.values())
    assert result.table.num_rows == total == table.quality["lines"] == table.provenance["counts"]["lines"]
    assert table.names.num_rows + table.rejected.num_rows == total
    assert table.names.num_rows == total - sum(expected_rejected.values())
    assert table.provenance["counts"]["languages"] == table.quality["languages"] == 18
    by_file = {f.language: f for f in result.files}
    assert {lang: f.lines for lang, f in by_file.items()} == {lang: len(ls) for lang, ls in lines.items()}
    # the raw table holds each file's lines, in order, numbered from 1
    raw = result.table.to_pydict()
    for language, ls in lines.items():
        got = [(n, r) for r, lang, n in zip(raw["raw"], raw["language"], raw["line_number"], strict=True)
               if lang == language]
        assert got == list(enumerate(ls, start=1))


def test_shared_rows_point_back_to_their_file_and_line(shared_run):
    names = pq.read_table(shared_run["paths"]["names"]).to_pydict()
    by_path = {str((shared_run["dir"] / f"{lang}.txt").resolve()): ls
               for lang, ls in shared_run["lines"].items()}
    for name, language, source_file, line in zip(names["name"], names["language"], names["source_file"],
                                                 names["line_number"], strict=True):
        assert Path(source_file).stem == language
        assert by_path[source_file][line - 1].strip() == name


def test_shared_provenance_hashes_match_hashlib_and_names_sha256(shared_run):
    listed = {}
    for row in (shared_run["dir"].parent / "names.sha256").read_text().splitlines():
        digest, name = row.split()
        listed[Path(name).stem] = digest
    assert len(listed) == 18
    for f in shared_run["result"].files:
        data = shared_run["files"][f.language]
        assert f.sha256 == hashlib.sha256(data).hexdigest() == listed[f.language]
        assert f.bytes == len(data)
        assert f.path == str((shared_run["dir"] / f"{f.language}.txt").resolve())
        assert f.bom is data.startswith(BOM)
        assert f.crlf is (b"\r\n" in data)


def test_shared_parquet_metadata_carries_the_provenance(shared_run):
    path, table = shared_run["paths"]["names"], shared_run["table"]
    provenance = json.loads(pq.read_schema(path).metadata[b"namelang.provenance"])
    assert PROVENANCE_KEY == b"namelang.provenance"
    assert {"ingest", "files", "normalization", "counts", "content_sha256"} <= set(provenance)
    assert provenance == read_provenance(path) == json.loads(json.dumps(table.provenance))
    run_info = provenance["ingest"]
    assert run_info["source_uri"] == str(shared_run["dir"].resolve())
    assert run_info["package_version"] == __version__
    loaded = datetime.fromisoformat(run_info["loaded_at_utc"])
    assert loaded.tzinfo is not None and abs((datetime.now(UTC) - loaded).total_seconds()) < 600
    assert {f["language"]: f["sha256"] for f in provenance["files"]} == {
        lang: hashlib.sha256(data).hexdigest() for lang, data in shared_run["files"].items()}
    assert provenance["normalization"]["unicode_form"] == "NFD"
    assert provenance["normalization"]["alphabet"] == ALPHABET
    n_lines = sum(len(ls) for ls in shared_run["lines"].values())
    assert provenance["counts"] == {"lines": n_lines, "rows": pq.read_metadata(path).num_rows,
                                    "rejected": pq.read_metadata(shared_run["paths"]["rejected"]).num_rows,
                                    "languages": 18}
    # the recorded content hash is the hash of what is in the file
    on_disk = pq.read_table(path)
    assert provenance["content_sha256"] == table_sha256(on_disk) == table.sha256
    quality = json.loads(shared_run["paths"]["quality_json"].read_text())
    assert quality["content_sha256"] == table.sha256
    assert table.sha256 in shared_run["paths"]["quality_md"].read_text()


def test_shared_n_languages_agrees_with_pandas(shared_run):
    df = pq.read_table(shared_run["paths"]["names"]).to_pandas()
    expected = df.groupby("name_ascii")["language"].transform("nunique")
    assert (df["n_languages"] == expected).all()
    # from the files themselves: names written in both English.txt and Scottish.txt
    english = {reference_ascii(x.strip()) for x in shared_run["lines"]["English"]}
    scottish = {reference_ascii(x.strip()) for x in shared_run["lines"]["Scottish"]}
    both = english & scottish
    assert both
    shared_rows = df[df["name_ascii"].isin(both)]
    assert set(shared_rows["name_ascii"]) == both
    assert (shared_rows["n_languages"] >= 2).all()
    per_file = {lang: {reference_ascii(x.strip()) for x in ls} for lang, ls in shared_run["lines"].items()}
    for name, n in shared_rows.groupby("name_ascii")["n_languages"].first().items():
        assert n == sum(name in s for s in per_file.values())
    quality = shared_run["table"].quality
    languages_per_name = df.groupby("name_ascii")["language"].nunique()
    assert quality["multi_language_names"]["count"] == int((languages_per_name > 1).sum())
    assert quality["distinct_names"] == df["name_ascii"].nunique()
    distinct = df.groupby("language")["name_ascii"].nunique()
    for p in quality["per_language"]:
        assert p["distinct_names"] == distinct[p["language"]]
        assert p["duplicate_lines"] == p["rows"] - distinct[p["language"]]
    assert quality["duplicate_lines"] == sum(p["duplicate_lines"] for p in quality["per_language"]) > 0


def test_shared_normalization_matches_the_notebook(shared_run):
    names = shared_run["table"].names.to_pydict()
    checked = 0
    for name, ascii_ in zip(names["name"], names["name_ascii"], strict=True):
        if mappable(name):
            assert ascii_ == notebook_ascii(name), name
            checked += 1
        else:
            assert ascii_ == reference_ascii(name) != notebook_ascii(name), name
    assert checked > 0.99 * len(names["name"])
    pairs = dict(zip(names["name"], names["name_ascii"], strict=True))
    assert pairs["Groß"] == "Gro_"
    assert pairs["Ślusarczyk"] == "Slusarczyk"
    assert any(not n.isascii() and mappable(n) for n in names["name"])  # accents really were folded


# ---------------------------------------------------------------- line-level problems


CASES = {
    # id: (file bytes, kept {line: (name, name_ascii)}, rejected {line: reason})
    "blank_lines": (b"Smith\n\nJones\n   \n\t\n", {1: ("Smith", "Smith"), 3: ("Jones", "Jones")},
                    {2: "blank", 4: "blank", 5: "blank"}),
    "trailing_spaces": (b"Smith  \n  Jones\t\nO'Neil \xc2\xa0\n",
                        {1: ("Smith", "Smith"), 2: ("Jones", "Jones"), 3: ("O'Neil", "O'Neil")}, {}),
    "crlf": (b"Smith\r\nJones\r\n\r\nBrown", {1: ("Smith", "Smith"), 2: ("Jones", "Jones"),
                                              4: ("Brown", "Brown")}, {3: "blank"}),
    "cr_only": (b"Smith\rJones\r\rBrown\r", {1: ("Smith", "Smith"), 2: ("Jones", "Jones"),  # an old Mac file:
                                              4: ("Brown", "Brown")}, {3: "blank"}),  # was one rejected line
    "bom": (BOM + b"Smith\nJones\n", {1: ("Smith", "Smith"), 2: ("Jones", "Jones")}, {}),
    "non_latin_script": ("Smith\nИванов\nΠαπαδόπουλος\n".encode(), {1: ("Smith", "Smith")},
                         {2: "no_latin_letters", 3: "no_latin_letters"}),
    "too_long": (("Smith\n" + "a" * 10_000 + "\nJones\n").encode(),
                 {1: ("Smith", "Smith"), 3: ("Jones", "Jones")}, {2: "too_long"}),
    "control_character": (b"Smith\nAb\x07cd\nEf\x7fgh\nIj\xc2\x85kl\n", {1: ("Smith", "Smith")},
                          {2: "control_characters", 3: "control_characters", 4: "control_characters"}),
    "only_combining_marks": ("Smith\n\u0301\u0308\n".encode(), {1: ("Smith", "Smith")},
                             {2: "empty_after_normalization"}),
    "accents_and_unknown_characters": ("Ślusàrski\nGroß\nMüller-Lüdenscheidt\n".encode(),
                                       {1: ("Ślusàrski", "Slusarski"), 2: ("Groß", "Gro_"),
                                        3: ("Müller-Lüdenscheidt", "Muller_Ludenscheidt")}, {}),
    "no_final_newline": (b"Smith\nJones", {1: ("Smith", "Smith"), 2: ("Jones", "Jones")}, {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_line_problems_are_kept_cleaned_or_rejected_with_file_and_line(case, tmp_path):
    data, kept, rejected = CASES[case]
    source = make_source(tmp_path / "names", {"English": data, "Scottish": b"MacDonald\n"})
    table = run(source, tmp_path)
    english = str((source / "English.txt").resolve())
    names = [r for r in table.names.to_pylist() if r["language"] == "English"]
    assert {r["line_number"]: (r["name"], r["name_ascii"]) for r in names} == kept
    assert all(r["source_file"] == english for r in names)
    # the rejections, as written to rejected.parquet: file, line and reason
    paths = write_names_table(table, tmp_path / "out")
    on_disk = pq.read_table(paths["rejected"]).to_pylist()
    assert {r["line_number"]: r["reason"] for r in on_disk} == rejected
    assert all(r["source_file"] == english and r["language"] == "English" for r in on_disk)
    lines = reference_lines(data)
    for r in on_disk:
        assert r["name"] == lines[r["line_number"] - 1]  # the raw line, as it was
        assert reference_reason(r["name"]) == r["reason"]
    assert table.quality["rejected"]["by_reason"] == {
        reason: list(rejected.values()).count(reason) for reason in sorted(set(rejected.values()))}
    reported = {(r["line_number"], r["reason"]) for r in table.quality["rejected"]["rows"]}
    assert reported == set(rejected.items())
    provenance = {f.language: f for f in ingest(DataConfig(source=str(source))).files}
    assert provenance["English"].lines == len(lines)
    assert provenance["English"].bom is data.startswith(BOM)
    assert provenance["English"].crlf is (b"\r\n" in data)
    assert provenance["Scottish"].bom is False and provenance["Scottish"].crlf is False
    assert json.loads(pq.read_schema(paths["names"]).metadata[PROVENANCE_KEY])["files"][0]["bom"] is \
        data.startswith(BOM)


def test_too_long_limit_is_the_configured_one(tmp_path):
    source = make_source(tmp_path / "names", {"English": "Smith\nAbcdefghij\n"})
    table = run(source, tmp_path, max_name_chars=5)
    assert table.names.column("name").to_pylist() == ["Smith"]
    assert table.rejected.to_pylist()[0]["reason"] == "too_long"
    assert table.provenance["normalization"]["max_name_chars"] == 5


def test_fast_line_splitting_equals_the_reference_on_random_bytes():
    rng = np.random.default_rng(7)
    pieces = [b"a", b"Zz", b" ", b"\n", b"\r\n", b"\r", b"\xc3\xa9", b"\xe2\x80\x83", b"\t", b"\n\n"]
    for i in range(400):
        data = b"".join(pieces[k] for k in rng.integers(0, len(pieces), size=rng.integers(0, 30)))
        if i % 3 == 0:
            data = BOM + data
        file = SourceFile("X", "x.txt", data, None)
        buf, lengths, bom, crlf = split_lines(file)
        offsets = np.concatenate(([0], np.cumsum(lengths)))
        lines = [bytes(buf[a:b]).decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
        expected = reference_lines(data)
        assert lines == expected, data
        assert bom is data.startswith(BOM)
        assert crlf is (b"\r\n" in data.removeprefix(BOM))


# ---------------------------------------------------------------- file-level problems


def test_not_utf8_names_the_file_and_line(tmp_path):
    source = make_source(tmp_path / "names",
                         {"English": "Smith\n", "German": b"Schmidt\r\nWeber\r\nM\xfcller\r\n"})
    with pytest.raises(NamelangError) as info:
        run(source, tmp_path)
    german = str((source / "German.txt").resolve())
    assert info.value.file == german
    assert info.value.line == 3
    assert str(info.value).startswith(f"{german}:3: not valid UTF-8")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("bad", "line"), [
    (b"Smith\nJones\nM\xfcller\n", 3),                 # Latin-1
    (b"Smith\n\xed\xa0\x80bc\n", 2),                   # an encoded surrogate
    (b"\xc0\x80Smith\n", 1),                            # an overlong encoding
    (b"Smith\r\nJones\r\n\r\nAb\xf4\x90\x80\x80\r\n", 4),  # beyond U+10FFFF, CRLF lines
    (b"Smith\nJones\nAb\xe2\x82", 3),                  # cut off in the middle of a character
    (b"Smith\rJones\rWeber\rBauer\rK\xf6nig\r", 5),      # lines ended by a CR alone (said line 1)
    (b"Smith\r\nJones\rWeber\nK\xf6nig\r\n", 4),          # the three line ends mixed
])
def test_invalid_utf8_variants_name_the_exact_line(bad, line, tmp_path):
    source = make_source(tmp_path / "names", {"Czech": bad})
    with pytest.raises(NamelangError, match="not valid UTF-8") as info:
        run(source, tmp_path)
    assert (info.value.file, info.value.line) == (str((source / "Czech.txt").resolve()), line)


def test_not_utf8_after_a_bom_and_on_the_first_line(tmp_path):
    source = make_source(tmp_path / "names", {"French": BOM + b"\xe9lise\nDupont\n"})
    with pytest.raises(NamelangError, match="not valid UTF-8") as info:
        run(source, tmp_path)
    assert info.value.line == 1 and info.value.file.endswith("French.txt")


def test_a_folder_named_like_a_file_is_not_read_or_fingerprinted_and_is_said(tmp_path):
    from pipeline.ingest import source_fingerprint

    source = make_source(tmp_path / "src", {"English": "Smith\n", "French": "Dupont\n"})
    fingerprint = source_fingerprint(source)
    (source / "Old.txt").mkdir()  # a language that went missing from the table without a word
    with pytest.warns(NamelangWarning, match=r"\['Old.txt'\] is a folder, not a file of names: not read"):
        assert run(source, tmp_path).quality["languages"] == 2
    assert source_fingerprint(source) == fingerprint
    (source / "French.txt").write_text("Dupond\n")
    assert source_fingerprint(source) != fingerprint


def test_ingest_fingerprints_the_bytes_it_read_as_the_source_is_fingerprinted_on_disk(tmp_path, monkeypatch):
    """The flow compares the two to tell that a source changed while it was read, without reading it
    again: a language file that is a link is named as listed (its target's name would differ), and
    an archive by its own hash."""
    import pipeline.ingest as ingest_module
    from pipeline.ingest import source_fingerprint

    elsewhere = make_source(tmp_path / "elsewhere", {"greek-names": "Pappas\n"})
    source = make_source(tmp_path / "src", {"English": "Smith\n"})
    (source / "Greek.txt").symlink_to(elsewhere / "greek-names.txt")
    archive = tmp_path / "names.zip"
    archive.write_bytes(make_zip({"names/English.txt": "Smith\n", "names/Greek.txt": "Pappas\n"}))
    for path in (source, archive):
        assert ingest(DataConfig(source=str(path), raw_dir=tmp_path / "raw")).fingerprint == source_fingerprint(path)

    before = source_fingerprint(source)
    real_read = ingest_module.read_folder

    def read_then_change(folder):  # a writer finishing while the files are read
        read = real_read(folder)
        (folder / "English.txt").write_text("Jones\n")
        return read

    monkeypatch.setattr(ingest_module, "read_folder", read_then_change)
    assert ingest(DataConfig(source=str(source), raw_dir=tmp_path / "raw")).fingerprint == before  # what was read
    assert source_fingerprint(source) != before

    archive_before = source_fingerprint(archive)
    real_archive = ingest_module.read_archive

    def read_archive_then_change(path, max_member_bytes):  # an archive's hash comes after its members
        read = real_archive(path, max_member_bytes)
        archive.write_bytes(make_zip({"names/English.txt": "Jones\n"}))
        return read

    monkeypatch.setattr(ingest_module, "read_archive", read_archive_then_change)
    assert ingest(DataConfig(source=str(archive), raw_dir=tmp_path / "raw")).fingerprint != archive_before


def test_a_broken_link_or_a_pipe_named_like_a_language_file_is_an_error_not_skipped(tmp_path):
    """Korean vanished from the table without a word; a pipe would have hung the fingerprint."""
    import os

    from pipeline.ingest import source_fingerprint

    source = make_source(tmp_path / "src", {"English": "Smith\n", "French": "Dupont\n"})
    (source / "Korean.txt").symlink_to(tmp_path / "nowhere" / "Korean.txt")
    for _ in range(2):
        for read in (lambda: run(source, tmp_path), lambda: source_fingerprint(source)):
            with pytest.raises(NamelangError) as err:
                read()
            problem = "a broken link" if (source / "Korean.txt").is_symlink() else "not a regular file"
            assert str(err.value) == f"{source / 'Korean.txt'}: cannot read this file: {problem}"
        (source / "Korean.txt").unlink()
        os.mkfifo(source / "Korean.txt")


def test_the_txt_extension_in_any_case_and_one_file_per_language(tmp_path):
    from pipeline.ingest import source_fingerprint

    source = make_source(tmp_path / "src", {"English": "Smith\n"})
    (source / "Greek.TXT").write_text("Papadopoulos\n")  # was skipped without a word
    assert run(source, tmp_path).quality["languages"] == 2
    fingerprint = source_fingerprint(source)
    (source / "Greek.TXT").write_text("Pappas\n")
    assert source_fingerprint(source) != fingerprint
    (source / "English.Txt").write_text("Jones\n")
    with pytest.raises(NamelangError, match="two files give the language 'English' \\(in some case\\): this one and "
                       ) as info:
        run(source, tmp_path)
    assert info.value.file.endswith("English.txt")
    archive = tmp_path / "upper.zip"
    archive.write_bytes(make_zip({"names/Greek.TXT": "Pappas\n", "names/Irish.txt": "Murphy\n"}))
    assert run(archive, tmp_path).quality["languages"] == 2
    # stems that differ only in case were two languages, "English" and "english"
    archive.write_bytes(make_zip({"names/English.txt": "Smith\n", "names/english.txt": "Jones\n"}))
    with pytest.raises(NamelangError, match="two files give the language 'english' \\(in some case\\)"):
        run(archive, tmp_path)


def test_mac_metadata_and_a_nameless_txt_are_not_languages_and_other_folders_are_named(tmp_path):
    source = make_source(tmp_path / "src", {"English": "Smith\n"})
    (source / "._English.txt").write_bytes(b"\x00\x05\x16\x07\xff")  # AppleDouble: stopped the ingest
    (source / ".txt").write_text("Nobody\n")
    (source / ".hidden.txt").write_text("Nobody\n")  # a hidden file: it made the language ".hidden"
    assert run(source, tmp_path).quality["languages"] == 1
    archive = tmp_path / "mac.zip"
    archive.write_bytes(make_zip({"data/names/English.txt": "Smith\n", "data/names/._English.txt": b"\xff",
                                  "data/names/.txt": "Nobody\n", "other/French.txt": "Dupont\n"}))
    with pytest.warns(NamelangWarning, match=r"only data/names/ is read; the .txt files in \['other'\] are not"):
        table = run(archive, tmp_path)
    assert table.quality["languages"] == 1  # not '.txt', not French


def test_labels_that_look_alike_are_one_language(tmp_path):
    """A Mac writes "Français" decomposed (NFD), which made a second language that prints the same;
    "English .txt" made "English " beside "English"."""
    decomposed = unicodedata.normalize("NFD", "Français")
    source = make_source(tmp_path / "src", {"English": "Smith\n", decomposed: "Dupont\n", " German ": "Weber\n"})
    assert sorted(run(source, tmp_path).names["language"].unique().to_pylist()) == ["English", "Français", "German"]
    (source / "Français.txt").write_text("Martin\n")  # composed, beside the decomposed one
    with pytest.raises(NamelangError, match="two files give the language 'Français' \\(the same name, its accents "
                       "composed in one and decomposed in the other\\)"):  # the two paths print the same
        run(source, tmp_path)
    archive = tmp_path / "mac.zip"
    archive.write_bytes(make_zip({f"names/{decomposed}.txt": "Dupont\n", "names/English .txt": "Smith\n"}))
    assert sorted(run(archive, tmp_path).names["language"].unique().to_pylist()) == ["English", "Français"]


@pytest.mark.skipif(sys.platform != "linux", reason="only Linux file systems take a file name of any bytes "
                    "(macOS and Windows refuse one that is not UTF-8, so there the case cannot arise)")
def test_a_file_name_that_is_not_utf8_is_named_not_a_traceback(tmp_path):
    source = make_source(tmp_path / "src", {"English": "Smith\n"})
    latin1 = os.fsdecode(b"Fran\xe7ais.txt")  # as Python lists a Latin-1 name on a UTF-8 system
    (source / latin1).write_text("Dupont\n")
    for step in (lambda: run(source, tmp_path), lambda: source_fingerprint(source)):
        with pytest.raises(NamelangError, match=r"file name 'Fran\\xe7ais.txt' is not valid UTF-8") as info:
            step()
        assert info.value.file == str(source) and explained_by_input(info.value)


def test_names_in_sub_folders_are_said_not_dropped_in_silence(tmp_path):
    source = make_source(tmp_path / "src", {"English": "Smith\n"})
    make_source(source / "more", {"German": "Weber\n"})
    make_source(source / ".ipynb_checkpoints", {"English-checkpoint": "Smith\n"})  # Jupyter's: not said
    with pytest.warns(NamelangWarning, match=r"only this folder's .txt files are read; those in its sub-folder "
                                             r"\['more'\] are not"):
        assert run(source, tmp_path).quality["languages"] == 1
    parent = tmp_path / "data"
    make_source(parent / "names", {"English": "Smith\n"})
    with pytest.raises(NamelangError, match=r"no <Language>\.txt files in this folder \(the sub-folder 'names' "
                                            r"holds some: give it as the source\)"):
        run(parent, tmp_path)


def test_a_home_relative_source_is_recorded_as_its_real_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    make_source(tmp_path / "names", {"English": "Smith\n"})
    ingest_run = run("~/names", tmp_path).provenance["ingest"]
    assert ingest_run["source_uri"] == ingest_run["source_path"] == str((tmp_path / "names").resolve())


def test_missing_source(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    with pytest.raises(NamelangError, match="does not exist") as info:
        run(missing, tmp_path)
    assert info.value.file == str(missing)
    with pytest.raises(NamelangError, match="no source given"):
        run("  ", tmp_path)
    with pytest.raises(NamelangError, match="unsupported URL scheme 'ftp': a source URL must be http or https"
                       ) as info:
        run("ftp://example.org/data.zip", tmp_path)  # not "ftp:/example.org/data.zip: does not exist"
    assert info.value.file == "ftp://example.org/data.zip"
    make_source(tmp_path / "names:v2", {"English": "Smith\n"})  # a colon in a folder's name is no URL scheme
    monkeypatch.chdir(tmp_path)
    assert run("names:v2", tmp_path).quality["languages"] == 1


def test_a_malformed_url_or_a_folder_that_cannot_be_listed_is_one_error(tmp_path, monkeypatch):
    """urlparse's ValueError (a bracket left open), httpx's InvalidURL (a control character) and a source
    folder this user may not list escaped as tracebacks from `namelang ingest`, `train` and `flows.serve`."""
    from pipeline.ingest import is_url, source_fingerprint

    for url, problem in (("http://[::1/data.zip", "not a valid URL: Invalid port: ':1'"),
                         ("https://a\x00b/x.zip", "not a valid URL: Invalid non-printable ASCII character in URL"),
                         ("HTTPS:///data.zip", "not a valid URL: it names no host")):
        assert is_url(url)
        with pytest.raises(NamelangError, match=re.escape(problem)) as info:
            run(url, tmp_path)
        assert info.value.file == url and info.value.__cause__ is None
    folder = make_source(tmp_path / "locked", {"English": "Smith\n"})
    listing = Path.iterdir

    def refused_for(path: Path):  # as for a folder of another user's without read permission (tests run as root)
        if path == folder:
            raise PermissionError(13, "Permission denied", str(path))
        return listing(path)

    monkeypatch.setattr(Path, "iterdir", refused_for)
    for step in (lambda: run(folder, tmp_path), lambda: source_fingerprint(folder)):
        with pytest.raises(NamelangError, match="^.*: cannot list this folder: Permission denied$") as info:
            step()
        assert info.value.file == str(folder)


def test_empty_folder_and_folder_without_txt_files(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NamelangError, match=r"no <Language>\.txt files") as info:
        run(empty, tmp_path)
    assert info.value.file == str(empty)
    other = make_source(tmp_path / "other", {})
    (other / "README.md").write_text("names go here\n")
    (other / "English.csv").write_text("Smith\n")
    with pytest.raises(NamelangError, match=r"no <Language>\.txt files"):
        run(other, tmp_path)


def test_only_empty_files(tmp_path):
    source = make_source(tmp_path / "names", {"English": b"", "French": b""})
    with pytest.raises(NamelangError, match="holds no names"):
        run(source, tmp_path)


def test_a_plain_file_is_not_a_source(tmp_path):
    path = tmp_path / "English.txt"
    path.write_text("Smith\n")
    with pytest.raises(NamelangError, match="neither a folder"):
        run(path, tmp_path)


# ---------------------------------------------------------------- archives


def tutorial_zip(files: dict[str, str]) -> bytes:
    members = {"data/eng-fra.txt": "not a name file\n"}  # the tutorial zip has other data beside names/
    members.update({f"data/names/{lang}.txt": text for lang, text in files.items()})
    return make_zip(members)


def test_zip_in_the_tutorial_layout(tmp_path):
    archive = tmp_path / "data.zip"
    archive.write_bytes(tutorial_zip({"English": "Smith\nJones\n", "Polish": "Ślusàrski\n"}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # its data/eng-fra.txt was said not read on every ingest of the default
        table = run(archive, tmp_path)
    rows = table.names.to_pylist()
    assert [(r["language"], r["name_ascii"], r["line_number"]) for r in rows] == [
        ("English", "Smith", 1), ("English", "Jones", 2), ("Polish", "Slusarski", 1)]
    assert rows[0]["source_file"] == f"{archive.resolve()}!data/names/English.txt"
    assert not (tmp_path / "data").exists()  # read in memory, nothing extracted


def test_zip_member_not_utf8_names_member_and_line(tmp_path):
    archive = tmp_path / "data.zip"
    archive.write_bytes(make_zip({"data/names/German.txt": b"Weber\nM\xfcller\n"}))
    with pytest.raises(NamelangError, match="not valid UTF-8") as info:
        run(archive, tmp_path)
    assert info.value.file == f"{archive.resolve()}!data/names/German.txt" and info.value.line == 2


def test_corrupt_zip(tmp_path):
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"PK\x03\x04 this is not really a zip file" * 10)
    with pytest.raises(NamelangError, match="not a readable zip") as info:
        run(garbage, tmp_path)
    assert info.value.file == str(garbage)
    truncated = tmp_path / "truncated.zip"
    whole = tutorial_zip({"English": "Smith\n" * 1000})
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(NamelangError, match="not a readable zip"):
        run(truncated, tmp_path)


def _with_header_fields(archive: bytes, *, flags_on: int = 0, flags_off: int = 0, method: int | None = None,
                       date: int | None = None) -> bytes:
    """The one-member `archive` with its headers' fields changed (local header and central directory
    alike), as other zip writers set them."""
    data = bytearray(archive)
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.index(signature) + flags_at  # flags, method, time, date follow one another
        flags = (int.from_bytes(data[at:at + 2], "little") | flags_on) & ~flags_off
        data[at:at + 2] = flags.to_bytes(2, "little")
        if method is not None:
            data[at + 2:at + 4] = method.to_bytes(2, "little")
        if date is not None:
            data[at + 6:at + 8] = date.to_bytes(2, "little")
    return bytes(data)


def test_zips_of_other_writers(tmp_path):
    """What `zip` on Linux, Windows Explorer and encrypting tools write: each read, or refused in one line
    naming the archive and its member (encrypted, Deflate64, damaged data gave tracebacks)."""
    one = make_zip({"names/Fran\u00e7ais.txt": "Dupont\n"})
    deflated = zlib.compress(b"Dupont\n")[2:-4]  # the member's data as zip's Deflate writes it
    assert deflated in one
    archive = tmp_path / "names.zip"
    # Info-ZIP writes UTF-8 names without the flag saying so: read as cp437, the language was "Fran\u251c\u00baais"
    archive.write_bytes(_with_header_fields(one, flags_off=0x800))
    assert set(run(archive, tmp_path).names.column("language").to_pylist()) == {"Fran\u00e7ais"}
    archive.write_bytes(_with_header_fields(one, date=0))  # a zeroed DOS date: no time, not a ValueError
    assert [f.modified_utc for f in ingest(DataConfig(source=str(archive), raw_dir=tmp_path / "raw")).files] == [None]
    for changed, problem in ((_with_header_fields(one, flags_on=0x1), "is encrypted"),
                             (_with_header_fields(one, method=9), "uses compression method 9"),
                             (one.replace(deflated, b"\xff" * len(deflated)), "is damaged")):
        archive.write_bytes(changed)
        with pytest.raises(NamelangError, match=problem) as info:
            run(archive, tmp_path)
        assert info.value.file == str(archive) and "names/Fran\u00e7ais.txt" in str(info.value)
        assert explained_by_input(info.value)


def test_zip_with_parent_directory_members_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(make_zip({"data/names/English.txt": "Smith\n",
                                  "data/names/../../../escaped.txt": "x\n"}))
    with pytest.raises(NamelangError, match="path traversal") as info:
        run(archive, tmp_path)
    assert info.value.file == str(archive) and "../" in str(info.value)
    assert not list(tmp_path.rglob("escaped.txt"))
    absolute = tmp_path / "absolute.zip"
    absolute.write_bytes(make_zip({"/etc/English.txt": "Smith\n"}))
    with pytest.raises(NamelangError, match="path traversal"):
        run(absolute, tmp_path)


def test_zip_with_a_symlink_member_is_refused(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("data/names/English.txt", "Smith\n")
        link = zipfile.ZipInfo("data/names/Scottish.txt")
        link.create_system = 3  # unix
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    archive = tmp_path / "links.zip"
    archive.write_bytes(buffer.getvalue())
    with pytest.raises(NamelangError, match="link in archive refused") as info:
        run(archive, tmp_path)
    assert "Scottish.txt" in str(info.value)


def test_oversize_zip_member_is_refused(tmp_path):
    archive = tmp_path / "big.zip"
    archive.write_bytes(tutorial_zip({"English": "Smith\n" * 100}))  # 600 bytes, compresses well
    with pytest.raises(NamelangError, match="over the 100-byte limit") as info:
        run(archive, tmp_path, max_member_bytes=100)
    assert "English.txt" in str(info.value)
    assert run(archive, tmp_path, max_member_bytes=600).names.num_rows == 100


def test_zip_sha256_is_checked(tmp_path):
    archive = tmp_path / "data.zip"
    archive.write_bytes(tutorial_zip({"English": "Smith\n"}))
    good = hashlib.sha256(archive.read_bytes()).hexdigest()
    with pytest.raises(NamelangError, match=f"SHA-256 mismatch: expected {'0' * 64}, got {good}"):
        run(archive, tmp_path, source_sha256="0" * 64)
    table = run(archive, tmp_path, source_sha256=good.upper())
    assert table.names.num_rows == 1
    assert table.provenance["ingest"]["source_sha256"] == good  # what --sha256 pins, recorded


def test_a_sha256_for_a_folder_is_an_error_not_ignored(tmp_path):
    source = make_source(tmp_path / "names", {"English": "Smith\n"})
    with pytest.raises(NamelangError, match="pins an archive or a download, and this source is a folder") as info:
        run(source, tmp_path, source_sha256="0" * 64)
    assert info.value.file == str(source)
    assert run(source, tmp_path).provenance["ingest"]["source_sha256"] is None  # each file has its own


# ---------------------------------------------------------------- downloads from a real local server


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404, "Not Found")
            return
        body, declared_length, *headers = route
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(declared_length))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)  # a body shorter than declared: the connection then just closes
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_server():
    """A real HTTP server on 127.0.0.1 (free port); `server.routes[path] = (body, content_length, *headers)`."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.routes = {}
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _no_proxy_for_loopback(monkeypatch):
    # environment settings, not a mock: a proxy configured on the machine must not intercept loopback
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


ZIP_FILES = {"English": "Smith\nJones\nSmith\n", "Scottish": "Smith\nMacDonald\n",
             "Russian": "Иванов\nIvanov\n"}


def test_download_success(http_server, tmp_path):
    server, base = http_server
    body = tutorial_zip(ZIP_FILES)
    server.routes["/tutorial/data.zip"] = (body, len(body))
    url = f"{base}/tutorial/data.zip"
    raw_dir = tmp_path / "raw"
    digest = hashlib.sha256(body).hexdigest()
    table = run(url, tmp_path, source_sha256=digest)
    assert table.provenance["ingest"]["source_uri"] == url
    assert table.provenance["ingest"]["source_sha256"] == digest
    assert [p.name for p in raw_dir.iterdir()] == ["data.zip"]
    assert (raw_dir / "data.zip").read_bytes() == body
    expected_lines = sum(len(reference_lines(t.encode())) for t in ZIP_FILES.values())
    assert table.quality["lines"] == expected_lines
    assert table.rejected.to_pylist()[0]["reason"] == "no_latin_letters"
    smith = [r for r in table.names.to_pylist() if r["name"] == "Smith"]
    assert len(smith) == 3 and {r["n_languages"] for r in smith} == {2}
    assert {f["path"].split("!")[-1] for f in table.provenance["files"]} == {
        f"data/names/{lang}.txt" for lang in ZIP_FILES}
    # without an expected hash it downloads again and still works
    assert run(url, tmp_path).names.num_rows == table.names.num_rows


def test_a_download_that_is_not_an_archive_says_where_it_came_from(http_server, tmp_path):
    server, base = http_server
    good = tutorial_zip(ZIP_FILES)
    server.routes["/data.zip"] = (good, len(good))
    run(f"{base}/data.zip", tmp_path)
    server.routes["/data.zip"] = (b"<html>moved</html>", 18)  # the next time: an error page, answered with 200
    with pytest.raises(NamelangError, match=f"not a readable zip archive \\(downloaded from {base}/data.zip\\)$"
                       ) as info:
        run(f"{base}/data.zip", tmp_path)
    assert info.value.file == str(tmp_path / "raw" / "data.zip.not-a-zip")  # the copy, kept for a look
    assert (tmp_path / "raw" / "data.zip.not-a-zip").read_bytes() == b"<html>moved</html>"
    assert (tmp_path / "raw" / "data.zip").read_bytes() == good  # the last good archive: not replaced by it


def test_a_url_is_recorded_without_its_password_or_token(http_server, tmp_path):
    """The provenance, the MLflow params and the model card are read by whoever reads the store: a
    presigned or password-carrying download URL was kept whole in each."""
    from pipeline.config import PipelineConfig, flat_params

    server, base = http_server
    body = tutorial_zip(ZIP_FILES)
    server.routes["/names.zip?token=tok123secret&dl=1"] = (body, len(body))
    url = base.replace("http://", "http://bob:hunter2pw@") + "/names.zip?token=tok123secret&dl=1"
    recorded = run(url, tmp_path).provenance["ingest"]["source_uri"]
    assert recorded == base.replace("http://", "http://***@") + "/names.zip?token=***&dl=***"
    params = flat_params(PipelineConfig.model_validate({"data": {"source": url}}))
    assert params["data.source"] == recorded
    assert flat_params(PipelineConfig.model_validate({"data": {"source": "data/names"}}))["data.source"] == "data/names"
    from pipeline.errors import recordable_url

    assert recordable_url("https://host/f.zip?ghp_SECRET123") == "https://host/f.zip?***"  # a bare token
    assert recordable_url("https://host/f.zip?a%26b=1#token=abc") == "https://host/f.zip?a%26b=***#***"
    assert recordable_url("https://host/f.zip") == "https://host/f.zip"


def test_the_flows_two_steps_record_the_url_not_the_copy(http_server, tmp_path):
    """The flow fetches (a retried, uncached step), then ingests the copy (a cached step): the
    provenance still names the URL, with the archive's hash and where its copy lies."""
    from pipeline.workflow import fetch_source, ingest_source

    server, base = http_server
    body = tutorial_zip(ZIP_FILES)
    server.routes["/data.zip"] = (body, len(body))
    config = DataConfig(source=f"{base}/data.zip", raw_dir=tmp_path / "raw")
    recorded = ingest_source(config, fetch_source(config)).run
    assert recorded["source_uri"] == f"{base}/data.zip"
    assert recorded["source_path"] == str((tmp_path / "raw" / "data.zip").resolve())
    assert recorded["source_sha256"] == hashlib.sha256(body).hexdigest()


def test_download_compressed_in_transit(http_server, tmp_path):
    """A server that gzips the transfer anyway: the file is the archive, and it is complete."""
    import gzip

    server, base = http_server
    body = tutorial_zip(ZIP_FILES)
    compressed = gzip.compress(body)
    server.routes["/data.zip"] = (compressed, len(compressed), ("Content-Encoding", "gzip"))
    table = run(f"{base}/data.zip", tmp_path, source_sha256=hashlib.sha256(body).hexdigest())
    assert (tmp_path / "raw" / "data.zip").read_bytes() == body
    assert table.quality["lines"] == sum(len(reference_lines(t.encode())) for t in ZIP_FILES.values())
    server.routes["/cut.zip"] = (compressed[:-10], len(compressed), ("Content-Encoding", "gzip"))
    with pytest.raises(NamelangError, match=r"download failed after \d+ bytes: "):
        run(f"{base}/cut.zip", tmp_path)
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["data.zip"]  # the good one only: no cut copy


def test_download_with_wrong_sha256_leaves_nothing(http_server, tmp_path):
    server, base = http_server
    body = tutorial_zip(ZIP_FILES)
    server.routes["/data.zip"] = (body, len(body))
    raw_dir = tmp_path / "raw"
    with pytest.raises(NamelangError, match="SHA-256 mismatch") as info:
        run(f"{base}/data.zip", tmp_path, source_sha256="ab" * 32)
    assert info.value.file == f"{base}/data.zip"
    assert hashlib.sha256(body).hexdigest() in str(info.value)
    assert_left_empty(raw_dir)  # neither the file nor a temp file


def test_download_that_breaks_midway_leaves_nothing(http_server, tmp_path):
    server, base = http_server
    body = tutorial_zip({"English": "".join(f"Name{i}\n" for i in range(20_000))})
    server.routes["/data.zip"] = (body[: len(body) // 2], len(body))
    raw_dir = tmp_path / "raw"
    with pytest.raises(NamelangError, match="download") as info:
        run(f"{base}/data.zip", tmp_path)
    assert info.value.file == f"{base}/data.zip"
    assert "\n" not in str(info.value)
    assert f"download failed after {len(body) // 2} bytes: " in str(info.value)  # not "after 0 bytes"
    assert_left_empty(raw_dir)


def test_download_http_404(http_server, tmp_path):
    _, base = http_server
    with pytest.raises(NamelangError, match="HTTP 404") as info:
        run(f"{base}/missing.zip", tmp_path)
    assert info.value.file == f"{base}/missing.zip"
    assert_left_empty(tmp_path / "raw")


def test_download_larger_than_the_limit_leaves_nothing(http_server, tmp_path):
    server, base = http_server
    body = tutorial_zip({"English": "".join(f"Name{i}\n" for i in range(20_000))})
    server.routes["/data.zip"] = (body, len(body))
    with pytest.raises(NamelangError, match="larger than the 1000-byte limit"):
        run(f"{base}/data.zip", tmp_path, max_download_bytes=1000)
    assert_left_empty(tmp_path / "raw")


def test_download_nobody_listening(tmp_path):
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(NamelangError, match="download failed") as caught:
        run(f"http://127.0.0.1:{port}/data.zip", tmp_path, download_timeout_s=5)
    assert_left_empty(tmp_path / "raw")
    # the outside world failed (httpx's error wraps httpcore's, which wraps the socket's): run logs
    # print the one line, no traceback
    assert explained_by_input(caught.value)


def test_a_bug_under_an_outside_failure_keeps_its_traceback():
    """A TypeError (our bug) met while handling an OSError, wrapped in a NamelangError: not explained
    by the input, so run logs keep the traceback; the same chain without the bug is one line."""
    def outside_failure(with_bug: bool) -> None:
        if not with_bug:
            raise OSError("disk full")
        try:
            raise TypeError("a bug in a cleanup")
        except TypeError:
            raise OSError("disk full")  # noqa: B904 - the bug is this OSError's context, as in real code

    def wrapped(with_bug: bool) -> NamelangError:
        try:
            try:
                outside_failure(with_bug)
            except OSError as exc:
                raise NamelangError("cannot write", "out.parquet") from exc
        except NamelangError as exc:
            return exc

    assert not explained_by_input(wrapped(with_bug=True))
    assert explained_by_input(wrapped(with_bug=False))


# ---------------------------------------------------------------- previous outputs survive failures


def test_failed_ingest_keeps_the_previous_table(shared_names, tmp_path):
    """`namelang ingest` into a folder holding a table: bad input fails clearly and touches nothing."""
    from typer.testing import CliRunner

    from flows.cli import app

    out = tmp_path / "out"
    assert CliRunner().invoke(app, ["ingest", "--source", str(shared_names), "--out", str(out)]).exit_code == 0
    before = snapshot(out)
    assert set(before) == {NAMES_FILE, REJECTED_FILE, QUALITY_JSON, QUALITY_MD}
    bad = make_source(tmp_path / "bad", {"English": b"Smith\n\xff\xfe\n"})
    result = CliRunner().invoke(app, ["ingest", "--source", str(bad), "--out", str(out)])
    assert result.exit_code == 2 and f"{bad / 'English.txt'}:2: " in result.output
    assert snapshot(out) == before


def test_a_write_that_fails_midway_changes_no_file(shared_names, tmp_path):
    out = tmp_path / "out"
    good = run(shared_names, tmp_path)
    write_names_table(good, out)
    before = snapshot(out)
    other = run(make_source(tmp_path / "other", {"English": "Smith\n"}), tmp_path)
    # a real table whose report cannot be serialised: the parquet files are written, then JSON fails
    broken = NamesTable(other.names, other.rejected, other.provenance, {**other.quality, "oops": object()})
    with pytest.raises(TypeError):
        write_names_table(broken, out)
    assert snapshot(out) == before  # no new parquet beside an old report, no temp files
    write_names_table(other, out)
    assert pq.read_table(out / NAMES_FILE).column("name").to_pylist() == ["Smith"]
    assert sorted(p.name for p in out.iterdir()) == sorted(before)
