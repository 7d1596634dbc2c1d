"""Benchmark: what the letter model's weight does to names typed with their accents.

    .venv/bin/python bench/accents.py [--source DIR] [--split-seed 2024]

Validation cannot judge the weight alone: in the shared data only 7 of the 18 files write accents
(Czech, Irish, Vietnamese names come without them), so every accented validation name sits in a
file that writes accents, and validation rewards trusting them. Users type "Novák", "Ó Briain",
"Nguyễn" all the same. This script trains the default model once, then, at each weight, scores

- validation macro-F1 (the letter and n-gram models counting training names only),
- test macro-F1 (counting training and validation names, as the registered model does),
- PROBE: common surnames as their languages spell them, 84 in 8 languages, written from general
  knowledge and not taken from the data; each as spelt, and folded to ASCII (what the model saw
  before the letter model: the same at every weight).

The last line of output is one JSON object: {"weights": {w: {"val_macro_f1", "test_macro_f1",
"probe_correct", "probe_by_language"}}, "probe_folded_correct": n, "probe_names": 84}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import pipeline  # noqa: E402, F401 - first: it sets PyTorch's thread spinning, as the product runs
from bench.train import load_data  # noqa: E402
from pipeline.config import ModelConfig, SplitConfig, TrainConfig  # noqa: E402
from pipeline.features import TEST, TRAIN, VALIDATION  # noqa: E402
from pipeline.predict import Predictor  # noqa: E402
from pipeline.train import split_metrics, train_model  # noqa: E402

PROBE = {
    "German": "Müller Schäfer Schröder Köhler Günther Jäger Krüger Möller Weiß Groß Böhm Fröhlich",
    "French": "Lefèvre Gérard Benoît Bélanger Côté Gagné Lévesque Théroux Hébert Bédard Fréchette Ménard",
    "Spanish": "Gómez Martínez González Sánchez Pérez Rodríguez Fernández López Ramírez Jiménez Muñoz Ibáñez",
    "Portuguese": "Gonçalves Conceição Simões Magalhães Guimarães Araújo Brandão Falcão Assunção Gusmão",
    "Czech": "Novák Dvořák Horák Černý Procházka Kučera Veselý Krejčí Němec Růžička",
    "Polish": "Wałęsa Łukasiewicz Wójcik Kamiński Zieliński Dąbrowski Wiśniewski Szymański Woźniak Kozłowski",
    "Irish": "Ó_Briain Ó_Néill Ó_Súilleabháin Ó_Ceallaigh Mac_Cárthaigh Ó_Dónaill",
    "Vietnamese": "Nguyễn Trần Lê Phạm Hoàng Huỳnh Võ Đặng Bùi Đỗ Hồ Ngô",
}
WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)


def folded(name: str) -> str:
    """The name without its accents, as an ASCII keyboard types it."""
    plain = "".join(c for c in unicodedata.normalize("NFD", name) if unicodedata.category(c) != "Mn")
    return plain.translate(str.maketrans({"đ": "d", "Đ": "D", "ł": "l", "Ł": "L", "ß": "ss"}))


def probe_correct(predictor: Predictor, names: list[str], languages: list[str]) -> dict[str, int]:
    predicted = predictor.predict(names)["language"]
    return {lang: sum(p == t == lang for p, t in zip(predicted, languages, strict=True)) for lang in PROBE}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=None, help="folder of <Language>.txt files (default: shared data)")
    parser.add_argument("--split-seed", type=int, default=SplitConfig().seed)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    data = load_data(args.source, args.split_seed)
    with tempfile.TemporaryDirectory() as tmp:
        model = train_model(data, ModelConfig(marks_weight=1.0),
                            TrainConfig(checkpoint_dir=Path(tmp), progress=False)).model
    names = [n.replace("_", " ") for spelt in PROBE.values() for n in spelt.split()]
    languages = [lang for lang, spelt in PROBE.items() for _ in spelt.split()]
    predictor = Predictor(model, data.label_names)
    base_config = model.config
    figures: dict[str, dict] = {}
    folded_correct = 0
    header = "  ".join(f"{lang[:5]:>5}" for lang in PROBE)
    print(f"{'weight':>6}  {'val F1':>7}  {'test F1':>7}  {'probe':>6}  {header}")
    for w in WEIGHTS:
        model.config = base_config.model_copy(update={"marks_weight": w})
        train, both = data.indices(TRAIN), data.indices(TRAIN, VALIDATION)
        model.fit_counts(data.tokens[train], data.lengths[train], data.labels[train], data.marks_at(train))
        val = split_metrics(model, data, VALIDATION)["macro_f1"]
        model.fit_counts(data.tokens[both], data.lengths[both], data.labels[both], data.marks_at(both))
        test = split_metrics(model, data, TEST)["macro_f1"]
        by_language = probe_correct(predictor, names, languages)
        folded_correct = sum(probe_correct(predictor, [folded(n) for n in names], languages).values())
        figures[str(w)] = {"val_macro_f1": round(val, 4), "test_macro_f1": round(test, 4),
                           "probe_correct": sum(by_language.values()), "probe_by_language": by_language}
        print(f"{w:>6}  {val:7.4f}  {test:7.4f}  {sum(by_language.values()):>3}/{len(names)}  "
              + "  ".join(f"{by_language[lang]:>2}/{len(PROBE[lang].split()):<2}" for lang in PROBE))
    print(f"folded to ASCII: {folded_correct}/{len(names)} at every weight (no letters to read)")
    print(json.dumps({"weights": figures, "probe_folded_correct": folded_correct, "probe_names": len(names)}))


if __name__ == "__main__":
    main()
