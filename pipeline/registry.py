"""The model registry: register a logged model, and move `champion` only through the gate.

The gate scores the current champion again on the *new* run's test split, so both numbers
come from the same names: a new version becomes champion only if its macro-F1 is at least
the champion's; otherwise it is tagged `challenger`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.metrics import f1_score

from pipeline.errors import NamelangError, TrackingError
from pipeline.tracking import MODEL_NAME

CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass(frozen=True)
class PromotionDecision:
    version: str
    alias: str                       # champion | challenger
    new_macro_f1: float
    champion_macro_f1: float | None  # None when there was no champion
    previous_champion: str | None

    def as_dict(self) -> dict:
        return asdict(self)


def macro_f1(predicted: list[str], true: list[str]) -> float:
    """Macro-F1 over the languages present in `true`, from language names (so label sets may differ)."""
    return float(f1_score(np.asarray(true, dtype=object), np.asarray(predicted, dtype=object), average="macro",
                          labels=sorted(set(true)), zero_division=0))


def model_uri(alias: str = CHAMPION, name: str = MODEL_NAME) -> str:
    return f"models:/{name}@{alias}"


# what the registry answers for a model, version or alias that is not there
_NOT_THERE = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}


def get_alias_version(client: MlflowClient, alias: str, name: str = MODEL_NAME):
    """The version behind `alias`, or None when the registry says there is none. Any other failure
    (a locked database, a 5xx) is a `TrackingError`, worth a retry: read as "no champion", it would
    let the gate crown a new version without scoring the real champion."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in _NOT_THERE:
            return None
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TrackingError(f"the model store failed while looking up alias @{alias} ({first_line})",
                            mlflow.get_tracking_uri()) from exc


def load_model(uri: str = model_uri()):
    """Load a pyfunc model by URI; a one-line, actionable error when there is none yet, and a
    `TrackingError` (worth a retry) when the store itself failed (locked, unreachable, 5xx)."""
    try:
        return mlflow.pyfunc.load_model(uri)
    except MlflowException as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if exc.error_code not in _NOT_THERE:
            raise TrackingError(f"the model store failed while loading the model ({first_line})", uri) from exc
        problem = missing_model_problem(uri.removeprefix("models:/")) if uri.startswith("models:/") else None
        raise NamelangError(problem or f"cannot load model: {first_line}", None if problem else uri) from exc


_TRAIN_ONE = "train one with `make run` or `namelang train --source DATA`"


def missing_model_problem(ref: str) -> str | None:
    """What is missing of `models:/<ref>` and what there is instead (a registered model whose alias
    or version is missing needs another alias or version, not another training run); None when all
    of it is there (the model failed to load for another reason) or the store cannot say."""
    name, alias, version = ref, None, None
    if "@" in ref:
        name, alias = ref.split("@", 1)
    elif "/" in ref:
        name, version = ref.split("/", 1)
    client = MlflowClient()
    try:
        registered = client.get_registered_model(name)
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return f"no model {ref!r} in the registry at {mlflow.get_tracking_uri()}; {_TRAIN_ONE}"
        return None
    if not versions:
        return f"model {name!r} has no versions yet; {_TRAIN_ONE}"
    if alias is not None and alias in registered.aliases:
        return None
    if version is not None and version.isdigit() and int(version) in versions:
        return None
    wanted = f"alias @{alias}" if alias is not None else f"version {version}" if version else "version or alias"
    aliases = ", ".join(f"@{a} (version {v})" for a, v in sorted(registered.aliases.items())) or "none"
    listed = ", ".join(map(str, versions[-10:])) + (f" (and {len(versions) - 10} older)" if len(versions) > 10 else "")
    return (f"model {name!r} in the registry at {mlflow.get_tracking_uri()} has no {wanted}; its aliases: "
            f"{aliases}; its versions: {listed}; e.g. models:/{name}/{versions[-1]}")


def score_model(uri: str, names: list[str], true_languages: list[str]) -> float:
    frame = load_model(uri).predict(pd.DataFrame({"name": names}))
    return macro_f1(frame["language"].fillna("").tolist(), true_languages)


def register(model_uri_: str, tags: dict[str, str], name: str = MODEL_NAME):
    return mlflow.register_model(model_uri_, name, tags={k: str(v) for k, v in tags.items()})


MODEL_DESCRIPTION = ("Which language a surname comes from, from its spelling (namelang). Input: a DataFrame with a "
                     "string column `name`; output: the top-3 languages with probabilities, or an `error`.")


def describe(version: str, text: str, name: str = MODEL_NAME) -> None:
    """What the registry UI shows: the model's purpose once, each version's own figures."""
    client = MlflowClient()
    if not client.get_registered_model(name).description:
        client.update_registered_model(name, description=MODEL_DESCRIPTION)
    client.update_model_version(name, str(version), description=text)


def promote_if_better(version: str, new_macro_f1: float, test_names: list[str], test_languages: list[str],
                      name: str = MODEL_NAME) -> PromotionDecision:
    """Give `version` the champion alias if it scores at least the champion on the same test names.

    The decision is recorded in the version's `gate.*` tags before the alias moves; a retry after
    a failure (the alias may already point here) takes the recorded decision instead of judging
    the version against itself.
    """
    client = MlflowClient()
    recorded = _recorded_decision(client, name, str(version))
    if recorded is not None:
        client.set_registered_model_alias(name, recorded.alias, str(version))
        return recorded
    current = get_alias_version(client, CHAMPION, name)
    champion_f1 = None
    if current is not None and str(current.version) != str(version):
        champion_f1 = score_model(f"models:/{name}/{current.version}", test_names, test_languages)
    promote = champion_f1 is None or new_macro_f1 >= champion_f1
    alias = CHAMPION if promote else CHALLENGER
    decision = PromotionDecision(str(version), alias, new_macro_f1, champion_f1,
                                 str(current.version) if current is not None else None)
    for key, value in {"gate.decision": "promoted to champion" if promote else "kept champion; challenger",
                       "gate.new_macro_f1": repr(float(new_macro_f1)),  # exact: a retry reads them back
                       "gate.champion_macro_f1": "" if champion_f1 is None else repr(float(champion_f1)),
                       "gate.previous_champion": decision.previous_champion or "",
                       "gate.alias": alias}.items():  # written last: its presence means all are there
        client.set_model_version_tag(name, str(version), key, value)
    client.set_registered_model_alias(name, alias, str(version))
    return decision


def _recorded_decision(client: MlflowClient, name: str, version: str) -> PromotionDecision | None:
    tags = client.get_model_version(name, version).tags
    if "gate.alias" not in tags:
        return None
    return PromotionDecision(version, tags["gate.alias"], float(tags["gate.new_macro_f1"]),
                             float(tags["gate.champion_macro_f1"]) if tags["gate.champion_macro_f1"] else None,
                             tags["gate.previous_champion"] or None)
