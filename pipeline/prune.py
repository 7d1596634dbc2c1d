"""Housekeeping: old model versions, and the runs and logged models behind them.

Each registered version keeps its logged model (about 20 MB: the weights and the n-gram tables) and
its run's artifacts in the store for good, so a weekly retraining grows `mlruns/` by about 1 GB a
year. Pruning keeps the newest versions, every version an alias names (the champion, a challenger,
one set by hand) and any the gate has not judged yet, and deletes the rest through MLflow: each
one's logged model and run first, the version last (so that a prune cut short is finished by the
next), then, on the embedded SQLite store, the files of exactly those runs and logged models.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from pipeline.errors import NamelangError, TrackingError, first_line
from pipeline.registry import gate_lock
from pipeline.tracking import MODEL_NAME, sqlite_file


@dataclass(frozen=True)
class Pruning:
    """What a prune kept and deleted (or, for a dry run, would delete)."""

    kept: list[str]                   # versions, newest first
    deleted: list[str]                # versions, newest first
    runs: list[str]                   # the deleted versions' runs (not those another version uses)
    logged_models: list[str]          # and their logged models
    freed_bytes: int | None = None    # their files removed from the embedded store; None otherwise


def plan(versions: list[ModelVersion], aliased: set[str], keep: int) -> tuple[list[ModelVersion], list[ModelVersion]]:
    """(kept, to delete), newest first: the `keep` newest versions stay, and so do those in `aliased`
    and those the gate has not judged yet (no `gate.alias` tag: a training registering it now)."""
    if keep < 1:
        raise NamelangError(f"keep at least one version, got {keep}")
    newest_first = sorted(versions, key=lambda v: int(v.version), reverse=True)
    kept = {str(v.version) for i, v in enumerate(newest_first)
            if i < keep or str(v.version) in aliased or "gate.alias" not in (v.tags or {})}
    return ([v for v in newest_first if str(v.version) in kept],
            [v for v in newest_first if str(v.version) not in kept])


def logged_model_id(version: ModelVersion) -> str | None:
    """The logged model a version was registered from: MLflow 3 records it as the version's source,
    `models:/m-...` (its `model_id` field is not filled in by the store's reads)."""
    if getattr(version, "model_id", None):
        return version.model_id
    source = version.source or ""
    return source.removeprefix("models:/") if source.startswith("models:/m-") else None


def prune(keep: int = 5, name: str = MODEL_NAME, dry_run: bool = False) -> Pruning:
    """Delete the versions `plan` does not keep, with their runs and logged models (see the module's
    docstring). Under the promotion gate's lock: a gate judging meanwhile sees no version vanish."""
    client = MlflowClient()
    with gate_lock(name):
        try:
            found = _versions(client, name)
            if found is None:
                return Pruning([], [], [], [])
            versions, aliased = found
            kept, doomed = plan(versions, aliased, keep)
            own = {(name, str(v.version)) for v in doomed}
            runs = [r for r in dict.fromkeys(v.run_id for v in doomed if v.run_id)
                    if not _used_elsewhere(client, r, own)]
            models = [m for v in doomed if v.run_id in runs and (m := logged_model_id(v))]
            result = Pruning([str(v.version) for v in kept], [str(v.version) for v in doomed], runs,
                             list(dict.fromkeys(models)))
            if dry_run or not doomed:
                return result
            db = sqlite_file(mlflow.get_tracking_uri())
            folders = _local_folders(client, result) if db is not None else []
            freed = _bytes_in(folders) if db is not None else None
            for model_id in result.logged_models:
                _unless_gone(client.delete_logged_model, model_id)
            for run_id in runs:
                _unless_gone(client.delete_run, run_id)
            if db is not None:
                _remove_for_good(result)
                _remove_emptied(folders)
            for version in doomed:  # last: a prune cut short before this is finished by the next one
                _unless_gone(lambda v: client.delete_model_version(name, v), str(version.version))
        except MlflowException as exc:
            raise TrackingError(f"the model store failed while pruning ({first_line(exc)}); run it again to finish",
                                mlflow.get_registry_uri()) from exc
    return Pruning(result.kept, result.deleted, result.runs, result.logged_models, freed)


def _versions(client: MlflowClient, name: str) -> tuple[list[ModelVersion], set[str]] | None:
    """The model's versions and those its aliases name (versions as searched carry no aliases: the
    registered model lists them); None when no such model is registered."""
    try:
        aliased = {str(v) for v in client.get_registered_model(name).aliases.values()}
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return client.search_model_versions(f"name='{name}'"), aliased


def _used_elsewhere(client: MlflowClient, run_id: str, doomed: set[tuple[str, str]]) -> bool:
    """Whether a version that stays (of this model or another name: a copied version) comes from the run."""
    return any((v.name, str(v.version)) not in doomed for v in client.search_model_versions(f"run_id='{run_id}'"))


def _unless_gone(delete: Callable[[str], None], identifier: str) -> None:
    """Delete, unless it is gone already (deleted in the UI, or by a prune cut short)."""
    try:
        delete(identifier)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise


def _remove_for_good(pruning: Pruning) -> None:
    """The deleted runs' and logged models' rows and files, as `mlflow gc` removes them, for exactly
    these ids. Its command line cannot be used: it also hard-deletes every deleted experiment (one a
    user may still restore) and, given no ids, every deleted run. So its implementation is called with
    experiments skipped (private to MLflow, pinned in constraints.txt; the prune test fails if it changes)."""
    from mlflow.cli import _gc_tracking_resources
    from mlflow.tracking._tracking_service.utils import _get_store

    if not (pruning.runs or pruning.logged_models):
        return
    with contextlib.redirect_stdout(io.StringIO()):  # a line per id, printed by the command's code
        _gc_tracking_resources(_get_store(), run_ids=pruning.runs, experiment_ids=None,
                               logged_model_ids=pruning.logged_models, older_than=None, time_delta=0,
                               skip_experiments=True, skip_logged_models=False, ignore_not_found=True)


def _local_folders(client: MlflowClient, pruning: Pruning) -> list[Path]:
    """The folders holding these runs' and logged models' files, where they are local."""
    locations = []
    for read in [*(lambda r=r: client.get_run(r).info.artifact_uri for r in pruning.runs),
                 *(lambda m=m: client.get_logged_model(m).artifact_location for m in pruning.logged_models)]:
        with contextlib.suppress(MlflowException):  # removed already by a prune cut short
            locations.append(read())
    return [Path(unquote(parts.path)) for parts in map(urlsplit, locations) if parts.scheme in ("", "file")]


def _bytes_in(folders: list[Path]) -> int:
    total = 0
    for folder in folders:
        with contextlib.suppress(OSError):  # a file gone meanwhile counts for nothing
            total += sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return total


def _remove_emptied(folders: list[Path]) -> None:
    """`mlflow gc` removes the files and leaves their folders (`<run id>/artifacts`, `m-<id>/artifacts`),
    one pair per version pruned: those two levels go too, when empty (rmdir removes nothing else)."""
    for folder in folders:
        for empty in (folder, folder.parent):
            with contextlib.suppress(OSError):  # not empty, or gone
                empty.rmdir()
