"""The letter model: what a name's accents say of its language, which the ASCII folding drops."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from pipeline.config import ModelConfig, SplitConfig
from pipeline.errors import NamelangError, explained_by_input
from pipeline.features import (
    build_tensors,
    encode_marks,
    encode_names,
    letters_beyond_ascii,
    load_tensors,
    save_tensors,
)
from pipeline.marks import LetterMarksModel
from pipeline.model import CharClassifier, predict_logits
from pipeline.normalize import to_ascii
from pipeline.predict import Predictor
from pipeline.pyfunc import load_bundle, save_bundle
from tests.support import damage_a_tensor


def test_letters_beyond_ascii_are_lowercased_composed_and_distinct():
    names = ["Jäger", "MÜLLER", "Mu\u0308ller", "Smith", "Łukasz", "Straße", "O’Neil", "Jägër", "", "Nguyễn"]
    assert letters_beyond_ascii(names) == ["ä", "ü", "ü", "", "ł", "ß", "", "äë", "", "ễ"]
    codes = encode_marks(letters_beyond_ascii(names))
    assert codes.dtype == torch.int32 and codes.shape == (10, 2)
    assert codes[7].tolist() == [ord("ä"), ord("ë")] and codes[3].tolist() == [0, 0]
    assert encode_marks(["", ""]).shape == (2, 0)
    # "İ".lower() is "i" and a combining dot: the letter would be lost; ı (dotless) is its own letter
    assert letters_beyond_ascii(["İlhan", "Yıldız", "İİ"]) == ["İ", "ı", "İ"]


def test_letter_model_is_a_smoothed_bernoulli_per_language():
    # language 0: two names of four with ü; language 1: none of four
    marks = encode_marks(["ü", "ü", "", "", "", "", "", ""])
    model = LetterMarksModel(n_classes=2).fit(marks, torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]))
    p0, p1 = (2 + 0.5) / (4 + 1), (0 + 0.5) / (4 + 1)
    scores = model(encode_marks(["ü", "", "ñ"]))  # ñ: never seen in training, it counts for nothing
    odds = torch.tensor([math.log(p0 / (1 - p0)), math.log(p1 / (1 - p1))])
    torch.testing.assert_close(scores, torch.stack([odds, torch.zeros(2), torch.zeros(2)]))
    torch.testing.assert_close(model(encode_marks(["", ""])), torch.zeros(2, 2))  # no letters: (B, 0) marks
    fresh = LetterMarksModel(n_classes=2)  # tables sized by the data: loaded from a state of another size
    fresh.load_state_dict(model.state_dict())
    assert fresh.fitted and torch.equal(fresh(encode_marks(["ü"])), model(encode_marks(["ü"])))
    with pytest.raises(RuntimeError, match="not been fitted"):
        LetterMarksModel(2)(encode_marks(["ü"]))


def _rows(rows: list[tuple[str, str]]) -> pa.Table:
    names = pa.array([r[0] for r in rows], type=pa.string())
    return pa.table({"name": names, "name_ascii": to_ascii(names), "language": [r[1] for r in rows]})


def test_tensors_keep_each_rows_spelling_with_its_accents():
    rows = [("Jäger", "German"), ("Jager", "German"), ("Jager", "Russian"), ("Müller", "German"),
            ("Smith", "English"), ("Jones", "English"), ("Ivanov", "Russian"), ("Petrov", "Russian")]
    data = build_tensors(_rows(rows), "sha", SplitConfig())
    letters = {(n, data.label_names[y]): "".join(chr(c) for c in m if c)
               for n, y, m in zip(data.names, data.labels.tolist(), data.marks.tolist(), strict=True)}
    assert letters[("Jager", "German")] == "ä" and letters[("Jager", "Russian")] == ""  # only its own file's
    assert letters[("Muller", "German")] == "ü" and letters[("Smith", "English")] == ""
    keys = zip(data.names, [data.label_names[y] for y in data.labels.tolist()], strict=True)
    spelt = dict(zip(keys, data.spellings, strict=True))
    assert spelt[("Jager", "German")] == "Jäger" and spelt[("Jager", "Russian")] == "Jager"  # the accented line
    lines = build_tensors(_rows(rows), "sha", SplitConfig(method="random_lines"))  # every line its own row
    assert sorted("".join(chr(c) for c in m if c) for m in lines.marks.tolist()) == [""] * 6 + ["ä", "ü"]
    no_raw = build_tensors(_rows(rows).drop_columns(["name"]), "sha", SplitConfig())
    assert no_raw.marks is None and no_raw.sha256 != data.sha256  # the letters are part of the data's hash


def test_tensors_file_keeps_the_letters(tmp_path):
    rows = [("Jäger", "German"), ("Smith", "English"), ("Jones", "English"), ("Ivanov", "Russian"),
            ("Petrov", "Russian"), ("Müller", "German")]
    data = build_tensors(_rows(rows), "sha", SplitConfig())
    back = load_tensors(save_tensors(data, tmp_path / "tensors.pt"))
    assert torch.equal(back.marks, data.marks) and back.sha256 == data.sha256 and back.spellings == data.spellings
    assert back.spellings[data.names.index("Muller")] == "Müller"
    raw = torch.load(tmp_path / "tensors.pt", weights_only=True)  # as namelang wrote it before the letters
    del raw["spellings"], raw["marks"]
    torch.save({**raw, "format": 2}, tmp_path / "format2.pt")
    old = load_tensors(tmp_path / "format2.pt")
    assert old.spellings is None and old.marks is None and old.names == data.names


def _tiny_classifier(marks_weight: float) -> tuple[CharClassifier, list[str]]:
    """Two languages whose names differ only by their accents, so the network cannot tell them apart."""
    spellings = ["Müller", "Jäger", "Bäcker", "Köhler", "Muller", "Jager", "Backer", "Kohler"]
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    torch.manual_seed(0)
    model = CharClassifier(ModelConfig(embedding_dim=8, hidden_size=8, ngram_buckets=0, charlm_order=0,
                                       marks_weight=marks_weight), n_classes=2).eval()
    tokens, lengths = encode_names(to_ascii(pa.array(spellings)).to_pylist())
    model.fit_counts(tokens, lengths, labels, encode_marks(letters_beyond_ascii(spellings)))
    return model, spellings


def test_classifier_adds_the_letter_models_log_likelihood_at_its_weight():
    model, spellings = _tiny_classifier(marks_weight=2.0)
    tokens, lengths = encode_names(to_ascii(pa.array(spellings)).to_pylist())
    marks = encode_marks(letters_beyond_ascii(spellings))
    with torch.no_grad(), model.network_only():
        network = model(tokens, lengths, marks)
    expected = F.log_softmax(network, -1) + 2.0 * model.marks(marks)
    torch.testing.assert_close(predict_logits(model, tokens, lengths, marks), expected)
    torch.testing.assert_close(predict_logits(model, tokens, lengths), network)  # no spellings: network alone
    assert predict_logits(model, tokens, lengths, marks)[:4].argmax(1).tolist() == [0, 0, 0, 0]
    assert CharClassifier(ModelConfig.notebook(), 2).marks is None
    assert all(m.marks is None for m in CharClassifier(ModelConfig(members=3, marks_weight=1.0), 2).others)


def test_prediction_reads_the_accents_as_written_and_the_bundle_keeps_the_letter_model(tmp_path):
    model, _ = _tiny_classifier(marks_weight=2.0)
    predictor = Predictor(model, ["German", "Other"])
    out = predictor.predict(["Jäger", "Jager", "  Bäcker "])
    assert out["language"][0] == "German" and out["language"][2] == "German"
    # predict reads the accents (the network alone finds both about as German): each name as its letter model
    # scores it, its spelling stripped of spaces
    assert out["probability"][0] > out["probability"][1]
    assert out["probability"][0] == pytest.approx(float(predictor.probabilities(["Jager"], ["Jäger"])[0, 0]))
    assert out["probability"][2] == pytest.approx(float(predictor.probabilities(["Backer"], ["Bäcker"])[0, 0]))
    # an invisible character at the end is dropped with the space before it, as when the table was made
    assert predictor.predict(["Jäger \u200b"])["probability"] == pytest.approx(out["probability"][:1], rel=1e-6)
    one = predictor.predict("Jäger")  # one string is one name, not its five letters
    assert one["name"] == ["Jäger"] and one["language"] == out["language"][:1]
    with pytest.raises(ValueError, match="top_k must be at least 1, got 0"):  # as the pyfunc refuses it
        predictor.predict("Jäger", top_k=0)
    accented, plain = predictor.probabilities(["Jager", "Jager"], ["Jäger", "Jager"])[:, 0]
    assert accented > plain  # the same ASCII name, more German with its accent
    back = load_bundle(save_bundle(tmp_path / "model.pt", model, ["German", "Other"], 64))
    assert back.predict(["Jäger", "Jager"]) == predictor.predict(["Jäger", "Jager"])


def test_a_bundle_from_before_the_letter_model_loads_without_one(tmp_path):
    model = CharClassifier(ModelConfig(embedding_dim=8, hidden_size=8, ngram_buckets=0, charlm_order=0,
                                       marks_weight=0.0), n_classes=2).eval()
    path = save_bundle(tmp_path / "old.pt", model, ["A", "B"], 64)
    raw = torch.load(path, weights_only=True)
    del raw["model_config"]["marks_weight"]  # as an older namelang wrote it
    torch.save(raw, path)
    loaded = load_bundle(path)
    assert loaded.model.marks is None and loaded.predict(["Jäger"])["language"][0] in {"A", "B"}
    del raw["max_name_chars"]  # a bundle that lacks a field: a KeyError traceback before
    torch.save(raw, tmp_path / "lacking.pt")
    with pytest.raises(NamelangError, match="does not fit this version of namelang \\(KeyError: 'max_name_chars'"):
        load_bundle(tmp_path / "lacking.pt")
    whole = path.read_bytes()
    damage_a_tensor(path)  # a weight changed: it served other answers without a word
    with pytest.raises(NamelangError, match="model bundle is corrupt or unreadable .* is damaged: its checksum"):
        load_bundle(path)
    path.write_bytes(whole[:200])  # cut short: the file's fault, said in one line
    with pytest.raises(NamelangError, match="model bundle is corrupt or unreadable") as err:
        load_bundle(path)
    assert str(path) in str(err.value) and explained_by_input(err.value)
