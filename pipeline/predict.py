"""Predict languages for raw names: normalization, validation and batching in one place.

Shared by evaluation, the MLflow pyfunc model, the CLI and batch prediction, so every path
treats a name the same way.
"""

from __future__ import annotations

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

    def predict(self, names: list[Any], top_k: int = TOP_K) -> dict[str, list]:
        """Columns (see `output_columns`) with the top-k languages and probabilities of each name,
        or, for a name that cannot be classified, None there and the reason in `error`."""
        top_k = max(1, min(top_k, len(self.label_names)))
        strings = [v.strip() if isinstance(v, str) else "" for v in names]
        short = [s if len(s) <= self.max_name_chars else "" for s in strings]
        ascii_names = to_ascii(pa.array(short, type=pa.string())).to_pylist()
        problems = [_problem(v, a, self.max_name_chars) for v, a in zip(names, ascii_names, strict=True)]
        ok = np.flatnonzero(np.array([p is None for p in problems], dtype=bool))
        n = len(names)
        columns: dict[str, list] = {"name": [v if isinstance(v, str) else repr(v) for v in names]}
        for k in range(top_k):
            suffix = "" if k == 0 else f"_{k + 1}"
            columns[f"language{suffix}"] = [None] * n
            columns[f"probability{suffix}"] = [None] * n
        columns["error"] = problems
        if len(ok):
            probs = self.probabilities([ascii_names[i] for i in ok])
            top = np.argsort(-probs, axis=1)[:, :top_k]
            top_p = np.take_along_axis(probs, top, axis=1).astype(float)
            labels = np.asarray(self.label_names, dtype=object)
            for k in range(top_k):
                suffix = "" if k == 0 else f"_{k + 1}"
                lang_col, prob_col = columns[f"language{suffix}"], columns[f"probability{suffix}"]
                for j, (lang, p) in enumerate(zip(labels[top[:, k]].tolist(), top_p[:, k].tolist(), strict=True)):
                    lang_col[ok[j]] = lang
                    prob_col[ok[j]] = p
        return columns
