"""The model as users get it: an MLflow pyfunc taking DataFrame[name] and returning languages.

Weights travel as a small bundle file (state dict + config + labels) loaded on CPU, so a model
trained on a GPU predicts anywhere. The `pipeline` package travels with the model (code_paths),
so it loads in a fresh process outside this repository.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from pipeline.config import PREDICT_MAX_THREADS, TOP_K, ModelConfig
from pipeline.errors import NamelangError, typed_first_line
from pipeline.model import CharClassifier
from pipeline.predict import Predictor, output_columns
from pipeline.torch_files import load_torch_file, save_torch_file

BUNDLE_FORMAT = 1
INPUT_EXAMPLE = pd.DataFrame({"name": ["Hinton", "Nakamura", "Schmidt"]})


def save_bundle(path: str | Path, model: CharClassifier, label_names: list[str], max_name_chars: int) -> Path:
    """Weights (on CPU), model config and labels in one file, written atomically."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_torch_file({"format": BUNDLE_FORMAT, "state_dict": state, "model_config": model.config.model_dump(),
                            "label_names": list(label_names), "max_name_chars": max_name_chars}, path)


def load_bundle(path: str | Path) -> Predictor:
    raw = load_torch_file(path, "model bundle")
    try:  # a bundle that reads but does not fit this code: maybe another version's, maybe our bug (traceback kept)
        # a bundle from before the letter model has none: its config must not grow one on loading
        model = CharClassifier(ModelConfig(**{"marks_weight": 0.0, **raw["model_config"]}), len(raw["label_names"]))
        model.load_state_dict(raw["state_dict"])
        label_names, max_name_chars = raw["label_names"], raw["max_name_chars"]
    except Exception as exc:
        raise NamelangError(f"model bundle does not fit this version of namelang ({typed_first_line(exc)})",
                            path) from exc
    model.eval()
    return Predictor(model, label_names, max_name_chars)


class NamelangModel(mlflow.pyfunc.PythonModel):
    """pyfunc: DataFrame with a string column `name` in, top-k languages with probabilities out."""

    def load_context(self, context) -> None:
        torch.set_num_threads(max(1, min(PREDICT_MAX_THREADS, torch.get_num_threads())))
        self.predictor = load_bundle(context.artifacts["bundle"])

    # A DataFrame hint: MLflow infers no schema from it (the explicit signature applies) and does not
    # validate by type hints; rows are validated here, each with its own error.
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        if isinstance(model_input, pd.Series):
            model_input = model_input.to_frame("name")
        if not isinstance(model_input, pd.DataFrame) or "name" not in model_input.columns:
            raise MlflowException("input needs a column 'name' of strings, e.g. "
                                  '{"dataframe_split": {"columns": ["name"], "data": [["Hinton"]]}}',
                                  error_code=INVALID_PARAMETER_VALUE)
        model_input = _one_row_per_name(model_input)
        asked = (params or {}).get("top_k")
        top_k = TOP_K if asked is None else int(asked)  # a JSON null is no choice: the default
        if top_k < 1:
            raise MlflowException("top_k must be at least 1", error_code=INVALID_PARAMETER_VALUE)
        # MLflow passes the default (3) when none is asked for: the predictor gives as many guesses
        # as the model has languages, at most top_k
        columns = self.predictor.predict(model_input["name"].tolist(), top_k)
        # object columns, so a missing language, probability or error is None (JSON null), never NaN; the
        # input's index, so that `frame["language"] = model.predict(frame)["language"]` lines up
        return pd.DataFrame({col: pd.Series(values, dtype=object, index=model_input.index)
                             for col, values in columns.items()}, index=model_input.index)


def _one_row_per_name(frame: pd.DataFrame) -> pd.DataFrame:
    """`{"name": ["Hinton", "Nakamura"]}`, MLflow's usual columns-of-lists input, reaches the model as one
    row holding the list (MLflow keeps a dict of string lists whole, for chat models): one row per name."""
    if len(frame) == 1 and isinstance(names := frame["name"].iloc[0], list | tuple | np.ndarray):
        return pd.DataFrame({"name": pd.Series(list(names), dtype=object)})
    return frame


def signature() -> ModelSignature:
    # only `name` is always there: a refused name has no languages, and a model of fewer
    # languages than TOP_K gives fewer guesses
    outputs = [ColSpec("double" if col.startswith("probability") else "string", col, required=col == "name")
               for col in output_columns(TOP_K)]
    # a string column: MLflow then reads the `inputs` and `instances` formats as lists of names (as
    # "any", a list of names became one row holding the list); the price is that in those two formats
    # it makes text of every value first (a JSON null arrives as the name "None"), as the README says
    return ModelSignature(inputs=Schema([ColSpec("string", "name")]), outputs=Schema(outputs),
                          params=ParamSchema([ParamSpec("top_k", "long", TOP_K)]))


def code_path() -> str:
    """The `pipeline` package folder: copied into the model so it loads outside this repository."""
    return str(Path(__file__).resolve().parent)


def entry_point() -> str:
    """The model-from-code file that MLflow runs to build the model at load time."""
    return str(Path(__file__).resolve().with_name("pyfunc_entry.py"))
