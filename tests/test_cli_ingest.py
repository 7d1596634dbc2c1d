"""`namelang ingest`: what a user sees, in-process (CliRunner) and as a real command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from typer.testing import CliRunner

from flows.cli import app
from tests.support import reference_ascii

runner = CliRunner()


def expected_counts(folder: Path) -> dict:
    """Lines, languages and duplicate lines (same folded name, same language) from the files, with pandas."""
    frames = []
    for path in sorted(folder.glob("*.txt")):
        lines = path.read_bytes().decode("utf-8").split("\n")
        if lines[-1] == "":
            lines.pop()
        frames.append(pd.DataFrame({"name": [reference_ascii(x.strip()) for x in lines], "language": path.stem}))
    df = pd.concat(frames, ignore_index=True)
    kept = df[df["name"] != ""]
    return {"lines": len(df), "languages": df["language"].nunique(),
            "duplicates": int(kept.duplicated(["language", "name"]).sum())}


def test_ingest_shared_data(shared_names, tmp_path):
    out = tmp_path / "processed"
    result = runner.invoke(app, ["ingest", "--source", str(shared_names), "--out", str(out),
                                 "--raw-dir", str(tmp_path / "raw")])
    assert result.exit_code == 0, result.output
    expected = expected_counts(shared_names)
    stdout = result.stdout
    assert f"ingested {expected['lines']:,} lines from {shared_names}" in stdout  # 20,074: as people read it
    rows = pq.read_metadata(out / "names.parquet").num_rows
    assert f"rows kept: {rows:,} in {expected['languages']} languages" in stdout
    assert f"{expected['duplicates']:,} duplicate lines" in stdout
    rejected = pq.read_metadata(out / "rejected.parquet").num_rows
    assert re.search(rf"rejected: {rejected}\b", stdout)
    assert rows + rejected == expected["lines"]
    provenance = json.loads(pq.read_schema(out / "names.parquet").metadata[b"namelang.provenance"])
    assert f"table: {out / 'names.parquet'} (sha256 {provenance['content_sha256'][:12]})" in stdout
    assert f"report: {out / 'quality.md'}" in stdout
    assert result.stderr == ""


def test_ingest_bad_utf8_is_one_error_line(tmp_path):
    source = tmp_path / "names"
    source.mkdir()
    (source / "English.txt").write_text("Smith\nJones\n")
    (source / "German.txt").write_bytes(b"Weber\nSchmidt\nM\xfcller\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["ingest", "--source", str(source), "--out", str(out)])
    assert result.exit_code != 0
    german = (source / "German.txt").resolve()
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"error: {german}:3: not valid UTF-8")
    assert "Traceback" not in result.output
    assert not out.exists()


def test_ingest_of_one_language_says_so_in_the_singular(tmp_path):
    source = tmp_path / "names"
    source.mkdir()
    (source / "English.txt").write_text("Smith\nJones\nSmith\n")
    result = runner.invoke(app, ["ingest", "--source", str(source), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "rows kept: 3 in 1 language (2 distinct names, 1 duplicate line)" in result.stdout, result.stdout


def test_ingest_missing_source_and_empty_folder(tmp_path):
    missing = tmp_path / "missing"
    result = runner.invoke(app, ["ingest", "--source", str(missing), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert result.stderr == f"error: {missing}: source does not exist\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["ingest", "--source", str(empty), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert result.stderr.startswith(f"error: {empty}: no <Language>.txt files")
    assert len(result.stderr.splitlines()) == 1
    result = runner.invoke(app, ["ingest", "--source", "http://[::1/data.zip", "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert result.stderr == "error: http://[::1/data.zip: not a valid URL: Invalid port: ':1'\n"  # was a traceback


def test_a_malformed_sha256_is_refused_before_reading_and_named_by_its_option(tmp_path):
    for bad in ("deadbeef", "z" * 64):
        result = runner.invoke(app, ["ingest", "--source", str(tmp_path), "--sha256", bad,
                                     "--out", str(tmp_path / "out")])
        assert result.exit_code == 2
        assert result.stderr.strip() == "error: bad value: --sha256: expected 64 hex digits (0-9, a-f)"
    assert not (tmp_path / "out").exists()


def test_failed_ingest_leaves_the_previous_table(shared_names, tmp_path):
    out = tmp_path / "out"
    assert runner.invoke(app, ["ingest", "--source", str(shared_names), "--out", str(out)]).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip at all")
    result = runner.invoke(app, ["ingest", "--source", str(bad), "--out", str(out)])
    assert result.exit_code != 0 and result.stderr.startswith(f"error: {bad}: not a readable zip archive")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def namelang_command() -> list[str]:
    """The installed console script beside this Python, else the module behind it."""
    script = Path(sys.executable).parent / "namelang"
    return [str(script)] if script.exists() else [sys.executable, "-m", "flows.cli"]


def test_real_command_success_and_error(shared_names, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "out"
    done = subprocess.run([*namelang_command(), "ingest", "--source", str(shared_names), "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    expected = expected_counts(shared_names)
    assert f"ingested {expected['lines']:,} lines" in done.stdout
    assert f"table: {out / 'names.parquet'}" in done.stdout
    assert pq.read_metadata(out / "names.parquet").num_rows > 0
    assert not (tmp_path / "data").exists()  # nothing written to the default folders

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "French.txt").write_bytes(b"Dupont\r\n\r\n\xe9lise\r\n")
    done = subprocess.run([sys.executable, "-m", "flows.cli", "ingest", "--source", str(bad),
                           "--out", str(tmp_path / "out2")],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert done.returncode != 0
    assert done.stderr.startswith(f"error: {(bad / 'French.txt').resolve()}:3: not valid UTF-8")
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    assert done.stdout == ""


def test_an_empty_language_file_is_reported_not_silently_dropped(tmp_path):
    """A `Klingon.txt` with nothing in it: the other files are ingested, and the user is told, in one
    line and in the quality report, that no Klingon names came from it."""
    folder = tmp_path / "names"
    folder.mkdir()
    (folder / "English.txt").write_text("Smith\nJones\n", encoding="utf-8")
    (folder / "Klingon.txt").write_bytes(b"")
    out = tmp_path / "out"
    # the console script users run, whose entry point must install the one-line warning format
    done = subprocess.run([*namelang_command(), "ingest", "--source", str(folder), "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    empty = (folder / "Klingon.txt").resolve()
    assert done.stderr == f"warning: {empty}: empty file: no Klingon names from it\n"
    quality = json.loads((out / "quality.json").read_text())
    assert quality["empty_files"] == [str(empty)]
    assert f"empty files, no names from them**: {empty}" in (out / "quality.md").read_text()


def test_a_language_whose_every_line_is_rejected_is_reported_not_counted(tmp_path):
    """German holding only a number, Greek in Greek script: no Latin letters, neither is in the
    table, and the counts said 4 languages."""
    folder = tmp_path / "names"
    folder.mkdir()
    (folder / "English.txt").write_text("Smith\nJones\n", encoding="utf-8")
    (folder / "French.txt").write_text("Dupont\n", encoding="utf-8")
    (folder / "German.txt").write_bytes(b"12345\n")  # a slip of the keyboard for the whole file
    (folder / "Greek.txt").write_text("Παπαδόπουλος\nΓεωργίου\n", encoding="utf-8")
    out = tmp_path / "out"
    done = subprocess.run([*namelang_command(), "ingest", "--source", str(folder), "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "warning: every line of German was rejected (1; see rejected.parquet): no German names in the table",
        "warning: every line of Greek was rejected (2; see rejected.parquet): no Greek names in the table"]
    assert "rows kept: 3 in 2 languages" in done.stdout, done.stdout
    quality = json.loads((out / "quality.json").read_text())
    assert quality["languages"] == 2 and quality["languages_all_rejected"] == ["German", "Greek"]
    assert "every line rejected, no names from them**: German, Greek" in (out / "quality.md").read_text()
    provenance = json.loads(pq.read_schema(out / "names.parquet").metadata[b"namelang.provenance"])
    assert provenance["counts"]["languages"] == 2


def test_ingest_where_every_line_is_rejected_fails_and_writes_nothing(tmp_path):
    folder = tmp_path / "names"
    folder.mkdir()
    (folder / "Russian.txt").write_text("Иванов\n\nПетров\n", encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["ingest", "--source", str(folder), "--out", str(out)])
    assert result.exit_code == 2
    assert re.search(r"Russian\.txt:1: no usable names: all 3 lines were rejected", result.output)
    assert not (out / "names.parquet").exists()


def test_an_error_line_is_the_first_line_of_a_message_or_the_exceptions_type():
    from pipeline.errors import first_line

    assert first_line(RuntimeError("\n  \nstore locked\nSQL: UPDATE ...")) == "store locked"
    assert first_line(KeyError()) == "KeyError"  # never an empty "cannot load model: "


def test_a_typed_error_line_names_the_type_once():
    from pipeline.errors import typed_first_line

    assert typed_first_line(KeyError("state")) == "KeyError: 'state'"
    assert typed_first_line(OSError("disk full\nerrno 28")) == "OSError: disk full"
    assert typed_first_line(KeyError()) == "KeyError"  # not "KeyError: KeyError"


def test_help_shows_no_value_for_a_flag():
    """typer 0.29 showed `--json <bool>` and `--help <bool>`, as if they took a value (`--json true` would
    then predict the name "true"); options that take one keep their type."""
    commands = [[], *([command.name or command.callback.__name__] for command in app.registered_commands
                      if not command.hidden)]
    assert len(commands) == 8
    for command in commands:
        result = runner.invoke(app, [*command, "--help"], terminal_width=120)
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.output, (command, result.output)
        assert re.search(r"--help\s+Show this message", result.output), result.output
    predict_help = runner.invoke(app, ["predict", "--help"], terminal_width=120).output
    assert re.search(r"--json\s+Machine-readable output", predict_help) and "<int range>" in predict_help


def test_version_names_namelang_and_the_libraries_that_shape_its_results():
    """What a bug report needs, from the installed packages, without a command's work (or a traceback)."""
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == (f"namelang {version('namelang')} (torch {version('torch')}, mlflow {version('mlflow')}, "
                             f"prefect {version('prefect')}; Python {sys.version.split()[0]})\n")
    assert runner.invoke(app, ["--version", "predict", "Hinton"]).output == result.output  # eager: nothing runs
    assert re.search(r"--version\s+Print the versions", runner.invoke(app, ["--help"], terminal_width=120).output)

def test_a_configuration_file_saved_with_a_bom_is_read(tmp_path):
    from flows.cli import _training_config

    config_file = tmp_path / "settings.json"
    config_file.write_text('{"train": {"epochs": 3}}', encoding="utf-8-sig")  # as Notepad saves it
    assert _training_config(config_file, {}).train.epochs == 3
