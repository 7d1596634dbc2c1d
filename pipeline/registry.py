"""The model registry: register a logged model, and move `champion` only through the gate.

The gate scores the current champion again on the *new* run's test split, so both numbers
come from the same names: a new version becomes champion only if its macro-F1 is at least
the champion's; otherwise it is tagged `challenger`. Test names either model learnt from (each
run's `data/learnt_names.txt`: its train and validation names; case aside) are left out of that comparison,
for both models: on grown data or another split seed most of a new test split may be names the
champion was trained on, and it would be judged on them flattered; with the notebook's random
split of lines, copies of the new version's own training names are in its test split. With no
test name left, nothing is compared and the champion stays; so too when the champion cannot be
loaded (its files are gone) or the names it learnt from are unknown (its run was deleted): the
reason says so, and `namelang promote` settles it. One gate at a time on a SQLite store
(a lock file beside it); with a tracking server, the gate judges again when the champion changed
while it was scoring (a narrower window, not a lock: MLflow has no compare-and-set).
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import filelock
import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

from pipeline.atomic import scratch_folder
from pipeline.config import CHALLENGER, CHAMPION, name_key
from pipeline.errors import (
    MLFLOW_NOT_THERE,
    NamelangError,
    NamelangWarning,
    TrackingError,
    first_line,
    typed_first_line,
)
from pipeline.tracking import MODEL_NAME, artifact_progress_bars, configure, sqlite_file

if TYPE_CHECKING:  # annotations only: importing them would slow every command's start
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.pyfunc import PyFuncModel

HAND_PROMOTION_TAG = "champion.set_by_hand"  # on a version `namelang promote` crowned: when, over which version
LEARNT_NAMES_ARTIFACT = "data/learnt_names.txt"  # in each run: the names its model learnt from
GATE_LOCK_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class PromotionDecision:
    version: str
    alias: str                       # champion | challenger
    new_macro_f1: float              # on the names compared (all test names when nothing is left out)
    champion_macro_f1: float | None  # None when there was no champion, or no test name to compare on
    previous_champion: str | None
    compared_names: int | None = None  # test rows both models were scored on
    excluded_names: int = 0            # test rows left out: names the champion or the new version learnt
    missing_languages: tuple[str, ...] = ()  # the champion's languages the new version does not know
    champion_unjudged: str = ""      # why the champion could not be scored: cannot be loaded, learnt names gone

    def as_dict(self) -> dict:
        return {**asdict(self), "reason": self.reason()}

    def reason(self) -> str:
        """Why this alias, in one line: the `gate.decision` tag, the training summary and the
        Prefect artifact all print it, so the three never tell different stories."""
        if self.previous_champion is None:
            return "no champion before it"
        if self.champion_unjudged:
            return f"not compared: champion version {self.previous_champion} {self.champion_unjudged}"
        if self.missing_languages:
            return (f"not compared: it does not know {len(self.missing_languages)} of champion version "
                    f"{self.previous_champion}'s languages ({', '.join(self.missing_languages)})")
        if self.champion_macro_f1 is None:
            return (f"not compared: all {self.excluded_names} test rows are names champion version "
                    f"{self.previous_champion} or this one learnt from")
        rows = "" if self.compared_names is None else f", on {self.compared_names} test rows"  # older tags: unknown
        left_out = (f"; {self.excluded_names} left out, names one of the two models learnt from"
                    if self.excluded_names else "")
        return (f"macro-F1 {self.new_macro_f1:.4f} against champion version {self.previous_champion}'s "
                f"{self.champion_macro_f1:.4f}{rows}{left_out}")


def macro_f1(predicted: list[str], true: list[str]) -> float:
    """`pipeline.metrics.macro_f1` from language names, imported here, not at the top: `namelang predict`
    loads this module, and scikit-learn would add a second to its start."""
    from pipeline.metrics import macro_f1 as over_present_languages

    return over_present_languages(true, predicted)


def model_uri(alias: str = CHAMPION, name: str = MODEL_NAME) -> str:
    return f"models:/{name}@{alias}"


def get_alias_version(client: MlflowClient, alias: str, name: str = MODEL_NAME) -> ModelVersion | None:
    """The version behind `alias`, or None when the registry says there is none. Any other failure
    (a locked database, a 5xx) is a `TrackingError`, worth a retry: read as "no champion", it would
    let the gate crown a new version without scoring the real champion."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in MLFLOW_NOT_THERE:
            return None
        raise TrackingError(f"the model store failed while looking up alias @{alias} ({first_line(exc)})",
                            mlflow.get_tracking_uri()) from exc


def load_model(uri: str = model_uri(), download_bars: bool = True) -> PyFuncModel:
    """Load a pyfunc model by URI; a one-line, actionable error when there is none yet, and a
    `TrackingError` (worth a retry) when the store itself failed (locked, unreachable, 5xx).
    `download_bars=False`: none of MLflow's progress bars (an answer or a log, not a terminal's wait)."""
    _check_model_uri(uri)  # a malformed URI is the user's to mend, not a store failure to retry
    try:
        # a download (a tracking server's model) into a folder of ours, removed once loaded (the model holds
        # its weights in memory): MLflow never removes its own, 20 MB per command that loads a model
        scratch = contextlib.nullcontext() if _read_in_place(uri) else scratch_folder("namelang-model-")
        with artifact_progress_bars(download_bars), scratch as folder:
            return mlflow.pyfunc.load_model(uri, dst_path=folder)
    except ImportError as exc:  # s3://, gs://, wasbs://...: MLflow reaches such a store through a library of its own
        raise NamelangError(f"cannot load model: {typed_first_line(exc)} (the library MLflow reads this store "
                            "with is not installed)", uri) from exc
    except MlflowException as exc:
        if exc.error_code not in MLFLOW_NOT_THERE:
            raise TrackingError(f"the model store failed while loading the model ({first_line(exc)})", uri) from exc
        ref = parse_model_uri(uri)
        problem = missing_model_problem(ref) if ref is not None else None
        raise NamelangError(problem or f"cannot load model: {first_line(exc)}", None if problem else uri) from exc


def _read_in_place(uri: str) -> bool:
    """Whether MLflow reads the model where its files lie (a local store, a model folder) rather than
    downloading a copy: given a folder to copy into, it would copy, and name that folder when the files are gone."""
    repository = get_artifact_repository(uri)
    while hasattr(repository, "repo"):  # models:/ and runs:/ wrap the repository that holds the files
        if isinstance(repository, RunsArtifactRepository):  # a runs:/ model is copied even off a local store
            return False
        repository = repository.repo
    return isinstance(repository, LocalArtifactRepository)


_TRAIN_ONE = "train one with `make run` or `namelang train --source DATA`"
_URI_FORMS = "models:/<name>@<alias>, models:/<name>/<version>, runs:/<run id>/<path> or a model folder"


def _check_model_uri(uri: str) -> None:
    """Refuse, in words, the URIs MLflow would fail on as if its store had: a run without the path of
    its model, a registry stage (MLflow 3 has aliases), a web address, nothing at all."""
    ref = parse_model_uri(uri)
    if not uri.strip():
        raise NamelangError(f"no model URI given: expected {_URI_FORMS}")
    if ref is not None and ref.version is not None and not ref.version.isdigit() and ref.version != "latest":
        problem = missing_model_problem(ref)  # names the registry, and what there is instead
        raise NamelangError(problem or f"a model version is a number (or latest), got {ref.version!r}; registry "
                            "stages are not used here, aliases are", None if problem else uri)
    if re.fullmatch(r"runs:/+[^/]+/*", uri):
        raise NamelangError("a runs:/ URI names the model's path in the run too, e.g. runs:/<run id>/model", uri)
    if re.match(r"https?://", uri):
        raise NamelangError(f"a web address is not a model URI (expected {_URI_FORMS}); a model served over "
                            "REST is asked by a POST to its /invocations", uri)


@dataclass(frozen=True)
class ModelRef:
    """A `models:/` URI's parts: a registered model's name, and an alias or a version (or neither)."""

    name: str
    alias: str | None = None
    version: str | None = None


def pin_model_uri(uri: str) -> tuple[str, str]:
    """(URI to load, version to record) for a batch of predictions: an alias resolves to its version now,
    which is both recorded beside every prediction and the one loaded (an alias moved meanwhile does not
    change the model mid-file); a version asked for by number, or as `latest`, is recorded as its number;
    other URIs (a run's artifacts, a folder) stay as they are."""
    if configure_store_for(uri) is None:
        return uri, uri
    ref = parse_model_uri(uri)
    if ref is not None and ref.alias is not None:
        version = get_alias_version(MlflowClient(), ref.alias, ref.name)
        if version is None:
            # the same message as every other command: which aliases and versions there are instead
            raise NamelangError(missing_model_problem(ref)
                                or f"no version of model {ref.name!r} has the alias {ref.alias!r}")
        return f"models:/{ref.name}/{version.version}", str(version.version)
    if ref is not None and ref.version is not None and ref.version.isdigit():
        return uri, ref.version
    if ref is not None and ref.version == "latest":  # pinned too: a version registered meanwhile is not used
        try:
            numbers = [int(v.version) for v in MlflowClient().search_model_versions(f"name='{ref.name}'")]
        except MlflowException as exc:  # as for an alias: the user's (a name MLflow cannot search), or the store's
            if exc.error_code in MLFLOW_NOT_THERE:
                raise NamelangError(f"cannot look up model {ref.name!r}: {first_line(exc)}", uri) from exc
            raise TrackingError(f"the model store failed while looking up the latest version ({first_line(exc)})",
                                mlflow.get_tracking_uri()) from exc
        if not numbers:
            raise NamelangError(missing_model_problem(ref) or f"model {ref.name!r} has no versions")
        return f"models:/{ref.name}/{max(numbers)}", str(max(numbers))
    return uri, uri


def needs_tracking_store(uri: str) -> bool:
    """Whether loading `uri` asks the tracking store: a registered model or a run's artifacts do; a model
    folder (a path or `file://`), copied off the store or saved by `mlflow.pyfunc.save_model`, does not."""
    return uri.split(":/", 1)[0] in {"models", "runs", "mlflow-artifacts"} if ":/" in uri else False


def configure_store_for(uri: str) -> str | None:
    """Point MLflow at the existing tracking store (`tracking.configure`, create=False) when loading `uri`
    needs one; the store's URI, or None for a model folder, which loads without any."""
    return configure(create=False) if needs_tracking_store(uri) else None


def parse_model_uri(uri: str) -> ModelRef | None:
    """`models:/<name>@<alias>`, `models:/<name>/<version>` or `models:/<name>`; None for any other URI
    (`runs:/...`, a path). Split by hand: MLflow's own parser
    (mlflow.store.artifact.utils.models._parse_model_uri) is private, and it reads `models:/<name>`
    without a version as a logged-model id, not a name."""
    if not uri.startswith("models:/"):
        return None
    ref = uri.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        parsed = ModelRef(name, alias=alias)
    elif "/" in ref:
        name, version = ref.split("/", 1)
        parsed = ModelRef(name, version=version)
    else:
        parsed = ModelRef(ref)
    if not parsed.name or parsed.alias == "" or parsed.version == "":  # not the store's failure: the URI's
        raise NamelangError("bad model URI: expected models:/<name>@<alias>, models:/<name>/<version> or "
                            "models:/<name>/latest", uri)
    return parsed


def missing_model_problem(ref: ModelRef) -> str | None:
    """What is missing of the model `ref` names and what there is instead (a registered model whose
    alias or version is missing needs another alias or version, not another training run); None when
    all of it is there (the model failed to load for another reason) or the store cannot say."""
    name, alias, version = ref.name, ref.alias, ref.version
    client = MlflowClient()
    try:
        registered = client.get_registered_model(name)
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return f"no model {name!r} in the registry at {mlflow.get_tracking_uri()}; {_TRAIN_ONE}"
        return None
    if not versions:
        return f"model {name!r} has no versions yet; {_TRAIN_ONE}"
    if alias is not None and alias in registered.aliases:
        return None
    if version == "latest" or version is not None and version.isdigit() and int(version) in versions:
        return None  # all there (`latest` is the newest version): its files are what failed to load
    wanted = f"alias @{alias}" if alias is not None else f"version {version}" if version else "version or alias"
    aliases = ", ".join(f"@{a} (version {v})" for a, v in sorted(registered.aliases.items())) or "none"
    listed = ", ".join(map(str, versions[-10:])) + (f" (and {len(versions) - 10} older)" if len(versions) > 10 else "")
    return (f"model {name!r} in the registry at {mlflow.get_tracking_uri()} has no {wanted}; its aliases: "
            f"{aliases}; its versions: {listed}; e.g. models:/{name}/{versions[-1]}")


def score_model(model: PyFuncModel, names: list[str], true_languages: list[str]) -> float:
    """Macro-F1 of a loaded pyfunc model (or one loaded from a URI) on these names."""
    model = load_model(model) if isinstance(model, str) else model
    frame = model.predict(pd.DataFrame({"name": names}))
    return macro_f1(frame["language"].fillna("").tolist(), true_languages)


def model_languages(model: PyFuncModel) -> list[str] | None:
    """The languages a loaded namelang pyfunc model knows; None for a model of another kind."""
    try:
        return list(model.unwrap_python_model().predictor.label_names)
    except AttributeError:
        return None


def register(model_uri_: str, tags: dict[str, str], name: str = MODEL_NAME) -> ModelVersion:
    return mlflow.register_model(model_uri_, name, tags={k: str(v) for k, v in tags.items()})


MODEL_DESCRIPTION = ("Which language a surname comes from, from its spelling (namelang). Input: a DataFrame with a "
                     "string column `name`; output: the top-3 languages with probabilities, or an `error`.")


def describe(version: str, text: str, name: str = MODEL_NAME) -> None:
    """What the registry UI shows: the model's purpose once, each version's own figures."""
    client = MlflowClient()
    if not client.get_registered_model(name).description:
        client.update_registered_model(name, description=MODEL_DESCRIPTION)
    client.update_model_version(name, str(version), description=text)


def promote_if_better(version: str, test_names: list[str], test_languages: list[str], predicted: list[str], *,
                      languages: list[str], spellings: list[str] | None = None,
                      name: str = MODEL_NAME) -> PromotionDecision:
    """Give `version` the champion alias if it scores at least the champion on the same test names,
    those neither model learnt from; with no such name, the champion stays and `version` is challenger.
    So does it when it does not know every language the champion knows (`languages`: those of the
    new version): a model of English and German scores well on a test split of English and German
    names, and would answer English for "Nakamura".

    `predicted` holds the new version's predicted language for each test name (evaluation has them
    already): the version is scored on any subset from them, not loaded back from the registry.
    `spellings`: each test name as written (accents and all), what the champion is asked about, so
    that it reads what evaluation gave the new version; `test_names` (ASCII) are what the models
    learnt from, and decide which names are left out.

    The decision is recorded in the version's `gate.*` tags before the alias moves; a retry after
    a failure (the alias may already point here) takes the recorded decision instead of judging
    the version against itself, unless the champion has changed since; a `promote` by hand made since
    (a rollback from this version, this challenger crowned) is left as it is.
    """
    client = MlflowClient()
    with gate_lock(name):
        current = get_alias_version(client, CHAMPION, name)
        recorded = _recorded_decision(client, name, str(version))
        # a recorded decision stands, unless it crowned this version over a champion since replaced: then
        # it is judged again, against the newer one
        if recorded is not None and (recorded.alias != CHAMPION
                                     or _version(current) in {None, str(version), recorded.previous_champion}):
            if not _overruled_by_hand(client, name, str(version), recorded, current):
                client.set_registered_model_alias(name, recorded.alias, str(version))
            return recorded
        for _ in range(3):  # a store without a lock file (a tracking server): re-judge if the champion moved
            decision = _judge(client, name, str(version), test_names, test_languages, predicted, current,
                              sorted(set(languages)), spellings or test_names)
            after = get_alias_version(client, CHAMPION, name)
            if _version(after) == _version(current):
                break
            current = after
        else:
            raise TrackingError("the champion changed three times while this version was being judged; try again",
                                mlflow.get_registry_uri())
        if recorded is not None:  # judged again: until all the new tags are written, no decision is recorded
            client.delete_model_version_tag(name, str(version), "gate.alias")
        _record(client, name, decision)
        client.set_registered_model_alias(name, decision.alias, str(version))
        return decision


def _overruled_by_hand(client: MlflowClient, name: str, version: str, recorded: PromotionDecision,
                       current: ModelVersion | None) -> bool:
    """Whether a `namelang promote` made since the gate's decision on `version` stands against it: the
    champion set by hand over this version (a rollback), or this challenger promoted by hand. A retried
    registration (its task retried after the decision, a resumed run) must not undo either."""
    if current is not None and str(current.version) != version:
        return current.tags.get(HAND_PROMOTION_TAG, "").endswith(f"over version {version}")
    return recorded.alias == CHALLENGER and HAND_PROMOTION_TAG in client.get_model_version(name, version).tags


def promote(version: str, name: str = MODEL_NAME) -> str | None:
    """Give `version` the champion alias by hand: a version the gate made challenger, or a rollback.
    Returns the version that held the alias before (None when none did).

    Under the gate's lock, so a training run's gate cannot judge against a champion that moves while
    it scores. The version loses `challenger` if it held it, and its `champion.set_by_hand` tag
    records when and over which version, beside the gate's own tags. A version that lacks some of the
    old champion's languages is still promoted (a rollback is deliberate), with a warning naming them:
    names of those languages are then answered with others."""
    client = MlflowClient()
    if not re.fullmatch(r"[0-9]+", str(version)):
        raise NamelangError(f"a model version is a number, got {version!r}")
    version = str(int(version))
    with gate_lock(name):
        problem = missing_model_problem(ModelRef(name, version=version))
        if problem is not None:
            raise NamelangError(problem)
        try:
            target = client.get_model_version(name, version)
            previous = _version(get_alias_version(client, CHAMPION, name))
            if previous == str(target.version):
                return previous
            when = datetime.now(UTC).isoformat(timespec="seconds")
            client.set_model_version_tag(name, target.version, HAND_PROMOTION_TAG,
                                         f"{when}, over version {previous}" if previous else when)
            client.set_registered_model_alias(name, CHAMPION, target.version)
            if CHALLENGER in target.aliases:
                client.delete_registered_model_alias(name, CHALLENGER)
        except MlflowException as exc:
            raise TrackingError(f"the model store failed while moving @{CHAMPION} ({first_line(exc)})",
                                mlflow.get_registry_uri()) from exc
    if previous is not None and (lost := _languages_lost(name, previous, version)):
        warnings.warn(f"version {version} does not know {len(lost)} of version {previous}'s languages "
                      f"({', '.join(lost)}): names of those are now answered with others", NamelangWarning,
                      stacklevel=2)
    return previous


def _languages_lost(name: str, old: str, new: str) -> list[str]:
    """The languages version `old` answers that version `new` does not; none known when either cannot be
    loaded (its files gone, a model of another kind): the promotion itself does not depend on it."""
    known = []
    for version in (old, new):
        try:
            known.append(model_languages(load_model(f"models:/{name}/{version}", download_bars=False)))
        except Exception:  # noqa: BLE001 - advice only, after the alias moved: an old version that will not load
            return []      # (its files gone, an older namelang's pickle) must not turn the promotion into a traceback
    return [] if None in known else sorted(set(known[0]) - set(known[1]))


def _record(client: MlflowClient, name: str, d: PromotionDecision) -> None:
    """The decision as the version's `gate.*` tags (`_recorded_decision` reads them back)."""
    verdict = "promoted to champion" if d.alias == CHAMPION else "challenger; the champion stays"
    tags = {"gate.decision": f"{verdict}: {d.reason()}",
            "gate.new_macro_f1": repr(float(d.new_macro_f1)),  # exact: a retry reads them back
            "gate.champion_macro_f1": "" if d.champion_macro_f1 is None else repr(float(d.champion_macro_f1)),
            "gate.previous_champion": d.previous_champion or "",
            "gate.compared_names": "" if d.compared_names is None else str(d.compared_names),
            "gate.excluded_names": str(d.excluded_names),
            "gate.missing_languages": json.dumps(list(d.missing_languages)),
            "gate.champion_unjudged": d.champion_unjudged,
            "gate.alias": d.alias}  # written last: its presence means all are there
    for key, value in tags.items():
        client.set_model_version_tag(name, d.version, key, value)


def _version(model_version) -> str | None:
    return None if model_version is None else str(model_version.version)


def _judge(client: MlflowClient, name: str, version: str, test_names: list[str], test_languages: list[str],
           predicted: list[str], current, languages: list[str], spellings: list[str]) -> PromotionDecision:
    """Both models' macro-F1 on the test names neither learnt from, and the verdict."""
    if not len(predicted) == len(test_languages) == len(spellings) == len(test_names):
        raise ValueError(f"{len(test_names)} test names, {len(test_languages)} languages, {len(spellings)} spellings "
                         f"and {len(predicted)} predictions: one of each per row expected")
    if _version(current) in {None, version}:
        return PromotionDecision(version, CHAMPION, macro_f1(predicted, test_languages), None, None)
    previous = str(current.version)
    unjudged = functools.partial(PromotionDecision, version, CHALLENGER, macro_f1(predicted, test_languages), None,
                                 previous)  # the champion stays, and the reason says why it was not scored
    try:
        champion = load_model(f"models:/{name}/{previous}")
    except TrackingError:
        raise  # the store failed: worth a retry
    except NamelangError as exc:  # its files are gone (say): it serves no one, but the gate cannot judge it
        return unjudged(champion_unjudged=f"cannot be loaded ({first_line(exc.problem)})")
    missing = tuple(sorted(set(model_languages(champion) or []) - set(languages)))
    if missing:  # it cannot answer what the champion answers: a smaller task, not a better model
        return unjudged(missing_languages=missing)
    champion_learnt = learnt_names(client, current.run_id)
    if champion_learnt is None:  # scored on names it may have learnt, it would be judged flattered
        return unjudged(champion_unjudged="has no record of the names it learnt from (its run was deleted, or "
                        "an older namelang trained it), so no test name is known to be new to it")
    # names either model learnt from: the champion's, and the new version's own where its split let
    # copies of a name fall on both sides (the notebook's random split of lines)
    learnt = champion_learnt | (learnt_names(client, client.get_model_version(name, version).run_id) or set())
    keep = rows_new_to(test_names, learnt)
    if not keep:  # one model or the other learnt every one of them: no evidence, so the champion stays
        return PromotionDecision(version, CHALLENGER, macro_f1(predicted, test_languages), None, previous, 0,
                                 len(test_names))
    kept_languages = [test_languages[i] for i in keep]
    champion_f1 = score_model(champion, [spellings[i] for i in keep], kept_languages)
    new_f1 = macro_f1([predicted[i] for i in keep], kept_languages)
    alias = CHAMPION if new_f1 >= champion_f1 else CHALLENGER
    return PromotionDecision(version, alias, new_f1, champion_f1, previous, len(keep), len(test_names) - len(keep))


def rows_new_to(names: list[str], learnt: set[str]) -> list[int]:
    """Rows whose name no model learnt, names keyed as the split keys them (`name_key`): a champion
    that learnt "an" would be judged on "An"."""
    known = {name_key(n) for n in learnt}
    return [i for i, n in enumerate(names) if name_key(n) not in known]


def learnt_names(client: MlflowClient, run_id: str | None) -> set[str] | None:
    """The names a run's model learnt from; None for a run that did not record them (an older
    namelang, a deleted run): the gate then does not compare. A store that fails is a
    TrackingError: read as "not recorded", it would judge the champion on names it learnt."""
    folder = LEARNT_NAMES_ARTIFACT.rsplit("/", 1)[0]
    try:
        if not run_id or LEARNT_NAMES_ARTIFACT not in {a.path for a in client.list_artifacts(run_id, folder)}:
            return None
        with scratch_folder("namelang-learnt-") as scratch:  # MLflow's own would stay
            path = client.download_artifacts(run_id, LEARNT_NAMES_ARTIFACT, dst_path=scratch)
            return set(Path(path).read_text(encoding="utf-8").splitlines())
    except (MlflowException, OSError) as exc:  # OSError: requests' connection errors, a local store's files
        if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":  # the run itself is gone
            return None
        raise TrackingError(f"could not read the names run {run_id} learnt from ({first_line(exc)})",
                            mlflow.get_tracking_uri()) from exc


@contextlib.contextmanager
def gate_lock(name: str) -> Iterator[None]:
    """One gate at a time on a SQLite store (two runs at once both judged against the old champion,
    and the later one won the alias whatever its score); a server store has no file to lock."""
    db = sqlite_file(mlflow.get_registry_uri())
    if db is None:
        yield
        return
    lock = filelock.FileLock(f"{db}.{name}-gate.lock", timeout=GATE_LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except filelock.Timeout as exc:
        raise TrackingError(f"another run held the promotion gate for over {GATE_LOCK_TIMEOUT_S:.0f} s",
                            lock.lock_file) from exc
    try:
        yield
    finally:
        lock.release()


def _recorded_decision(client: MlflowClient, name: str, version: str) -> PromotionDecision | None:
    tags = client.get_model_version(name, version).tags
    if "gate.alias" not in tags:
        return None
    return PromotionDecision(version, tags["gate.alias"], float(tags["gate.new_macro_f1"]),
                             float(tags["gate.champion_macro_f1"]) if tags["gate.champion_macro_f1"] else None,
                             tags["gate.previous_champion"] or None,
                             int(tags["gate.compared_names"]) if tags.get("gate.compared_names") else None,
                             int(tags.get("gate.excluded_names") or 0),
                             tuple(json.loads(tags.get("gate.missing_languages") or "[]")),
                             tags.get("gate.champion_unjudged", ""))
