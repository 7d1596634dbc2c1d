"""Predict languages for raw names: normalization, validation and batching in one place.

Behind the MLflow pyfunc model, through which the CLI, the REST endpoint and batch prediction all
predict, so every path treats a raw name the same way (evaluation scores encoded test rows directly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from pipeline.config import MAX_NAME_CHARS, TOP_K
from pipeline.features import encode_marks, encode_names, letters_beyond_ascii
from pipeline.model import CharClassifier, predict_logits
from pipeline.normalize import REJECTION_REASONS, folded_names, rejection_codes

# why a name cannot be classified: the same rules, in the same order, as rows rejected from the
# training table (`normalize.REJECTION_REASONS`), worded for whoever sent the name
_MESSAGES = {
    "blank": "empty name",
    "control_characters": "control characters in the name",
    "too_long": "name longer than {max_chars} characters ({length})",
    "empty_after_normalization": "no Latin letters after normalization",
    "no_latin_letters": "no Latin letters after normalization",
}


def rank_columns(rank: int) -> tuple[str, str]:
    """Language and probability columns of the `rank`-th guess (1-based): language, language_2, ..."""
    suffix = "" if rank == 1 else f"_{rank}"
    return f"language{suffix}", f"probability{suffix}"


def output_columns(top_k: int = TOP_K) -> list[str]:
    return ["name"] + [col for rank in range(1, top_k + 1) for col in rank_columns(rank)] + ["error"]


def _problems(names: list[Any], unreadable: list[bool], stripped: list[str], ascii_names: list[str],
              max_chars: int) -> list[str | None]:
    """Per name, why it cannot be classified (None when it can)."""
    codes = rejection_codes(pa.array(stripped, type=pa.string()), pa.array(ascii_names, type=pa.string()),
                            max_chars)
    problems: list[str | None] = []
    for value, bad_bytes, text, code in zip(names, unreadable, stripped, codes.tolist(), strict=True):
        if _missing(value):
            problems.append("missing name (null)")  # JSON null arrives as None or NaN, not as "a float"
        elif not isinstance(value, str):
            problems.append(f"name must be a string, got {type(value).__name__}")
        elif bad_bytes:
            problems.append("not valid UTF-8 (a byte that is no character)")
        elif code:
            message = _MESSAGES[REJECTION_REASONS[code - 1]]
            problems.append(message.format(max_chars=max_chars, length=len(text)))
        else:
            problems.append(None)
    return problems


def _is_unicode(text: str) -> bool:
    """False for a string holding lone surrogates: how Python passes on bytes that are not UTF-8 (a
    command-line argument, say); no text format can hold them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(text: str) -> str:
    """A name that is not valid Unicode as it can be written out: undecodable bytes as \\xNN escapes."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogates that stand for no byte (from JSON's \\ud800, say)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _missing(value: Any) -> bool:
    """None, NaN (of any float type) or pandas' NA: what a DataFrame holds for a missing name."""
    try:
        return pd.api.types.is_scalar(value) and bool(pd.isna(value))
    except (TypeError, ValueError, ArithmeticError):  # Decimal("sNaN") raises InvalidOperation: not "missing"
        return False


@dataclass
class Predictor:
    """A trained model with its labels; `predict` takes raw names and never raises on a bad row."""

    model: CharClassifier
    label_names: list[str]
    max_name_chars: int = MAX_NAME_CHARS

    def probabilities(self, names_ascii: list[str], spellings: list[str] | None = None) -> np.ndarray:
        """`spellings`: the names as written, before ASCII folding, whose accented letters the
        letter model reads (without them, it says nothing)."""
        tokens, lengths = encode_names(names_ascii)
        marks = None if spellings is None else encode_marks(letters_beyond_ascii(spellings))
        return torch.softmax(predict_logits(self.model, tokens, lengths, marks), dim=1).numpy()

    def predict(self, names: str | list[Any], top_k: int = TOP_K) -> dict[str, list]:
        """Columns (see `output_columns`) with the top-k languages and probabilities of each name,
        or, for a name that cannot be classified, None there and the reason in `error`. One string is
        one name (iterated, it would be its letters)."""
        if isinstance(names, str):
            names = [names]
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        top_k = min(top_k, len(self.label_names))
        unreadable = [isinstance(v, str) and not _is_unicode(v) for v in names]  # bytes that were not UTF-8
        strings = [v.strip() if isinstance(v, str) and not bad else ""
                   for v, bad in zip(names, unreadable, strict=True)]
        short = [s if len(s) <= self.max_name_chars else "" for s in strings]  # too long: not worth folding
        ascii_names = folded_names(pa.array(short, type=pa.string())).to_pylist()
        problems = _problems(names, unreadable, strings, ascii_names, self.max_name_chars)
        ok = np.flatnonzero(np.array([p is None for p in problems], dtype=bool))
        n = len(names)
        # a missing name stays missing (JSON null, not the text "None"); another value is echoed as written
        columns: dict[str, list] = {"name": [_shown(v) if bad else v if isinstance(v, str) else None if _missing(v)
                                             else repr(v) for v, bad in zip(names, unreadable, strict=True)]}
        for rank in range(1, top_k + 1):
            for col in rank_columns(rank):
                columns[col] = [None] * n
        columns["error"] = problems
        if len(ok):
            probs = self.probabilities([ascii_names[i] for i in ok], [strings[i] for i in ok])
            top = np.argsort(-probs, axis=1)[:, :top_k]
            top_p = np.take_along_axis(probs, top, axis=1).astype(float)
            labels = np.asarray(self.label_names, dtype=object)
            for k in range(top_k):
                lang_col, prob_col = (columns[c] for c in rank_columns(k + 1))
                for j, (lang, p) in enumerate(zip(labels[top[:, k]].tolist(), top_p[:, k].tolist(), strict=True)):
                    lang_col[ok[j]] = lang
                    prob_col[ok[j]] = p
        return columns
