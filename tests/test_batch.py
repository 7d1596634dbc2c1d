"""Reading names for batch prediction: text, CSV and Parquet, and bad input named by file and line."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from pipeline.batch import iter_names
from pipeline.errors import NamelangError, NamelangWarning


def test_text_file_chunks_strip_bom_and_line_endings(tmp_path):
    path = tmp_path / "names.txt"
    path.write_bytes("\ufeffNakamura\r\nŚlusàrski\n\nRossi".encode())
    assert list(iter_names(path, chunk_size=2)) == [["Nakamura", "Ślusàrski"], ["", "Rossi"]]
    # a lone CR ends a line too (an old Mac's file), as ingest reads it: "Rossi\rSmith" was one name
    path.write_bytes("\ufeffRossi\rSmith\r\rŚlusàrski\r\nLee\r".encode())
    assert list(iter_names(path, chunk_size=10)) == [["Rossi", "Smith", "", "Ślusàrski", "Lee"]]
    path.write_bytes(b"Rossi\rSmith\rMu\xffller\n")
    with pytest.raises(NamelangError, match="not valid UTF-8") as err:
        list(iter_names(path))
    assert str(err.value).startswith(f"{path}:3:")  # the line ingest would name


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
    # an old Mac's lines, ended by a lone CR: its blank first line was taken for the header (a traceback)
    (tmp_path / "mac.csv").write_bytes(b"\r\rname\rHinton\r\rNakamura\r")
    assert [n for chunk in iter_names(tmp_path / "mac.csv") for n in chunk] == ["Hinton", "", "Nakamura"]


@pytest.mark.parametrize(("body", "line", "problem"), [
    (b"id,name\n1,Smith\n2,Mu\xffller\n3,Rossi\n", 3, "not valid UTF-8 (byte 0xff: invalid start byte)"),
    (b"id,name\n1,Smith\n\n2,Rossi,extra\n3,Lee\n", 4, "expected 2 fields as in the header, found 3"),
    # a header that is not UTF-8 (a traceback before): Latin-1, and the UTF-16 of Excel's "Unicode text"
    ("n\u00e4me\nM\u00fcller\n".encode("latin-1"), 1,
     "header not valid UTF-8 (byte 0xe4: invalid continuation byte); save it as UTF-8"),
    ("name\nHinton\n".encode("utf-16"), 1,
     "header not valid UTF-8 (byte 0xff: invalid start byte; the file is UTF-16); save it as UTF-8"),
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


def test_a_line_break_quoted_in_another_column_is_read_at_any_size(tmp_path):
    """An address column with a quoted line break in every row: a file over one read block (4 MB) was
    cut inside a quote and refused ("Expected 2 columns, got 1"), one under it read."""
    path = tmp_path / "addresses.csv"
    rows = [f'Name{i},"{i} Main Street\nApt {i}"' for i in range(150_000)]  # about 6 MB
    path.write_text("name,address\n" + "\n".join(rows) + "\n")
    names = [n for chunk in iter_names(path) for n in chunk]
    assert len(names) == 150_000 and names[-1] == "Name149999"


def test_an_unclosed_quote_is_named_not_read_as_one_long_name(tmp_path):
    """A stray quote made Arrow read the rest of a one-column file as one name (2 rows instead of
    30,002, exit 0), and Python's csv module fail on its field size limit with a traceback."""
    tail = "Sato\n" * 30_000
    (tmp_path / "one.csv").write_text('name\nAbe\n"Hinton\n' + tail)
    (tmp_path / "two.csv").write_text('name,id\nAbe,0\n"Hinton,1\n' + tail.replace("\n", ",2\n"))
    for path in (tmp_path / "one.csv", tmp_path / "two.csv"):
        with pytest.raises(NamelangError) as err:
            list(iter_names(path))
        assert str(err.value).startswith(f"{path}:3: "), str(err.value)
        assert "unclosed quote?" in str(err.value)


def test_a_csv_header_wider_than_the_first_block_is_read(tmp_path):
    header = ",".join(f"column_{i}" for i in range(12_000)) + ",name"  # about 140 KB
    path = tmp_path / "wide.csv"
    path.write_text(header + "\n" + "," * 12_000 + "Nakamura\n")
    assert list(iter_names(path)) == [["Nakamura"]]


@pytest.mark.parametrize(("kind", "category"), [("string", False), ("binary", False), ("large_binary", False),
                                              ("string", True), ("binary", True)])
def test_parquet_names_that_are_not_utf8_are_named_by_row(tmp_path, kind, category):
    """Text columns and byte columns alike, dictionary-encoded too (pandas' category); the row counts
    from 0 across chunks, as the output's `row`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    raw = pa.array([b"Hinton", b"Nakamura", b"Sm\xffith"], pa.binary())
    column = raw.view(pa.string()) if kind == "string" else raw.cast(getattr(pa, kind)())
    column = column.dictionary_encode() if category else column
    path = tmp_path / "names.parquet"
    pq.write_table(pa.table({"name": column}), path)
    with pytest.raises(NamelangError) as err:
        list(iter_names(path, chunk_size=2))
    assert str(err.value) == f"{path}: column 'name', row 2: not valid UTF-8 (byte 0xff: invalid start byte)"


def test_a_column_asked_of_a_text_file_is_refused_not_ignored(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("Hinton\n", encoding="utf-8")
    assert list(iter_names(path, column="name")) == [["Hinton"]]
    with pytest.raises(NamelangError, match="no columns: column 'surname' applies to Parquet and CSV only"):
        list(iter_names(path, column="surname"))


def test_parquet_names_stored_as_bytes_are_read_as_utf8_text(tmp_path):
    """Names written as a binary column (as some writers store text) are names, not "b'Smith'"."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "names.parquet"
    names = pa.array([b"Hinton", "Jäger".encode(), None, b"Nakamura"], pa.binary())
    for column in (names, names.dictionary_encode()):
        pq.write_table(pa.table({"name": column}), path)
        assert list(iter_names(path, chunk_size=3)) == [["Hinton", "Jäger", None], ["Nakamura"]]


def test_an_output_that_cannot_be_written_is_named_before_any_work(tmp_path):
    from pipeline.atomic import atomic_path

    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    for target, problem in ((tmp_path / "folder", "cannot write this file: a folder has its name"),
                            (tmp_path / "file" / "out.parquet", "cannot write this file (File exists")):
        worked = []
        with pytest.raises(NamelangError) as err, atomic_path(target):
            worked.append(1)
        assert str(err.value).startswith(f"{target}: {problem}"), str(err.value)
        assert not worked
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder"]
    assert not list((tmp_path / "folder").iterdir())


def test_a_failed_write_leaves_no_folder_it_made(tmp_path):
    """A batch whose input failed left the output's new folders behind, empty."""
    from pipeline.atomic import atomic_path

    (tmp_path / "kept").mkdir()
    target = tmp_path / "kept" / "new" / "deeper" / "out.parquet"
    with pytest.raises(NamelangError, match="input file not found"), atomic_path(target):
        list(iter_names(tmp_path / "missing.csv"))
    assert list(tmp_path.iterdir()) == [tmp_path / "kept"] and not list((tmp_path / "kept").iterdir())
    with atomic_path(target) as tmp:  # a write that succeeds keeps them, of course
        tmp.write_text("done")
    assert target.read_text() == "done"


def test_a_long_file_name_is_written_and_a_failed_temp_file_leaves_nothing(tmp_path, monkeypatch):
    """The temp file's name added some 30 bytes to the target's: a valid name of 230 bytes could not be
    written at all, and the folders made for it stayed; a file system that keeps no modes (vfat) refused
    the temp file's chmod with a traceback, and the temp file stayed."""
    import os

    from pipeline import atomic
    from pipeline.atomic import atomic_paths, write_text_atomic

    for name in ("x" * 250 + ".csv", "€" * 83 + ".csv"):  # 254 and 253 bytes: a cut letter stays its bytes
        target = write_text_atomic(tmp_path / "new" / "deeper" / name, "whole")
        assert target.read_text() == "whole" and name in os.listdir(target.parent)
        with atomic_paths({"a": target}) as temps:  # and the old file kept aside meanwhile
            temps["a"].write_text("again")
        assert target.read_text() == "again"
    assert sorted(os.listdir(target.parent)) == ["x" * 250 + ".csv", "€" * 83 + ".csv"]  # no temp file left
    fails_made = tmp_path / "fails"
    fails_made.mkdir()
    with pytest.raises(NamelangError, match="cannot write this file"):  # 256 bytes: too long for any file
        write_text_atomic(fails_made / "new" / "deeper" / ("x" * 256), "whole")
    assert not list(fails_made.iterdir())
    with pytest.raises(NamelangError, match="cannot write this file"):  # in a folder that is there: the same
        write_text_atomic(fails_made / ("x" * 256), "whole")

    def no_modes(path, mode):
        raise PermissionError(1, "Operation not permitted", str(path))

    monkeypatch.setattr(atomic.os, "chmod", no_modes)  # as a vfat mount without `quiet` answers
    write_text_atomic(fails_made / "out.txt", "written all the same")
    assert [p.name for p in fails_made.iterdir()] == ["out.txt"]


def test_files_written_together_replace_theirs_together_or_not_at_all(tmp_path):
    """The names table and its reports: one that could not replace its old file (made read-only, a
    folder put there) left the reports already replaced new and the table old."""
    from pipeline.atomic import atomic_paths

    targets = {key: tmp_path / f"{key}.txt" for key in ("table", "report", "summary", "notes")}
    for key in ("table", "report", "notes"):
        targets[key].write_text("old")  # the summary is new this time
    with pytest.raises(NamelangError, match="cannot write this file") as err, atomic_paths(targets) as temps:
        for temp in temps.values():
            temp.write_text("new")
        targets["report"].unlink()  # meanwhile another program puts a folder in its place
        (targets["report"] / "inside").mkdir(parents=True)
    assert str(targets["report"]) in str(err.value)
    # replaced last first: the notes and the summary went in, then the report failed; both are undone
    assert targets["table"].read_text() == "old" and targets["notes"].read_text() == "old"
    assert not targets["summary"].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "report.txt", "table.txt"]  # no temp file
    (targets["report"] / "inside").rmdir()
    targets["report"].rmdir()
    with atomic_paths(targets) as temps:
        for temp in temps.values():
            temp.write_text("new")
    assert all(path.read_text() == "new" for path in targets.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in targets.values())


def test_two_writers_of_one_folder_replace_their_files_in_turn(tmp_path):
    """Two trainings of different data at once both replaced data/processed's four files one by one: one's
    table could end beside the other's reports. The replacing waits while another process replaces there."""
    import fcntl
    import os
    import threading

    from pipeline.atomic import atomic_paths

    targets = {key: tmp_path / f"{key}.txt" for key in ("table", "report")}
    for path in targets.values():
        path.write_text("old")

    written = threading.Event()

    def write_new() -> None:
        with atomic_paths(targets) as temps:
            for temp in temps.values():
                temp.write_text("new")
            written.set()  # all written: what is left is the replacing

    other = os.open(tmp_path, os.O_RDONLY)  # another writer, replacing there now
    fcntl.flock(other, fcntl.LOCK_EX)
    writer = threading.Thread(target=write_new, daemon=True)
    try:
        writer.start()
        assert written.wait(timeout=30)
        writer.join(timeout=1)  # time enough to replace two files, had it not waited its turn
        assert writer.is_alive() and [p.read_text() for p in targets.values()] == ["old", "old"]
    finally:
        os.close(other)
    writer.join(timeout=10)
    assert not writer.is_alive() and [p.read_text() for p in targets.values()] == ["new", "new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.txt", "table.txt"]  # and no lock file stays


# A replacement that fails, then a put-back the file system refuses: an audit hook (in a process of its own,
# since one cannot be removed) raises in os.replace itself, as a file system's EACCES or EIO would
_PUT_BACK_REFUSED = """
import sys, warnings
from pathlib import Path

from pipeline.atomic import atomic_paths
from pipeline.errors import NamelangError

folder = Path(sys.argv[1])
targets = {key: folder / f"{key}.txt" for key in ("table", "report", "notes")}


def refuse_putting_back(event, args):
    if event == "os.rename" and str(args[0]).endswith("old.tmp") and Path(args[1]).name == "notes.txt":
        raise PermissionError(13, "Permission denied")


sys.addaudithook(refuse_putting_back)
with warnings.catch_warnings(record=True) as said:
    warnings.simplefilter("always")
    try:
        with atomic_paths(targets) as temps:
            for temp in temps.values():
                temp.write_text("new")
            targets["report"].unlink()  # a folder put in its place: replacing it fails
            (targets["report"] / "inside").mkdir(parents=True)
    except NamelangError as exc:
        print("error:", exc)
for warning in said:
    print("warning:", warning.message)
"""


def test_an_old_file_that_cannot_be_put_back_is_kept_aside_and_said(tmp_path):
    import subprocess
    import sys

    for key in ("table", "report", "notes"):
        (tmp_path / f"{key}.txt").write_text(f"old {key}")
    done = subprocess.run([sys.executable, "-c", _PUT_BACK_REFUSED, str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    [kept] = tmp_path.glob(".notes.txt.*old.tmp")  # the old notes, not deleted with the other set-aside copies
    assert kept.read_text() == "old notes" and (tmp_path / "notes.txt").read_text() == "new"
    assert (tmp_path / "table.txt").read_text() == "old table"  # not yet replaced: nothing to put back
    lines = done.stdout.splitlines()
    assert lines[0].startswith("error: ") and "report.txt" in lines[0]
    assert lines[1:] == [f"warning: {tmp_path / 'notes.txt'}: could not put the old file back (Permission denied); "
                         f"it is kept as {kept}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept.name, "notes.txt", "report.txt", "table.txt"]


# Writes each kind of output past a file-size limit, which fails a write as a full disk does (EFBIG, not ENOSPC)
_WRITES_PAST_A_SIZE_LIMIT = """
import resource, signal, sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.atomic import atomic_path, atomic_paths, write_text_atomic
from pipeline.errors import NamelangError
from pipeline.torch_files import save_torch_file


def parquet(target):
    with atomic_path(target) as tmp:
        pq.write_table(pa.table({"x": list(range(100_000))}), tmp)


def together(target):  # a table and its report, as write_names_table writes them: the table is too large
    with atomic_paths({"table": target, "report": target.with_suffix(".md")}) as temps:
        temps["table"].write_text("x" * 100_000)
        temps["report"].write_text("a report")


signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails, not the process
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
folder = Path(sys.argv[1])
for name, write in (("t.parquet", parquet), ("t.pt", lambda t: save_torch_file({"x": torch.zeros(100_000)}, t)),
                    ("t.txt", lambda t: write_text_atomic(t, "x" * 100_000)), ("u.txt", together)):
    try:
        write(folder / name)
    except NamelangError as exc:
        print(exc)
"""


def test_a_write_that_runs_out_of_room_is_named_and_the_old_file_kept(tmp_path):
    """A full disk gave tracebacks: Arrow's OSError, Python's, and torch's "unexpected pos 704 vs 598"
    (a RuntimeError, no errno)."""
    import subprocess
    import sys

    from pipeline.atomic import write_text_atomic

    names = ["t.parquet", "t.pt", "t.txt", "u.md", "u.txt"]
    for name in names:
        write_text_atomic(tmp_path / name, "the old one")
    done = subprocess.run([sys.executable, "-c", _WRITES_PAST_A_SIZE_LIMIT, str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{tmp_path / name}: cannot write this file (File too large)"
                                        for name in names[:3]] + [
        f"{tmp_path}: cannot write u.txt, u.md (File too large)"]  # files written together: not the report alone
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # no temp file left
    assert all((tmp_path / name).read_text() == "the old one" for name in names)


def test_a_temp_file_a_killed_writer_left_is_deleted_by_the_next_write_and_a_live_ones_is_not(tmp_path):
    """SIGKILL runs no cleanup: each killed `batch` or training run left its `.<output>.*.tmp` (a
    70 MB checkpoint, say) for good. Only a dead writer's, on this host, over a minute old, and a
    regular file, is deleted."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from pipeline.atomic import _HOST, ABANDONED_AFTER_S, write_text_atomic

    target = tmp_path / "predictions.parquet"
    writer = ("import sys, time; from pipeline import liveness\n"
              "if len(sys.argv) > 2: liveness.pid_namespace = lambda: sys.argv[2]  # as a container sees it\n"
              "from pipeline.atomic import atomic_path\n"
              "with atomic_path(sys.argv[1]) as tmp:\n"
              "    tmp.write_text('half'); print(tmp, flush=True); time.sleep(60)\n")
    procs: list[subprocess.Popen] = []

    def start(*namespace: str) -> Path:
        procs.append(subprocess.Popen([sys.executable, "-c", writer, str(target), *namespace], stdout=subprocess.PIPE,
                                      text=True))
        return Path(procs[-1].stdout.readline().strip())

    try:
        # the last: a writer in another pid namespace (a container of the same host name), whose pid means
        # nothing here: its writers were taken for dead
        killed_old, killed_new, live, other_namespace = start(), start(), start(), start("4:4026532999")
        for proc in (*procs[:2], procs[3]):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        dead_pid = procs[0].pid
        other_host = tmp_path / f".{target.name}.another-host.{dead_pid}.abcdefgh.tmp"
        other_host.write_text("half")
        pipe = tmp_path / f".{target.name}.{_HOST}.{dead_pid}.fifo1234.tmp"
        os.mkfifo(pipe)  # opening it would wait for ever
        old = time.time() - ABANDONED_AFTER_S - 5
        for path in (killed_old, live, other_host, pipe, other_namespace):
            os.utime(path, (old, old))
        with pytest.warns(NamelangWarning) as said:
            write_text_atomic(target, "whole")
        assert [str(w.message) for w in said] == [f"deleted {killed_old}: a temp file that a killed writer left"]
        assert target.read_text() == "whole"
        assert not killed_old.exists()
        assert killed_new.exists()  # under a minute old: left
        assert live.exists()  # its writer is still at work
        assert other_host.exists() and pipe.exists()  # a process id elsewhere means nothing here; not a file
        assert other_namespace.exists()  # nor in another pid namespace
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
            proc.stdout.close()


def test_a_temporary_folder_a_killed_process_left_is_removed_by_the_next(tmp_path, monkeypatch):
    """`namelang serve` SIGKILLed (or a command killed while loading a tracking server's model) left its
    download folder, 20 MB, in the temporary folder for good."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from pipeline.atomic import ABANDONED_AFTER_S, scratch_folder

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    holder = ("import sys, time; from pipeline.atomic import scratch_folder\n"
              "with scratch_folder('namelang-serve-') as folder:\n"
              "    open(folder + '/model.pt', 'w').write('weights'); print(folder, flush=True); time.sleep(60)\n")
    procs = [subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "TMPDIR": str(tmp_path)}) for _ in range(2)]
    try:
        killed, live = (Path(proc.stdout.readline().strip()) for proc in procs)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        other = tmp_path / "namelang-serve-another.123.abcdefgh"  # not from here: its pid means nothing
        other.mkdir()
        old = time.time() - ABANDONED_AFTER_S - 5
        for folder in (killed, live, other):
            os.utime(folder, (old, old))
        with scratch_folder("namelang-serve-") as mine:
            assert Path(mine).parent == tmp_path and Path(mine).is_dir()
        assert not killed.exists() and live.exists() and other.exists() and not Path(mine).exists()
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
            proc.stdout.close()


@pytest.mark.parametrize("chunk_size", [0, -5])
def test_a_chunk_size_below_one_is_refused_for_every_input_kind(tmp_path, chunk_size):
    """range() refused 0 in its own words, pyarrow too, and a CSV of names read as "no names"."""
    for name, content in (("names.txt", "Hinton\n"), ("names.csv", "name\nHinton\n")):
        path = tmp_path / name
        path.write_text(content, encoding="utf-8")
        with pytest.raises(ValueError, match=f"chunk_size must be at least 1, got {chunk_size}"):
            next(iter_names(path, chunk_size=chunk_size))
    pd.DataFrame({"name": ["Hinton"]}).to_parquet(tmp_path / "names.parquet")
    with pytest.raises(ValueError, match="chunk_size must be at least 1"):
        next(iter_names(tmp_path / "names.parquet", chunk_size=chunk_size))


def test_two_columns_of_the_names_column_name_are_refused_not_guessed(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv = tmp_path / "names.csv"
    csv.write_text("name,id,name\nHinton,1,Nakamura\n", encoding="utf-8")
    parquet = tmp_path / "names.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array(["Hinton"]), pa.array(["Nakamura"])], names=["name", "name"]),
                   parquet)
    for path in (csv, parquet):
        with pytest.raises(NamelangError, match=f"^{path}: 2 columns are named 'name': which holds the names"):
            next(iter_names(path))
    assert next(iter_names(csv, column="id")) == ["1"]


def test_an_output_not_named_parquet_is_refused_before_any_work(tmp_path):
    """`--out names.csv` wrote Parquet under a CSV name, which a CSV reader then choked on."""
    from pipeline.batch import predict_file

    names = tmp_path / "names.txt"
    names.write_text("Hinton\n", encoding="utf-8")
    (tmp_path / "folder").mkdir()
    for out, problem in (("out.csv", "written as Parquet: give it a name ending in .parquet, not 'out.csv'"),
                         ("out", "not 'out'"), (".parquet", "not '.parquet'"),
                         ("folder", "cannot write this file: a folder has its name"),  # said before the name
                         ("names.txt", "the output would replace the input file")):
        with pytest.raises(NamelangError, match=re.escape(problem)) as err:
            predict_file(None, names, tmp_path / out, "1")  # refused before the model is used
        assert str(err.value).startswith(str(tmp_path / out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "names.txt"]
    assert not list((tmp_path / "folder").iterdir())
    from pipeline.batch import check_paths

    with pytest.raises(NamelangError) as err:  # a folder given as the input: said after the slow work
        check_paths(tmp_path / "folder")
    assert str(err.value) == f"{tmp_path / 'folder'}: the input is a folder: give a file of names"
