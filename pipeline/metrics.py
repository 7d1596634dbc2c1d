"""Macro-F1 as namelang scores it everywhere: early stopping, the evaluation, the promotion gate.

One definition, since those three must agree: the mean F1 over the languages present among the true
labels. A language with no test names has no F1 to speak of (it would add a 0, or sklearn's warning);
one that is predicted but absent still costs precision to the languages it took names from.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import f1_score


def macro_f1(y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray) -> float:
    """Over the labels present in `y_true`: indices or language names alike (then the two models'
    label sets may differ)."""
    y_true = np.asarray(y_true)
    return float(f1_score(y_true, y_pred, average="macro", labels=np.unique(y_true), zero_division=0))
