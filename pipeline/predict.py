"""Predict languages for raw names: normalization, validation and batching in one place.

Shared by evaluation, the MLflow pyfunc model, the CLI and batch prediction, so every path
treats a name the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from pipeline.features import encode_names
from pipeline.model import CharClassifier
from pipeline.normalize import to_ascii
from pipeline.train import predict_logits

TOP_K = 3


def output_columns(top_k: int = TOP_K) -> list[str]:
    cols = ["name", "language", "probability"]
    for k in range(2, top_k + 1):
        cols += [f"language_{k}", f"probability_{k}"]
    return cols + ["error"]


def _problem(value: Any, ascii_value: str | None, max_chars: int) -> str | None:
    if not isinstance(value, str):
        return f"name must be a string, got {type(value).__name__}"
    stripped = value.strip()
    if not stripped:
        return "empty name"
    if len(stripped) > max_chars:
        return f"name longer than {max_chars} characters ({len(stripped)})"
    if ascii_value is not None and not any(c.isascii() and c.isalpha() for c in ascii_value):
        return "no Latin letters after normalization"
    return None


@dataclass
class Predictor:
    """A trained model with its labels; `predict` takes raw names and never raises on a bad row."""

    model: CharClassifier
    label_names: list[str]
    max_name_chars: int = 64

    def probabilities(self, names_ascii: list[str]) -> np.ndarray:
        tokens, lengths = encode_names(names_ascii)
        return torch.softmax(predict_logits(self.model, tokens, lengths), dim=1).numpy()

    def predict(self, names: list[Any], top_k: int = TOP_K) -> list[dict]:
        """One dict per input with top-k languages and probabilities, or an `error` for that row."""
        top_k = max(1, min(top_k, len(self.label_names)))
        strings = [v.strip() if isinstance(v, str) else "" for v in names]
        too_long = [len(s) > self.max_name_chars for s in strings]
        ascii_names = to_ascii(pa.array([s if not long else "" for s, long in zip(strings, too_long,
                                                                                      strict=True)],
                                        type=pa.string())).to_pylist()
        problems = [_problem(v, a, self.max_name_chars) for v, a in zip(names, ascii_names, strict=True)]
        ok = [i for i, p in enumerate(problems) if p is None]
        rows: list[dict] = []
        for value, problem in zip(names, problems, strict=True):
            row: dict[str, Any] = {"name": value if isinstance(value, str) else repr(value)}
            row.update({c: None for c in output_columns(top_k)[1:]})
            row["error"] = problem
            rows.append(row)
        if ok:
            probs = self.probabilities([ascii_names[i] for i in ok])
            top = np.argsort(-probs, axis=1)[:, :top_k]
            for j, i in enumerate(ok):
                for k in range(top_k):
                    suffix = "" if k == 0 else f"_{k + 1}"
                    rows[i][f"language{suffix}"] = self.label_names[top[j, k]]
                    rows[i][f"probability{suffix}"] = float(probs[j, top[j, k]])
        for row in rows:
            for key, value in row.items():
                if key.startswith("probability") and value is None:
                    row[key] = math.nan
        return rows

