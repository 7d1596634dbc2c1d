"""Tensors: the notebook's alphabet, vectorized encoding, sorted labels, leakage-free split, one file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from pipeline.config import DataConfig, SplitConfig
from pipeline.errors import NamelangError, NamelangWarning, explained_by_input
from pipeline.features import (
    ALPHABET,
    PAD,
    TEST,
    TRAIN,
    VALIDATION,
    VOCAB_SIZE,
    _cut,
    build_tensors,
    encode_names,
    load_tensors,
    save_tensors,
)
from tests.support import damage_a_tensor

SHARED_NAMES = Path(__file__).resolve().parents[2] / "shared/data/names"


def decode(tokens: torch.Tensor, length: int) -> str:
    return "".join(ALPHABET[i - 1] for i in tokens[:length].tolist())


def names_table(rows: list[tuple[str, str]]) -> pa.Table:
    return pa.table({"name_ascii": [r[0] for r in rows], "language": [r[1] for r in rows]})


def synthetic_rows(seed: int = 0) -> list[tuple[str, str]]:
    """Six languages of different sizes, many names repeated, some names in two languages."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, (language, n) in enumerate({"Zulu": 12, "Alpha": 200, "Beta": 60, "Gamma": 30, "Delta": 7,
                                       "Omega": 90}.items()):
        for i in range(n):
            name = f"{language[:2]}{chr(97 + i % 26)}{i // 26}"
            rows += [(name, language)] * int(rng.integers(1, 4))  # duplicates, as in the tutorial files
        rows.append((f"Shared{k % 3}", language))  # a name carried by several languages
    return rows


def test_alphabet_is_the_notebooks_58_symbols_plus_padding():
    assert len(ALPHABET) == 58 and VOCAB_SIZE == 59 and PAD == 0
    assert ALPHABET.startswith("abcdefghijklmnopqrstuvwxyzABC") and ALPHABET.endswith(" .,;'_")


def test_encode_matches_a_per_character_loop_and_maps_unknowns_to_oov():
    names = ["Abe", "", "O'Neil", "de la Cruz", "Ng", "x#y"]
    tokens, lengths = encode_names(names)
    assert tokens.dtype == torch.uint8 and tokens.shape == (6, 10)
    assert lengths.tolist() == [len(n) for n in names]
    for row, name in zip(tokens, names, strict=True):
        expected = [ALPHABET.index(c if c in ALPHABET else "_") + 1 for c in name]
        assert row[:len(name)].tolist() == expected
        assert (row[len(name):] == PAD).all()
    assert decode(tokens[2], 6) == "O'Neil" and decode(tokens[5], 3) == "x_y"


def test_encode_truncates_to_max_len_and_reads_sliced_arrow_arrays():
    arr = pa.array(["skip", "Abcdefgh", "Xy"])[1:]
    tokens, lengths = encode_names(arr, max_len=4)
    assert tokens.shape == (2, 4) and lengths.tolist() == [4, 2]
    assert decode(tokens[0], 4) == "Abcd"


def test_labels_are_sorted_and_rows_are_distinct_pairs():
    data = build_tensors(names_table(synthetic_rows()), "sha", SplitConfig())
    assert data.label_names == sorted(data.label_names)
    pairs = list(zip(data.names, data.labels.tolist(), strict=True))
    assert len(pairs) == len(set(pairs))
    assert [data.label_names[i] for i in data.labels[:3]] == ["Alpha"] * 3  # sorted by language, then name


def test_by_name_split_keeps_every_copy_of_a_name_on_one_side_and_is_stratified():
    data = build_tensors(names_table(synthetic_rows()), "sha", SplitConfig())
    side_of: dict[str, set[int]] = {}
    for name, side in zip(data.names, data.split.tolist(), strict=True):
        side_of.setdefault(name, set()).add(side)
    assert all(len(sides) == 1 for sides in side_of.values())
    for label in range(len(data.label_names)):
        sides = data.split[data.labels == label]
        assert {TRAIN, TEST} <= set(sides.tolist())  # every language is tested, even the rarest (7 names)
    share = (data.split == TRAIN).float().mean().item()
    assert 0.6 < share < 0.8


def test_names_that_differ_only_in_case_land_on_one_side():
    """Vietnamese.txt holds "An" and "an": split as two names, one could be learnt and the other tested."""
    rows = [(f"Name{i}", "Big") for i in range(60)] + [(f"Word{i}", "Small") for i in range(60)]
    rows += [(f"Case{i}", "Big") for i in range(40)] + [(f"case{i}", "Big") for i in range(40)]
    rows += [(f"CASE{i}", "Small") for i in range(40)]
    for seed in range(5):
        data = build_tensors(names_table(rows), "sha", SplitConfig(seed=seed))
        side_of: dict[str, set[int]] = {}
        for name, side in zip(data.names, data.split.tolist(), strict=True):
            side_of.setdefault(name.lower(), set()).add(side)
        assert all(len(sides) == 1 for sides in side_of.values()), seed
        assert {TRAIN, VALIDATION, TEST} <= {side for sides in side_of.values() for side in sides}


def test_a_language_of_few_names_is_learnt_then_tested_then_validated_and_the_rest_is_said():
    """Each side asked for gets one name of a language before another keeps more than its share: with
    40/30/30 a language of two names had none to learn from; one held out nowhere is named."""
    rows = [(f"{lang}{i}", lang) for lang in ("Big", "Large") for i in range(40)]
    rows += [("Solo", "One"), ("Duoa", "Two"), ("Duob", "Two"), ("Tria", "Three"), ("Trib", "Three"), ("Tric", "Three")]
    for fractions in ({}, {"train": 0.4, "validation": 0.3, "test": 0.3}):
        with pytest.warns(NamelangWarning) as caught:
            data = build_tensors(names_table(rows), "sha", SplitConfig(**fractions))
        sides = {lang: sorted(data.split[data.labels == code].tolist()) for code, lang in enumerate(data.label_names)}
        assert sides["One"] == [TRAIN] and sides["Two"] == [TRAIN, TEST] and sides["Three"] == [TRAIN, VALIDATION, TEST]
        assert {TRAIN, VALIDATION, TEST} == set(sides["Big"]) == set(sides["Large"])
        assert [str(w.message) for w in caught] == [
            "too few names to hold some out for One (1 name: none to test or validate), Two (2 names: none to "
            "validate): the test scores and the gate leave out a language with no test names, early stopping one "
            "with no validation names; add names"]


def test_cut_keeps_every_side_in_bounds_and_fills_the_asked_ones_first():
    rng = np.random.default_rng(0)
    shares = [(0.7, 0.15, 0.15), (0.85, 0.0, 0.15), (0.01, 0.98, 0.01), (0.4, 0.3, 0.3)]
    for _ in range(200):
        a, b = sorted(rng.uniform(0.001, 0.999, 2))
        shares.append((a, b - a, 1 - b))
    for fractions in shares:
        for n in range(0, 300):
            a, b = _cut(n, fractions)
            assert 0 <= a <= b <= n, (n, fractions)
            train, validation, test = a, b - a, n - b
            assert train >= min(n, 1) and test >= min(max(n - 1, 0), 1), (n, fractions)  # 1 name: train; 2: +test
            assert validation >= 1 or not fractions[1] or n < 3, (n, fractions)  # 3: one each


def test_split_is_seeded():
    table = names_table(synthetic_rows())
    a = build_tensors(table, "sha", SplitConfig(seed=1))
    b = build_tensors(table, "sha", SplitConfig(seed=1))
    c = build_tensors(table, "sha", SplitConfig(seed=2))
    assert torch.equal(a.split, b.split) and a.sha256 == b.sha256
    assert not torch.equal(a.split, c.split)


def test_random_lines_is_the_notebooks_split_of_every_line():
    rows = synthetic_rows()
    data = build_tensors(names_table(rows), "sha", SplitConfig(method="random_lines"))
    assert len(data.names) == len(rows)  # duplicates kept, as the notebook's dataset does
    counts = torch.bincount(data.split.long(), minlength=3).tolist()
    assert counts == [round(len(rows) * 0.70), round(len(rows) * 0.15), len(rows) - round(len(rows) * 0.70)
                      - round(len(rows) * 0.15)]


def test_too_few_rows_is_a_clear_error():
    with pytest.raises(NamelangError, match="too few names"):
        build_tensors(names_table([("Abe", "X"), ("Abe", "X")]), "sha", SplitConfig())


def test_large_string_names_encode_like_plain_strings():
    names = ["Abe", "Nakamura", "Xu"]
    for kind in (pa.large_string(), pa.string()):
        tokens, lengths = encode_names(pa.array(names, kind))
        assert lengths.tolist() == [3, 8, 2] and decode(tokens[1], 8) == "Nakamura"


def test_an_empty_test_split_is_a_clear_error():
    with pytest.raises(NamelangError, match="the test split is empty"):
        build_tensors(names_table([("Abe", "A"), ("Bob", "B"), ("Cid", "C")]), "sha", SplitConfig())


def test_one_language_is_a_clear_error_that_names_what_the_source_had_beside_it(tmp_path):
    from pipeline import workflow
    from pipeline.ingest import ingest
    from pipeline.normalize import normalize

    rows = [(f"Name{i}", "English") for i in range(30)]
    with pytest.raises(NamelangError, match=r"at least two languages.*got 1: \['English'\]$"):
        build_tensors(names_table(rows), "sha", SplitConfig())
    source = tmp_path / "names"
    source.mkdir()
    (source / "English.txt").write_text("".join(f"Smith{letter}\n" for letter in "abcdefghijklmnopqrstuvwxyz"))
    (source / "German.txt").write_text("1234\n5678\n")  # every line rejected: no Latin letters
    (source / "Welsh.txt").write_text("")
    with pytest.warns(NamelangWarning):
        table = normalize(ingest(DataConfig(source=source)))
    with pytest.raises(NamelangError, match=r"got 1: \['English'\] \(not in the table: German, every line "
                       r"rejected \(see rejected.parquet\); .*Welsh.txt, an empty file\)"):
        workflow.build_tensors(table, SplitConfig())  # "got 1" named neither German nor Welsh


def test_two_languages_evaluate_and_predict_with_fewer_than_three_guesses():
    """Top-3 figures and the pyfunc's default top_k must not assume three languages or more."""
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from pipeline.config import ModelConfig
    from pipeline.evaluate import evaluate_probabilities
    from pipeline.model import CharClassifier
    from pipeline.predict import Predictor
    from pipeline.pyfunc import NamelangModel

    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    metrics = evaluate_probabilities(probs, np.array([0, 1, 1]), ["English", "French"], ["a", "b", "c"]).metrics
    assert metrics["accuracy"] == pytest.approx(2 / 3) and metrics["top3_accuracy"] == 1.0
    pyfunc = NamelangModel()
    pyfunc.predictor = Predictor(CharClassifier(ModelConfig(hidden_size=8, ngram_buckets=0), 2).eval(),
                                 ["English", "French"])
    frame = pyfunc.predict(None, pd.DataFrame({"name": ["Smith", "Dupont"]}), {"top_k": 3})
    assert list(frame.columns) == ["name", "language", "probability", "language_2", "probability_2", "error"]
    assert (frame["probability"] + frame["probability_2"]).round(6).tolist() == [1.0, 1.0]
    odd = pyfunc.predict(None, pd.DataFrame({"name": [None, float("nan"), pd.NA, np.float32("nan"), 12, ""]},
                                            dtype=object), {})
    assert odd["name"].tolist() == [None, None, None, None, "12", ""]  # missing stays missing, not "None"
    assert odd["error"].tolist()[-2:] == ["name must be a string, got int", "empty name"]
    assert odd["error"].tolist()[:4] == ["missing name (null)"] * 4  # JSON null comes as None or NaN
    from decimal import Decimal

    signalling = pyfunc.predict(None, pd.DataFrame({"name": [Decimal("sNaN")]}, dtype=object), {})
    assert signalling["error"].tolist() == ["name must be a string, got Decimal"]  # pd.isna raised on it
    assert odd["language"].isna().all()
    with pytest.raises(MlflowException, match="top_k must be at least 1"):
        pyfunc.predict(None, pd.DataFrame({"name": ["Smith"]}), {"top_k": 0})


def test_tensors_file_round_trips_and_a_corrupt_one_is_a_clear_error(tmp_path):
    data = build_tensors(names_table(synthetic_rows()), "sha", SplitConfig())
    path = save_tensors(data, tmp_path / "tensors.pt")
    assert list(tmp_path.iterdir()) == [path]  # written atomically: no temp file left
    back = load_tensors(path)
    assert back.sha256 == data.sha256 and back.label_names == data.label_names and back.names == data.names
    assert back.table_sha256 == "sha" and back.split_config == SplitConfig().model_dump()
    # an older cache file (format 1 pickled the names as a list) still loads; an unknown format is refused
    fields = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)}
    torch.save({**fields, "format": 1}, tmp_path / "old.pt")
    assert load_tensors(tmp_path / "old.pt").names == data.names
    torch.save({**fields, "format": 99}, tmp_path / "future.pt")
    with pytest.raises(NamelangError, match="unknown format 99"):
        load_tensors(tmp_path / "future.pt")
    # a file torch reads that is not such a file: a bare tensor, a dict without the names (AttributeError and
    # KeyError tracebacks before)
    for name, content, problem in (("bare.pt", torch.zeros(3), "unknown format None"),
                                   ("partial.pt", {"format": 3, "labels": torch.zeros(1)},
                                    "does not fit this version of namelang \\(KeyError: 'names'\\)")):
        torch.save(content, tmp_path / name)
        with pytest.raises(NamelangError, match=problem):
            load_tensors(tmp_path / name)
    whole = path.read_bytes()
    damage_a_tensor(path)  # a byte of the data changed: torch's reader does not look
    with pytest.raises(NamelangError, match="tensors file is corrupt or unreadable .* is damaged: its checksum"):
        load_tensors(path)
    path.write_bytes(whole[:100])
    with pytest.raises(NamelangError, match="corrupt") as err:
        load_tensors(path)
    assert str(path) in str(err.value)
    assert explained_by_input(err.value)
    with pytest.raises(NamelangError, match="not found"):
        load_tensors(tmp_path / "missing.pt")


def test_shared_data_split_has_no_name_on_two_sides(tmp_path):
    from pipeline.ingest import ingest
    from pipeline.normalize import normalize

    table = normalize(ingest(DataConfig(source=str(SHARED_NAMES), raw_dir=tmp_path / "raw",
                                        processed_dir=tmp_path / "processed")))
    data = build_tensors(table.names, table.sha256, SplitConfig())
    names = np.asarray([name.lower() for name in data.names], dtype=object)  # "An" and "an" are one name
    sides = [set(names[(data.split == s).numpy()]) for s in (TRAIN, VALIDATION, TEST)]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    assert len(data.label_names) == 18
    assert all(len(data.indices(s)) > 2000 for s in (VALIDATION, TEST))


def test_stages_given_the_wrong_object_say_which_one_they_take(tmp_path):
    """A notebook passing a stage's whole result where its table is wanted (or the reverse) got an
    AttributeError from deep inside: 'NamesTable' object has no attribute 'select'."""
    from pipeline.ingest import ingest
    from pipeline.normalize import normalize

    source = tmp_path / "names"
    source.mkdir()
    (source / "English.txt").write_text("Smith\nJones\nBrown\n")
    (source / "French.txt").write_text("Dubois\nMartin\nLeroy\n")
    raw = ingest(DataConfig(source=source))
    table = normalize(raw)
    with pytest.raises(TypeError, match=r"build_tensors takes .*\(a NamesTable's `.names`\), not NamesTable"):
        build_tensors(table, table.sha256, SplitConfig())
    with pytest.raises(TypeError, match=r"normalize takes .* \(an IngestResult\), not Table"):
        normalize(raw.table)
    assert build_tensors(table.names, table.sha256, SplitConfig()).label_names == ["English", "French"]
