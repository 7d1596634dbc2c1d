"""Reading names for batch prediction: text, CSV and Parquet, and bad input named by file and line."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.batch import iter_names
from pipeline.errors import NamelangError


def test_text_file_chunks_strip_bom_and_line_endings(tmp_path):
    path = tmp_path / "names.txt"
    path.write_bytes("\ufeffNakamura\r\nŚlusàrski\n\nRossi".encode())
    assert list(iter_names(path, chunk_size=2)) == [["Nakamura", "Ślusàrski"], ["", "Rossi"]]


def test_bad_utf8_names_its_own_line_far_into_the_file(tmp_path):
    path = tmp_path / "names.txt"
    path.write_bytes(b"Smith\n" * 20_000 + b"Mu\xffller\n" + b"Rossi\n" * 10)
    with pytest.raises(NamelangError, match="not valid UTF-8") as err:
        list(iter_names(path))
    assert str(err.value).startswith(f"{path}:20001:")


def test_csv_and_parquet_read_the_named_column(tmp_path):
    frame = pd.DataFrame({"id": [1, 2, 3], "name": ["Nakamura", "Rossi", "Smith"]})
    frame.to_csv(tmp_path / "n.csv", index=False)
    frame.to_parquet(tmp_path / "n.parquet")
    for path in (tmp_path / "n.csv", tmp_path / "n.parquet"):
        assert [n for chunk in iter_names(path, chunk_size=2) for n in chunk] == ["Nakamura", "Rossi", "Smith"]
        with pytest.raises(NamelangError, match="no column 'surname'"):
            list(iter_names(path, column="surname"))


def test_a_blank_line_is_an_empty_name_in_a_one_column_csv_as_in_text(tmp_path):
    """Rows keep their input's numbering: a blank line is a row (an empty name) in a text file and
    in a one-column CSV; with more columns a blank line is no record, and CSV readers skip it."""
    (tmp_path / "one.csv").write_text("name\nHinton\n\nNakamura\n")
    (tmp_path / "one.txt").write_text("Hinton\n\nNakamura\n")
    (tmp_path / "two.csv").write_text("id,name\n1,Hinton\n\n2,Nakamura\n")
    read = {p: [n for chunk in iter_names(tmp_path / p) for n in chunk] for p in ("one.csv", "one.txt", "two.csv")}
    assert read == {"one.csv": ["Hinton", "", "Nakamura"], "one.txt": ["Hinton", "", "Nakamura"],
                    "two.csv": ["Hinton", "Nakamura"]}
    (tmp_path / "late.csv").write_bytes(b"\xef\xbb\xbf\r\n\nname\r\nHinton\r\n\r\nNakamura\r\n")  # blank lines first
    assert [n for chunk in iter_names(tmp_path / "late.csv") for n in chunk] == ["Hinton", "", "Nakamura"]


@pytest.mark.parametrize(("body", "line", "problem"), [
    (b"id,name\n1,Smith\n2,Mu\xffller\n3,Rossi\n", 3, "not valid UTF-8 (byte 0xff: invalid start byte)"),
    (b"id,name\n1,Smith\n\n2,Rossi,extra\n3,Lee\n", 4, "expected 2 fields as in the header, found 3"),
])
def test_bad_csv_names_its_line(tmp_path, body, line, problem):
    path = tmp_path / "names.csv"
    path.write_bytes(body)
    with pytest.raises(NamelangError) as err:
        list(iter_names(path))
    assert str(err.value) == f"{path}:{line}: {problem}"


def test_csv_other_columns_do_not_matter(tmp_path):
    """Only the names column is read: an id column that turns alphanumeric after the first
    block of rows (where its type was guessed) must not fail the file."""
    path = tmp_path / "names.csv"
    rows = [f"{i},Name{i}" for i in range(400_000)] + ["A1,Rossi"]
    path.write_text("id,name\n" + "\n".join(rows) + "\n")
    names = [n for chunk in iter_names(path) for n in chunk]
    assert len(names) == 400_001 and names[-1] == "Rossi"
