"""`namelang prune`: old versions go, with their runs and logged models and the files behind them."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from typer.testing import CliRunner

from flows.cli import app
from pipeline import workflow
from pipeline.prune import logged_model_id
from pipeline.registry import CHAMPION, load_model
from pipeline.tracking import MODEL_NAME, configure
from tests.support import small_names_folder, tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture
def four_versions(tmp_path, monkeypatch):
    """A store of its own holding four trained versions; MLflow's global URIs as they were after."""
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    try:
        configure()
        source = small_names_folder(tmp_path)
        for seed in range(4):  # another split each time: four runs, four logged models
            config = tiny_config(tmp_path, source, epochs=1)
            workflow.run_pipeline(config.model_copy(update={"split": config.split.model_copy(update={"seed": seed})}))
        yield tmp_path / "mlruns"
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


def test_prune_keeps_the_newest_and_the_aliased_and_removes_the_rest_with_their_files(four_versions):
    client = MlflowClient()
    versions = {str(v.version): v for v in client.search_model_versions(f"name='{MODEL_NAME}'")}
    assert sorted(versions, key=int) == ["1", "2", "3", "4"]
    client.set_registered_model_alias(MODEL_NAME, "rollback", "1")  # an alias set by hand: kept
    champion = str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version)
    doomed = sorted({"2", "3"} - {champion})  # what --keep 1 leaves to delete: neither the newest nor aliased
    # what is not the prune's to remove for good: a deleted experiment a user may restore, a run deleted by
    # hand, and the run and model of a doomed version copied under another name
    scratch = client.create_experiment("scratch")
    by_hand = client.create_run(scratch).info.run_id
    client.delete_run(by_hand)
    client.delete_experiment(scratch)
    copied = versions[doomed[-1]]
    client.copy_model_version(f"models:/{MODEL_NAME}/{copied.version}", "namelang-copy")

    dry = CliRunner().invoke(app, ["prune", "--keep", "1", "--dry-run"])
    assert dry.exit_code == 0 and f"would delete {len(doomed)} version" in dry.output, dry.output
    assert len(client.search_model_versions(f"name='{MODEL_NAME}'")) == 4  # nothing deleted

    def files(containing: str = "") -> int:
        return sum(p.stat().st_size for p in four_versions.rglob("*") if p.is_file() and containing in str(p))

    gone = [versions[v] for v in doomed if v != str(copied.version)]
    theirs = sum(files(logged_model_id(v)) + files(v.run_id) for v in gone)
    before = files()
    done = CliRunner().invoke(app, ["prune", "--keep", "1"])
    assert done.exit_code == 0, done.output
    assert done.output.startswith(f"deleted {len(doomed)} version") and "MB freed" in done.output, done.output
    assert f"{len(gone)} run" in done.output, done.output
    assert sorted(str(v.version) for v in client.search_model_versions(f"name='{MODEL_NAME}'")) == sorted(
        {"1", "4", champion})
    for version in gone:  # its run and logged model are gone for good, files included
        with pytest.raises(MlflowException):
            client.get_run(version.run_id)
        for gone_id in (logged_model_id(version), version.run_id):  # files and folders (empty ones were left)
            assert not [p for p in four_versions.rglob("*") if gone_id in str(p)], gone_id
    assert before - files() >= theirs > 0  # the weights (some 20 MB a version of the default size) and reports
    assert client.get_experiment(scratch).lifecycle_stage == "deleted"  # still there to restore
    assert client.get_run(by_hand).info.lifecycle_stage == "deleted"
    assert client.get_run(copied.run_id).info.lifecycle_stage == "active"  # the copy's
    for uri in (f"models:/{MODEL_NAME}@{CHAMPION}", "models:/namelang-copy/1"):
        prediction = load_model(uri).predict(pd.DataFrame({"name": ["Nakamura"]}))
        assert prediction["error"][0] is None and prediction["language"][0]  # still load and answer
    again = CliRunner().invoke(app, ["prune", "--keep", "1"])
    assert again.exit_code == 0 and again.output.startswith("nothing to delete"), again.output
    assert CliRunner().invoke(app, ["prune", "--keep", "0"]).exit_code == 2  # a usage error
    assert Path(four_versions / "mlflow.db").exists()
