"""The char n-gram baseline the default model has to beat.

TF-IDF over character 1-4 grams within word boundaries (`char_wb`) and a logistic regression,
with a small fair grid (C x class_weight) chosen on the VALIDATION split's macro-F1, then refit on
train + validation: the default model's n-gram language models count the validation names too, so
both end up having learnt from the same rows (the train-only fit is kept for reference).
Run alone: `python bench/ngram.py` prints the grid and the chosen model's test figures; last line:
{"C", "class_weight", "val_macro_f1", "test": {"acc", "macro_f1"}, "test_train_only": {"acc", "macro_f1"}}.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import Pipeline, make_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: this checkout's packages

from pipeline.features import TEST, TRAIN, VALIDATION, TensorData

GRID_C = (1.0, 10.0, 30.0)
GRID_CLASS_WEIGHT = (None, "balanced")


@dataclass
class NgramResult:
    model: Pipeline         # the chosen configuration, refit on train + validation
    train_only: Pipeline    # the chosen configuration fitted on train (as chosen on validation)
    C: float
    class_weight: str | None
    train_s: float          # the refit on train + validation
    train_only_s: float     # fitting the chosen configuration on train
    grid_s: float           # the whole grid search
    val_macro_f1: float
    grid: list[dict]


def texts(data: TensorData, *sides: int, spelt: bool = False) -> tuple[list[str], np.ndarray]:
    """Names and label indices of the rows on `sides`: their ASCII names, as the network reads them, or with
    `spelt` their spellings as written (accents kept, as the default model's letter model reads them)."""
    idx = data.indices(*sides).numpy()
    names = data.spellings if spelt else data.names
    return [names[i] for i in idx], data.labels[idx].numpy()


def make_model(C: float, class_weight: str | None) -> Pipeline:
    return make_pipeline(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), lowercase=True, sublinear_tf=True),
        LogisticRegression(C=C, class_weight=class_weight, max_iter=2000),
    )


def scores(y: np.ndarray, pred: np.ndarray) -> dict:
    return {"acc": float(accuracy_score(y, pred)),
            "macro_f1": float(f1_score(y, pred, average="macro", labels=np.unique(y), zero_division=0))}


def fit_ngram(data: TensorData, spelt: bool = False) -> NgramResult:
    """Grid over C x class_weight, chosen on validation macro-F1, refit on train + validation
    (timed alone); on the names as spelt with `spelt`."""
    x_train, y_train = texts(data, TRAIN, spelt=spelt)
    x_val, y_val = texts(data, VALIDATION, spelt=spelt)
    grid, best = [], None
    t_grid = time.perf_counter()
    for C in GRID_C:
        for cw in GRID_CLASS_WEIGHT:
            t0 = time.perf_counter()
            model = make_model(C, cw).fit(x_train, y_train)
            fit_s = time.perf_counter() - t0
            row = {"C": C, "class_weight": cw, "fit_s": fit_s, **{f"val_{k}": v for k, v in
                                                                   scores(y_val, model.predict(x_val)).items()}}
            grid.append(row)
            if best is None or row["val_macro_f1"] > best[0]["val_macro_f1"]:
                best = (row, model)
    grid_s = time.perf_counter() - t_grid
    row, train_only = best
    t0 = time.perf_counter()
    model = make_model(row["C"], row["class_weight"]).fit(*texts(data, TRAIN, VALIDATION, spelt=spelt))
    refit_s = time.perf_counter() - t0
    return NgramResult(model, train_only, row["C"], row["class_weight"], refit_s, row["fit_s"], grid_s,
                       row["val_macro_f1"], grid)


def evaluate(model: Pipeline, data: TensorData, side: int = TEST, spelt: bool = False) -> dict:
    x, y = texts(data, side, spelt=spelt)
    model.predict(x[:64])  # warm-up, as for (c): a fitted pipeline's first call ran at half speed
    t0 = time.perf_counter()
    pred = model.predict(x)
    seconds = time.perf_counter() - t0
    return {**scores(y, pred), "names_per_s": len(x) / max(seconds, 1e-9), "pred": np.asarray(pred)}


def benchmark_row(model: Pipeline, train_s: float, data: TensorData, spelt: bool = False) -> dict:
    """A one-fit method's row of the benchmark table: its fit time and its test figures."""
    return {"train_s": train_s, "epochs": 1, "s_per_epoch": train_s, **evaluate(model, data, spelt=spelt)}


def main() -> None:
    import argparse

    from bench.train import load_data

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=None, help="folder of <Language>.txt files")
    args = parser.parse_args()
    data = load_data(args.source)
    result = fit_ngram(data)
    for row in result.grid:
        print(f"C={row['C']:<5g} class_weight={row['class_weight']!s:<9} fit {row['fit_s']:5.1f}s  "
              f"val acc {row['val_acc']:.3f}  val macro-F1 {row['val_macro_f1']:.3f}")
    tests = {}
    for key, label, model in (("test", "refit on train + validation", result.model),
                              ("test_train_only", "fitted on train", result.train_only)):
        test = evaluate(model, data)
        tests[key] = {"acc": round(test["acc"], 4), "macro_f1": round(test["macro_f1"], 4)}
        print(f"chosen C={result.C:g} class_weight={result.class_weight}, {label}: test acc {test['acc']:.3f} "
              f"macro-F1 {test['macro_f1']:.3f}")
    print(json.dumps({"C": result.C, "class_weight": result.class_weight,
                      "val_macro_f1": round(result.val_macro_f1, 4), **tests}))


if __name__ == "__main__":
    main()
