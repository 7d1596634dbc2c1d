"""Housekeeping: old model versions, and the runs and logged models behind them.

Each registered version keeps its logged model (about 20 MB: the weights and the n-gram tables) and
its run's artifacts in the store for good, so a weekly retraining grows `mlruns/` by about 1 GB a
year. Pruning keeps the newest versions and every version an alias names (the champion, a
challenger, one set by hand), and deletes the rest through MLflow: the versions, their logged models
and runs, then, on the embedded SQLite store, `mlflow gc` for those runs and models, which removes
their files. A tracking server's files are removed where its store is (`mlflow gc` there).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from pipeline.errors import MLFLOW_NOT_THERE, NamelangError, TrackingError, first_line
from pipeline.registry import gate_lock
from pipeline.tracking import MODEL_NAME, sqlite_file


@dataclass(frozen=True)
class Pruning:
    """What a prune kept and deleted (or, for a dry run, would delete)."""

    kept: list[str]                   # versions, newest first
    deleted: list[str]                # versions, newest first
    runs: list[str]                   # the deleted versions' runs
    logged_models: list[str]          # and their logged models
    freed_bytes: int | None = None    # on the embedded store, after `mlflow gc`; None otherwise


def plan(versions: list[ModelVersion], aliased: set[str], keep: int) -> tuple[list[ModelVersion], list[ModelVersion]]:
    """(kept, to delete), newest first: the `keep` newest versions and those in `aliased` stay."""
    if keep < 1:
        raise NamelangError(f"keep at least one version, got {keep}")
    newest_first = sorted(versions, key=lambda v: int(v.version), reverse=True)
    kept = {str(v.version) for i, v in enumerate(newest_first) if i < keep or str(v.version) in aliased}
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
            # the versions as searched carry no aliases: the registered model lists them
            aliased = {str(v) for v in client.get_registered_model(name).aliases.values()}
            kept, doomed = plan(client.search_model_versions(f"name='{name}'"), aliased, keep)
            kept_runs = {v.run_id for v in kept}
            runs = [v.run_id for v in doomed if v.run_id and v.run_id not in kept_runs]
            kept_models = {logged_model_id(v) for v in kept}
            models = [m for v in doomed if (m := logged_model_id(v)) and m not in kept_models]
            result = Pruning([str(v.version) for v in kept], [str(v.version) for v in doomed], runs, models)
            if dry_run or not doomed:
                return result
            for version in doomed:
                client.delete_model_version(name, str(version.version))
            for model_id in models:
                _unless_gone(client.delete_logged_model, model_id)
            for run_id in runs:
                _unless_gone(client.delete_run, run_id)
        except MlflowException as exc:
            raise TrackingError(f"the model store failed while pruning ({first_line(exc)})",
                                mlflow.get_registry_uri()) from exc
    db = sqlite_file(mlflow.get_tracking_uri())
    if db is None:
        return result
    before = _folder_bytes(db.parent)
    _collect_garbage(mlflow.get_tracking_uri(), runs, models)
    return Pruning(result.kept, result.deleted, runs, models, max(before - _folder_bytes(db.parent), 0))


def _unless_gone(delete, identifier: str) -> None:
    try:
        delete(identifier)
    except MlflowException as exc:
        if exc.error_code not in MLFLOW_NOT_THERE:  # deleted already (in the UI, say): nothing to do
            raise


def _collect_garbage(uri: str, runs: list[str], models: list[str]) -> None:
    """MLflow's own `mlflow gc`: removes the deleted runs' and logged models' rows and files."""
    command = [sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", uri]
    if runs:
        command += ["--run-ids", ",".join(runs)]
    if models:
        command += ["--logged-model-ids", ",".join(models)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise TrackingError(f"the versions are deleted, but `mlflow gc` did not remove their files ({last}); run "
                            f"it again: {' '.join(command[2:])}", uri)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
