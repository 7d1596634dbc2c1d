"""Prefect flows for real: the training flow under prefect_test_harness, caching, retries,
batch prediction, and deployments served against a real `prefect server` on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from prefect import flow
from prefect.testing.utilities import prefect_test_harness

from flows.batch_predict import batch_predict
from flows.training import prepare_data, train_name_classifier
from pipeline.checkpoint import load_checkpoint
from pipeline.errors import DownloadError, NamelangError, NamelangWarning, TrackingError
from pipeline.features import load_tensors
from pipeline.tracking import experiment_id
from tests.support import free_port, small_names_folder, stops_answering, tiny_config, wait_for_http

pytestmark = pytest.mark.slow
PREFECT = str(Path(sys.executable).parent / "prefect")
NAMELANG = str(Path(sys.executable).parent / "namelang")
HEARTBEAT_S = 30  # Prefect's least: the real-server test's runs beat this often, and are Crashed 90 s after the last


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    root = tmp_path_factory.mktemp("flows")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
        mp.chdir(root)
        with prefect_test_harness(server_startup_timeout=120):
            yield {"root": root, "source": small_names_folder(root)}


@pytest.fixture(scope="module")
def first_run(harness):
    config = tiny_config(harness["root"], harness["source"], epochs=4)
    return config, train_name_classifier(config)


def test_flow_trains_and_registers_a_model(first_run):
    config, summary = first_run
    assert "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ  # turned off for the run only
    assert summary["version"] == "1" and summary["alias"] == "champion"
    assert summary["data_steps"] == {"ingest": "ran", "normalize": "ran", "build-tensors": "ran"}
    assert (config.data.processed_dir / "names.parquet").exists()
    run = MlflowClient().get_run(summary["run_id"])
    assert run.data.tags["prefect.flow_run_id"] == summary["flow_run_id"] != ""
    assert run.info.status == "FINISHED"
    # the flow run's name in both UIs, and MLflow's User and Source columns filled, as its fluent API fills them
    assert run.info.run_name == run.data.tags["prefect.flow_run_name"] != ""
    from mlflow.tracking.context.registry import resolve_tags

    context = {k: v for k, v in resolve_tags().items() if k in ("mlflow.user", "mlflow.source.type")}
    assert {k: run.data.tags.get(k) for k in context} == context  # none where MLflow cannot tell the user


def test_parameters_the_server_let_through_fail_the_run_in_lines_without_a_traceback():
    """Split fractions summing to 1.2 pass a Prefect server's JSON-schema check (the sum is a check
    across fields); the run's own check refused them under 15 lines of engine traceback, logged as
    "unexpected". Its real exception, as the engine logs it, keeps its message and loses the rest."""
    import logging

    from flows.run_logs import UserErrorsInOneLine

    bad = {"config": {"split": {"train": 0.9, "validation": 0.2, "test": 0.1}}}
    with pytest.raises(Exception) as info:
        train_name_classifier.validate_parameters(bad)
    exc = info.value
    assert "config.split: Value error, split fractions must sum to 1, got 1.2000" in str(exc)

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, message, None,
                                 (type(exc), exc, exc.__traceback__))

    failed = record("Finished in state Failed('Flow run encountered an exception')")
    assert UserErrorsInOneLine().filter(failed) and failed.exc_info is None  # kept, without its traceback
    assert not UserErrorsInOneLine().filter(record("Engine execution exited with unexpected exception"))
    bug = record("Finished in state Failed")
    bug.exc_info = (KeyError, KeyError("x"), None)
    assert UserErrorsInOneLine().filter(bug) and bug.exc_info is not None  # a bug keeps its traceback


def test_a_deployment_runs_refused_parameters_are_one_line_in_the_serving_terminal(tmp_path, monkeypatch):
    """In a deployment's run process (the runner gives it its run id), Prefect's flow logged pydantic's
    raw errors and the whole configuration, and our re-sent engine line lacked the run's name that the
    terminal format shows: logging printed three chained tracebacks there. Now one line, as in the UI."""
    script = textwrap.dedent("""
        import logging, sys
        from flows.training import train_name_classifier
        try:
            train_name_classifier.validate_parameters({"config": {"split": {"train": 0.5}}})
        except Exception as exc:  # as Prefect's flow engine logs it, on its own logger
            logging.getLogger("prefect.engine").error("%s %s", "Validation of flow parameters failed with error:", exc)
        sys.stderr.flush()
    """)
    run_id = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env.update(PREFECT__FLOW_RUN_ID=run_id, PREFECT_LOGGING_TO_API_ENABLED="false",
               PREFECT_HOME=str(tmp_path / "prefect-home"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env,
                          cwd=Path(__file__).resolve().parents[1])
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 2, output[-3000:]  # the record, and a line for each refused setting (Prefect's form)
    assert re.search(rf"ERROR +\| Flow run '{run_id}' - Validation of flow parameters failed with error: Flow "
                     "run received invalid parameters:$", lines[0]), output[-3000:]
    assert lines[1] == " - config.split: Value error, split fractions must sum to 1, got 0.8000", output[-3000:]
    import logging

    from flows.run_logs import NoParameterDump

    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", run_id)  # another line on that logger, a bad log call too, passes
    assert NoParameterDump().filter(logging.LogRecord("prefect.flows", logging.ERROR, __file__, 1, "%d items",
                                                      ("not a number",), None))

def test_mlflow_download_bars_are_off_for_a_quiet_run_only(monkeypatch):
    """Set within the run, as MLflow reads it when it downloads; restored after, an error too."""
    from pipeline.tracking import artifact_progress_bars as _artifact_progress_bars

    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    monkeypatch.delenv(name, raising=False)
    with _artifact_progress_bars(enabled=False):
        assert os.environ[name] == "false"
    assert name not in os.environ
    monkeypatch.setenv(name, "true")  # the user's own setting
    with pytest.raises(RuntimeError), _artifact_progress_bars(enabled=False):
        assert os.environ[name] == "false"
        raise RuntimeError("the flow failed")
    assert os.environ[name] == "true"
    with _artifact_progress_bars(enabled=True):
        assert os.environ[name] == "false"  # pytest's captured stderr: not a terminal (make run > log)
    assert os.environ[name] == "true"
    import pty
    import sys

    leader, follower = pty.openpty()
    with open(follower, "w") as terminal, monkeypatch.context() as patch:  # stderr on a (pseudo-)terminal
        patch.setattr(sys, "stderr", terminal)
        with _artifact_progress_bars(enabled=True):
            assert os.environ[name] == "true"  # a terminal run leaves it alone
    os.close(leader)


def test_flow_publishes_artifacts(first_run):
    _, summary = first_run
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    keys = ["data-quality", "metrics", "mlflow-run", "model-version", "promotion-decision"]
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
    assert {a.key for a in found} == set(keys)
    decision = next(a for a in found if a.key == "promotion-decision" and str(a.flow_run_id) == summary["flow_run_id"])
    # the gate's one-line reason, as the version's gate.decision tag and the CLI give it
    assert "got the alias **champion**: no champion before it." in decision.data, decision.data


def test_rerun_on_unchanged_data_uses_cache(first_run):
    config, _ = first_run
    table = config.data.processed_dir / "names.parquet"
    written = table.stat().st_mtime_ns
    from flows.training import Reached, reporting_to

    with reporting_to(Reached()) as progress:  # as `namelang train` follows a run, for an interrupt's words
        summary = train_name_classifier(config)
    assert (progress.version, progress.alias) == (summary["version"], summary["alias"])
    assert progress.checkpoint.parent == config.train.checkpoint_dir and progress.checkpoint.name.startswith("train-")
    assert table.stat().st_mtime_ns == written  # the same table is not written again
    assert summary["data_steps"] == {"ingest": "cached", "normalize": "cached", "build-tensors": "cached"}
    assert summary["version"] == "2"
    assert (config.data.cache_dir).is_dir() and any(config.data.cache_dir.iterdir())


def test_deleted_cache_files_are_rebuilt_not_trusted(first_run):
    config, _ = first_run
    stored = [p for p in config.data.cache_dir.iterdir() if p.suffix in (".arrow", ".pt")]
    assert {p.name.split("-")[0] for p in stored} == {"raw", "names", "rejected", "tensors"}
    for path in stored:
        path.unlink()
    summary = train_name_classifier(config)
    assert summary["data_steps"] == {"ingest": "ran", "normalize": "ran", "build-tensors": "ran"}
    assert all(p.exists() for p in stored)
    # damaged (truncated) files too: each rerun failed on them with a traceback until the cache was deleted
    for path in stored:
        with open(path, "r+b") as fh:
            fh.truncate(100)
    assert set(data_steps(config).values()) == {"ran"}
    assert all(p.stat().st_size > 100 for p in stored)  # written whole again
    assert set(data_steps(config).values()) == {"cached"}  # and trusted again
    # and damaged inside, where neither format's reader looks (a letter of a name changed): such a file
    # was trusted, and a model trained on the damaged tensors became champion
    name = (Path(config.data.source) / "Italian.txt").read_text().split()[-1].encode()
    misspelt = name[:1].lower() + name[1:]
    whole = {path: path.read_bytes() for path in stored}
    damaged = [path for path, data in whole.items() if name in data and misspelt not in data]
    assert {p.name.split("-")[0] for p in damaged} == {"raw", "names", "tensors"}  # the rejected rows: none
    for path in damaged:
        data, at = whole[path], whole[path].rfind(name)
        path.write_bytes(data[:at] + misspelt + data[at + len(name):])
    assert set(data_steps(config).values()) == {"ran"}
    published = config.data.processed_dir / "tensors.pt"
    for path in [*damaged, published]:  # written again from the source (torch.save's bytes differ each time)
        assert misspelt not in path.read_bytes() and name in path.read_bytes(), path


def test_a_source_that_changes_while_it_is_read_is_not_cached(harness, tmp_path):
    """The cache key is the fingerprint taken before reading; rows read after a change were cached
    under the old files' key and served for them on every rerun."""
    from flows.training import ingest_source
    from pipeline.errors import TransientError
    from pipeline.ingest import source_fingerprint

    source = small_names_folder(tmp_path, per_language=20)
    config = tiny_config(tmp_path, source)
    before = source_fingerprint(source)
    with (source / "German.txt").open("a", encoding="utf-8") as fh:  # a writer, between fingerprint and read
        fh.write("Zimmermann\n")
    state = ingest_source(config.data, source, before, return_state=True)
    with pytest.raises(TransientError, match="the source changed while it was being read"):
        state.result()
    assert not list(config.data.cache_dir.glob("raw-*"))  # nothing kept under the old key
    assert ingest_source(config.data, source, source_fingerprint(source), return_state=True).is_completed()


def test_changed_data_is_not_served_from_cache(first_run, harness, tmp_path):
    config, _ = first_run
    source = small_names_folder(tmp_path, per_language=50)
    summary = train_name_classifier(config.model_copy(update={"data": config.data.model_copy(
        update={"source": str(source)})}))
    assert summary["data_steps"]["ingest"] == "ran" and summary["data_steps"]["normalize"] == "ran"


@flow
def data_steps(config) -> dict:
    """The training flow's data steps alone: what a rerun takes from the cache, without training."""
    return prepare_data(config).steps


def test_changed_split_reruns_only_the_tensors(first_run):
    config, _ = first_run
    changed = config.model_copy(update={"split": config.split.model_copy(update={"seed": config.split.seed + 1})})
    assert data_steps(changed) == {"ingest": "cached", "normalize": "cached", "build-tensors": "ran"}
    assert load_tensors(config.data.processed_dir / "tensors.pt").split_config["seed"] == changed.split.seed
    # back to the first settings: all from the cache, and data/processed holds the tensors used again
    assert set(data_steps(config).values()) == {"cached"}
    assert load_tensors(config.data.processed_dir / "tensors.pt").split_config["seed"] == config.split.seed


def test_the_same_relative_source_in_another_directory_is_another_table(first_run, tmp_path, monkeypatch):
    """`--source names` from two working directories: the same bytes, two folders; provenance
    records the absolute path, so the second must not reuse the first one's table."""
    from pipeline.normalize import read_provenance

    config, _ = first_run
    for place in ("here", "there"):
        small_names_folder(tmp_path / place, per_language=20)
    relative = config.model_copy(update={"data": config.data.model_copy(update={"source": "names"})})
    steps = []
    for place in ("here", "there"):
        monkeypatch.chdir(tmp_path / place)
        steps.append(data_steps(relative)["ingest"])
        files = read_provenance(config.data.processed_dir / "names.parquet")["files"]
        assert {Path(f["path"]).parent for f in files} == {tmp_path / place / "names"}
        # the rows too: the cached raw lines of the first folder were reused under the same key
        rows = pd.read_parquet(config.data.processed_dir / "names.parquet", columns=["source_file"])
        assert {Path(f).parent for f in rows["source_file"]} == {tmp_path / place / "names"}
    assert steps == ["ran", "ran"]


def test_a_cached_run_says_which_languages_are_not_held_out_as_the_first_did(harness, tmp_path):
    """The few-names warning came from building the tensors, so a rerun that took them from the cache
    trained, and judged its model, on a split missing a language's test names without a word."""
    source = small_names_folder(tmp_path, per_language=30, languages=("English", "Japanese"))
    (source / "Scottish.txt").write_text("Smith\nBrown\n", encoding="utf-8")
    config = tiny_config(tmp_path, source)
    said = "too few names to hold some out for Scottish (2 names: none to validate)"
    for expected in ("ran", "cached"):
        with pytest.warns(NamelangWarning, match=re.escape(said)) as caught:
            assert data_steps(config)["build-tensors"] == expected
        assert sum(said in str(w.message) for w in caught) == 1, expected  # once, whichever said it
    whole = tiny_config(tmp_path / "whole", small_names_folder(tmp_path / "whole"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", NamelangWarning)  # a split holding every language out says nothing
        assert set(data_steps(whole).values()) == {"ran"} and set(data_steps(whole).values()) == {"cached"}


def test_cached_run_writes_a_deleted_table_again(first_run):
    config, _ = first_run
    table = config.data.processed_dir / "names.parquet"
    table.unlink()
    assert set(data_steps(config).values()) == {"cached"}
    assert table.exists()


def test_a_new_rejected_line_alone_updates_every_output(harness, tmp_path):
    """Same accepted names, one more rejected line: the tables, report and provenance follow the file."""
    import pyarrow.parquet as pq

    from pipeline.ingest import sha256_file
    from pipeline.normalize import read_provenance

    source = small_names_folder(tmp_path, per_language=20)
    config = tiny_config(tmp_path, source)
    data_steps(config)
    processed = config.data.processed_dir
    assert pq.read_table(processed / "rejected.parquet").num_rows == 0
    greek = source / "Greek.txt"
    with greek.open("a", encoding="utf-8") as fh:
        fh.write("12345\n")
    assert data_steps(config)["normalize"] == "ran"
    rejected = pq.read_table(processed / "rejected.parquet").to_pylist()
    assert [(r["name"], r["line_number"]) for r in rejected] == [("12345", 21)]
    assert json.loads((processed / "quality.json").read_text())["rejected"]["count"] == 1
    files = {f["language"]: f for f in read_provenance(processed / "names.parquet")["files"]}
    assert files["Greek"]["sha256"] == sha256_file(greek)


def _mlflow_error(code: str):
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2

    def raised_by_mlflow(message: str) -> MlflowException:
        return MlflowException(message, error_code=getattr(databricks_pb2, code))

    raised_by_mlflow.__name__ = code  # the test's id
    return raised_by_mlflow


def _http_error(status: int):
    import requests

    def raised_by_an_artifact_upload(message: str) -> requests.HTTPError:
        response = requests.Response()  # as MLflow's `augmented_raise_for_status` raises it: no error code
        response.status_code = status
        return requests.HTTPError(f"{status} Client Error: {message}", response=response)

    raised_by_an_artifact_upload.__name__ = f"HTTPError-{status}"
    return raised_by_an_artifact_upload


def _wrapped(cause):
    def raised_by_a_step(message: str) -> TrackingError:
        try:
            raise cause(message)
        except Exception as exc:  # noqa: BLE001 - as register_model words any store failure, `from exc`
            error = TrackingError(f"could not register the model ({exc})")
            error.__cause__ = exc
            return error

    raised_by_a_step.__name__ = f"TrackingError-from-{cause.__name__}"
    return raised_by_a_step


@pytest.mark.parametrize(("error", "calls"), [
    (TrackingError, 2), (NamelangError, 1), (OSError, 2), (TypeError, 1), (KeyError, 1), (ValueError, 1),
    # the store's own answers: a server busy or restarting, the SQLite store's write race; a run deleted or ended
    (_mlflow_error("TEMPORARILY_UNAVAILABLE"), 2), (_mlflow_error("BAD_REQUEST"), 2),
    (_mlflow_error("INTERNAL_ERROR"), 2), (_mlflow_error("RESOURCE_DOES_NOT_EXIST"), 1),
    (_mlflow_error("INVALID_PARAMETER_VALUE"), 1), (_mlflow_error("INVALID_STATE"), 1),
    (_mlflow_error("UNAUTHENTICATED"), 1),
    # the store's failure as our steps word it (registration, the model lookup), by what it wraps
    (_wrapped(_mlflow_error("UNAUTHENTICATED")), 1), (_wrapped(_mlflow_error("RESOURCE_DOES_NOT_EXIST")), 1),
    (_wrapped(_mlflow_error("TEMPORARILY_UNAVAILABLE")), 2),
    # an artifact upload's bare HTTP answer: credentials refused (a proxy's 401, 403), or a server error
    (_http_error(401), 1), (_http_error(403), 1), (_http_error(503), 2), (_wrapped(_http_error(401)), 1),
])
def test_tracking_tasks_retry_only_what_may_pass(harness, error, calls):
    from prefect import task

    from flows.batch_predict import resolve_version
    from flows.retries import RETRY_TRANSIENT, worth_retrying

    attempts = []

    @task(**{**RETRY_TRANSIENT, "retries": 1, "retry_delay_seconds": 0})
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise error("the store said no")
        return "ok"

    @flow
    def calls_flaky() -> str:
        return flaky()

    if calls == 1:
        with pytest.raises(Exception, match="the store said no") as info:
            calls_flaky()
        assert type(info.value) is type(error("the store said no"))
    else:
        assert calls_flaky() == "ok"
    assert len(attempts) == calls
    # and the flow's own tasks that talk to the outside world carry that policy: 3 more tries (about 40 s, for a
    # restarting tracking server), 2 quick ones for the batch's model lookup, which someone may be waiting on
    from prefect import Task

    import flows.training

    retried = {t.name: t.retries for t in vars(flows.training).values()
               if isinstance(t, Task) and t.retry_condition_fn is worth_retrying}
    assert retried == {name: 3 for name in ("fetch-source", "start-mlflow-run", "close-abandoned-mlflow-runs",
                                            "evaluate", "register")}, retried
    assert (resolve_version.retries, resolve_version.retry_delay_seconds) == (2, [2, 8])
    assert resolve_version.retry_condition_fn is worth_retrying


def test_a_failed_task_logs_no_password_of_the_tracking_uri(harness, monkeypatch, caplog):
    """MLflow's error quotes the tracking URI whole; Prefect logged it, and its traceback, as it was,
    and kept it as the run's state message."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from prefect import task

    from flows.batch_predict import predict as batch_predict_file
    from flows.batch_predict import resolve_version
    from flows.run_logs import credentials_hidden
    from flows.training import close_abandoned_runs, evaluate, register, start_run, train

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    refusing = socket.socket()  # bound, never listening: connections are refused, and no other test takes it
    refusing.bind(("127.0.0.1", 0))

    @task
    def look_up_a_run() -> None:
        MlflowClient(f"http://alice:s3cret@127.0.0.1:{refusing.getsockname()[1]}").get_run("0" * 32)

    @flow
    def looks_up_a_run() -> None:
        look_up_a_run()

    @flow
    def looks_up_a_run_by_a_step_of_ours() -> None:
        credentials_hidden(look_up_a_run.fn)()  # as the flows' MLflow steps are wrapped

    with refusing:
        with pytest.raises(Exception, match="s3cret"):  # a step not wrapped: the exception is MLflow's, as it was
            looks_up_a_run()
        logged = caplog.text
        state = looks_up_a_run_by_a_step_of_ours(return_state=True)

        def wraps_it() -> None:  # as our steps word a store failure: what it wraps is persisted with it
            try:
                look_up_a_run.fn()
            except MlflowException as exc:
                raise TrackingError("the model store failed") from exc

        with pytest.raises(TrackingError) as wrapped:
            credentials_hidden(wraps_it)()
    assert "Task run failed with exception" in logged and "http://***@127.0.0.1" in logged
    assert "s3cret" not in logged
    # the run's state message (its page in the UI) is the exception's text: hidden in the exception itself
    assert state.is_failed() and "http://***@127.0.0.1" in state.message and "s3cret" not in state.message
    with pytest.raises(MlflowException) as info:
        state.result()
    assert "s3cret" not in str(info.value) and "s3cret" not in info.value.message
    assert "***@127.0.0.1" in str(wrapped.value.__cause__) and "s3cret" not in str(wrapped.value.__cause__)
    hiding = credentials_hidden(print).__code__
    for step in (start_run, close_abandoned_runs, train, evaluate, register, resolve_version, batch_predict_file):
        assert step.fn.__code__ is hiding, step.name
    # a task's own bad log call stays logging's to report ("--- Logging error ---"), not the task's failure
    import logging

    from flows.run_logs import NoCredentials

    assert NoCredentials().filter(logging.LogRecord("prefect.task_runs", logging.INFO, __file__, 1, "%d", ("x",), None))


class _Failing(BaseHTTPRequestHandler):
    hits = 0
    status = 500

    def do_GET(self):  # noqa: N802 - http.server's naming
        type(self).hits += 1
        self.send_error(self.status, "no luck")

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(("status", "tries"), [(500, 3), (404, 1)])
def test_failing_download_is_retried_only_if_it_may_pass_then_fails_clearly(harness, status, tries):
    """A 5xx may pass: the first try and two retries. A 404 will not: retrying only delays the error
    (and a file over the size limit would be downloaded again each time)."""
    _Failing.hits, _Failing.status = 0, status
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/data.zip"
        config = tiny_config(harness["root"] / f"failing{status}", url)
        config.data.download_retries, config.data.retry_backoff_s = 2, 0.05
        with pytest.raises(NamelangError, match=f"HTTP {status}") as info:
            train_name_classifier(config)
    finally:
        server.shutdown()
    assert _Failing.hits == tries
    assert url in str(info.value)
    raw = config.data.raw_dir
    # nothing left: no file, no temp file, not even the folder made for the download
    assert not raw.exists() and not [p for p in raw.parent.rglob("*") if p.is_file()], sorted(raw.parent.rglob("*"))


@pytest.mark.parametrize("kind", ["csv", "txt", "parquet"])
def test_batch_predict_writes_one_row_per_name(first_run, tmp_path, kind):
    names = ["Nakamura", "", "Papadopoulos", "Иванов", "Rossi"]
    path = tmp_path / f"names.{kind}"
    if kind == "csv":
        pd.DataFrame({"id": range(len(names)), "name": names}).to_csv(path, index=False)
    elif kind == "txt":
        path.write_text("\n".join(names) + "\n", encoding="utf-8")
    else:
        pd.DataFrame({"name": names}).to_parquet(path)
    stats = batch_predict(str(path), str(tmp_path / "out.parquet"), chunk_size=2)
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert stats["rows"] == len(out) == len(names)
    assert list(out["row"]) == list(range(len(names)))
    assert {"language", "probability", "language_2", "probability_2", "language_3", "probability_3",
            "model_version", "error"} <= set(out.columns)
    assert (out["model_version"] == MlflowClient().get_model_version_by_alias("namelang", "champion").version
            .__str__()).all()
    errors = out["error"].tolist()
    assert pd.isna(errors[0]) and errors[3] == "no Latin letters after normalization"
    assert errors[1] == "empty name"  # a CSV's empty field too: read as a string, not as a missing value
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_batch_predict_records_a_version_asked_for_by_number_as_its_number(first_run, tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("Rossi\n", encoding="utf-8")
    batch_predict(str(path), str(tmp_path / "out.parquet"), model="models:/namelang/1")
    assert pd.read_parquet(tmp_path / "out.parquet")["model_version"].tolist() == ["1"]
    # an alias of another registered model is resolved to its version too, not recorded as the URI
    client = MlflowClient()
    other = mlflow.register_model(client.get_model_version("namelang", "1").source, "namelang-other")
    client.set_registered_model_alias("namelang-other", "production", other.version)
    batch_predict(str(path), str(tmp_path / "other.parquet"), model="models:/namelang-other@production")
    assert pd.read_parquet(tmp_path / "other.parquet")["model_version"].tolist() == [str(other.version)]
    # `latest` is the highest version number, recorded as that number
    newest = max(int(v.version) for v in client.search_model_versions("name='namelang'"))
    batch_predict(str(path), str(tmp_path / "latest.parquet"), model="models:/namelang/latest")
    assert pd.read_parquet(tmp_path / "latest.parquet")["model_version"].tolist() == [str(newest)]


def test_batch_predict_missing_column_is_clear(first_run, tmp_path):
    path = tmp_path / "people.csv"
    pd.DataFrame({"surname": ["Rossi"]}).to_csv(path, index=False)
    with pytest.raises(NamelangError, match="no column 'name'"):
        batch_predict(str(path), str(tmp_path / "out.parquet"))
    assert not (tmp_path / "out.parquet").exists()


def test_batch_predict_unknown_alias_fails_at_once_and_clearly(first_run, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    path = tmp_path / "names.txt"
    path.write_text("Rossi\n", encoding="utf-8")
    state = batch_predict(str(path), model="models:/namelang@nosuchalias", return_state=True)
    with pytest.raises(NamelangError, match=r"has no alias @nosuchalias; its aliases: .*@champion \(version \d+\)"):
        state.result()
    with get_client(sync_client=True) as client:
        [task_run] = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    assert task_run.name.startswith("resolve-model") and task_run.run_count == 1  # a user error: no retry


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


@pytest.mark.timeout(1200)  # above the sum of its own waits, so that a slow step fails with its message
@pytest.mark.waits
def test_deployment_run_on_a_real_prefect_server(tmp_path):
    """prefect server start -> python -m flows.serve -> prefect deployment run --watch -> new model version;
    a second training killed hard with its serving process is marked Crashed by flows.unresponsive's
    automation, which frees the training slot; then prefect.yaml: prefect deploy --all -> a process
    worker runs the batch deployment."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    store = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_TRACKING_URI": store,
           "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           # the serving process killed below leaves its runner's scratch folder (runner_storage/<uuid>): here
           "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    work = tmp_path / "work"
    work.mkdir()
    source = small_names_folder(tmp_path)
    (source / "Klingon.txt").write_text("", encoding="utf-8")  # a warning, which the run's log must show
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("server", "serve")}  # noqa: SIM115
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port),
                               "--no-ui"], env=env, stdout=logs["server"], stderr=subprocess.STDOUT,
                              start_new_session=True)
    serve = worker = None
    try:
        wait_for_http(f"{api}/health", timeout_s=120, proc=server)
        serve = subprocess.Popen([sys.executable, "-m", "flows.serve", "--source", str(source)], cwd=work,
                                 env=env, stdout=logs["serve"], stderr=subprocess.STDOUT, start_new_session=True)
        name = "train-name-classifier/scheduled-retrain"
        for _ in range(120):
            inspect = subprocess.run([PREFECT, "deployment", "inspect", name], env=env, capture_output=True,
                                     text=True, timeout=60)
            if inspect.returncode == 0:
                break
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(1)
        assert inspect.returncode == 0, inspect.stdout + inspect.stderr
        assert "0 3 * * 1" in inspect.stdout  # the weekly cron schedule
        assert "ENQUEUE" in inspect.stdout  # one training at a time: a run due meanwhile waits
        assert subprocess.run([PREFECT, "deployment", "inspect", "batch-predict/on-demand"], env=env,
                              capture_output=True, timeout=60).returncode == 0
        params = {"config": tiny_config(work, source, epochs=2).model_dump(mode="json")}
        run = subprocess.run([PREFECT, "deployment", "run", name, "--params", json.dumps(params), "--watch",
                              "--watch-timeout", "400"], env=env, capture_output=True, text=True, timeout=450)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + (tmp_path / "serve.log").read_text()[
            -3000:]
        assert "Completed" in run.stdout
        completed_run = re.search(r"UUID: ([0-9a-f-]{36})", run.stdout).group(1)
        # our warnings reach the run's log (the UI's), not only the serving process's stderr
        run_log = subprocess.run([PREFECT, "flow-run", "logs", completed_run], env=env, capture_output=True,
                                 text=True, timeout=60).stdout
        assert "Klingon.txt: empty file: no Klingon names from it" in run_log, run_log[-3000:]
        mlflow_client = MlflowClient(tracking_uri=store, registry_uri=store)
        assert len(mlflow_client.search_model_versions("name='namelang'")) == 1
        assert str(mlflow_client.get_model_version_by_alias("namelang", "champion").version) == "1"

        from prefect.settings import PREFECT_API_URL, temporary_settings

        from flows.serve import bound_to_work_pools, deployments

        with temporary_settings({PREFECT_API_URL: api}):  # served deployments are in no pool: flows.serve may
            assert bound_to_work_pools(deployments()) == {}  # serve them again
        _refuses_chunk_size_zero(env, work / "any.csv")
        # parameters the server lets through and the run refuses (fractions summing to 1.1): said in the
        # run's log, not only in the serving terminal
        bad_split = {"config": {**params["config"], "split": {"train": 0.8, "validation": 0.2, "test": 0.1}}}
        failed = subprocess.run([PREFECT, "deployment", "run", name, "--params", json.dumps(bad_split), "--watch",
                                 "--watch-timeout", "300"], env=env, capture_output=True, text=True, timeout=350)
        assert failed.returncode != 0, failed.stdout[-3000:]
        failed_log = subprocess.run([PREFECT, "flow-run", "logs", re.search(r"UUID: ([0-9a-f-]{36})", failed.stdout)
                                     .group(1)], env=env, capture_output=True, text=True, timeout=60).stdout
        assert "split fractions must sum to 1, got 1.1000" in failed_log, failed_log[-3000:]
        serving = (tmp_path / "serve.log").read_text()  # and one line in the serving terminal, by the run's name
        assert "Logging error" not in serving and "\nParameters: " not in serving, serving[-3000:]
        assert re.search(r"Flow run '[a-z-]+' - Validation of flow parameters failed", serving), serving[-3000:]
        refused = subprocess.run([PREFECT, "deployment", "run", name, "--params",  # a pattern in the schema
                                  json.dumps({"config": {"data": {"source_sha256": "ab"}}})], env=env,
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0 and "source_sha256" in refused.stdout + refused.stderr, refused.stdout

        # a training whose process dies without a word (SIGKILL of the serving process and its runs)
        with temporary_settings({PREFECT_API_URL: api}):
            long_params = {"config": tiny_config(work, source, epochs=1000, patience=1000).model_dump(mode="json")}
            zombie, started = _start_and_kill_a_training(serve, name, long_params)
            serve.wait(timeout=30)
            assert _run_state(zombie).is_running() and _active_slots(name) == 1  # not yet: a heartbeat may be late

        # the README's other way: prefect.yaml's deployments, run by a worker of a work pool
        repo = Path(__file__).parents[1]
        for command in (["work-pool", "create", "namelang", "--type", "process"], ["--no-prompt", "deploy", "--all"]):
            done = subprocess.run([PREFECT, *command], cwd=repo, env={**env, "PWD": str(repo)}, capture_output=True,
                                  text=True, timeout=120)  # PWD: as a shell in the checkout sets it
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        inspect = subprocess.run([PREFECT, "deployment", "inspect", name], env=env, capture_output=True, text=True,
                                 timeout=60)
        assert "'work_pool_name': 'namelang'" in inspect.stdout and "0 3 * * 1" in inspect.stdout, inspect.stdout
        logs["worker"] = open(tmp_path / "worker.log", "w")  # noqa: SIM115
        worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", "namelang"], cwd=work, env=env,
                                  stdout=logs["worker"], stderr=subprocess.STDOUT, start_new_session=True)
        names = work / "names.csv"
        names.write_text("name\nHinton\nNakamura\n", encoding="utf-8")
        _refuses_chunk_size_zero(env, names)
        batch = subprocess.run([PREFECT, "deployment", "run", "batch-predict/on-demand", "--params",
                                json.dumps({"input_path": str(names)}), "--watch", "--watch-timeout", "300"],
                               env=env, capture_output=True, text=True, timeout=350)
        assert batch.returncode == 0 and "Completed" in batch.stdout, batch.stdout[-3000:] + (
            tmp_path / "worker.log").read_text()[-3000:]
        predicted = pd.read_parquet(work / "names.csv.predictions.parquet")
        assert predicted["name"].tolist() == ["Hinton", "Nakamura"] and set(predicted["model_version"]) == {"1"}

        with temporary_settings({PREFECT_API_URL: api}):  # before its deployment goes: the server would fail to
            crashed = _wait_for_final_state(zombie, timeout_s=200)  # free the slot of a deleted deployment
            assert crashed.is_crashed() and "No heartbeat for 3 periods of 30 s" in crashed.message, crashed
            # 3 periods after its last heartbeat (at about 30 s), not after it started: its heartbeats counted
            assert 4 * HEARTBEAT_S - 5 <= (crashed.timestamp - started).total_seconds() <= 4 * HEARTBEAT_S + 60
            assert _active_slots(name) == 0  # the next training may start
            assert _run_state(completed_run).is_completed()  # a run that ended is left as it ended

        # back to a serving process: it would keep the pool and drop the pull steps, so workers would
        # crash the runs; it refuses and says how to go back, which then works
        again = subprocess.run([sys.executable, "-m", "flows.serve", "--source", str(source)], cwd=work, env=env,
                               capture_output=True, text=True, timeout=120)
        assert again.returncode == 2, again.stdout + again.stderr
        assert again.stderr.startswith(f"error: {name} belongs to work pool 'namelang'"), again.stderr
        for deployment in (name, "batch-predict/on-demand"):
            assert f"prefect deployment delete '{deployment}'" in again.stderr
            assert subprocess.run([PREFECT, "--no-prompt", "deployment", "delete", deployment], env=env,
                                  capture_output=True, timeout=60).returncode == 0
        with temporary_settings({PREFECT_API_URL: api}):
            assert bound_to_work_pools(deployments()) == {}
    finally:
        if worker is not None:
            _kill(worker)
        if serve is not None:
            _kill(serve)
        _kill(server)
        for log in logs.values():
            log.close()


def _start_and_kill_a_training(serve: subprocess.Popen, deployment: str, parameters: dict):
    """Start a run of `deployment`; once it has run a little over one heartbeat period (so that it
    sent two heartbeats), SIGKILL `serve`'s process group (the run's own process is in it). The
    run's id and when it started running (the server's clock)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        served = client.read_deployment_by_name(deployment)
        run = client.create_flow_run_from_deployment(served.id, parameters=parameters)
        deadline = time.monotonic() + 120
        while not (state := client.read_flow_run(run.id).state).is_running():
            assert time.monotonic() < deadline, state
            time.sleep(0.5)
    time.sleep(HEARTBEAT_S + 8)  # its second heartbeat has gone out
    assert _run_state(str(run.id)).is_running()
    os.killpg(serve.pid, signal.SIGKILL)
    return str(run.id), state.timestamp


def _run_state(flow_run_id: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).state


def _wait_for_final_state(flow_run_id: str, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while not (state := _run_state(flow_run_id)).is_final() and time.monotonic() < deadline:
        time.sleep(2)
    return state


def _run_tags(flow_run_id: str) -> list[str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).tags


def _active_slots(deployment: str) -> int:
    """Runs of `deployment` holding a slot of its concurrency limit."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(deployment).global_concurrency_limit.active_slots


def _refuses_chunk_size_zero(env: dict[str, str], names: Path) -> None:
    """The server checks a run's parameters against the deployment's schema (minimum 1)."""
    zero = subprocess.run([PREFECT, "deployment", "run", "batch-predict/on-demand", "--params",
                           json.dumps({"input_path": str(names), "chunk_size": 0})], env=env,
                          capture_output=True, text=True, timeout=120)
    assert zero.returncode != 0 and "chunk_size" in zero.stdout + zero.stderr, zero.stdout + zero.stderr


def _flow_run_log(flow_run_id: str) -> list[str]:
    """A flow run's log messages, its tasks' included, in the order they were logged."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)  # logs reach the API from a background worker
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                                sort=LogSort.TIMESTAMP_ASC)
    return [log.message for log in logs]


def _flow_runs(flow_name: str) -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        return client.count_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))


def test_cli_train_runs_the_flow_and_prints_next_steps(harness, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    settings = tiny_config(tmp_path, harness["source"]).model_dump(mode="json")
    assert settings["train"]["progress"] is False
    config_file = tmp_path / "settings.json"
    config_file.write_text(json.dumps(settings))
    # no --source: the file's data.source is used (the default, a URL, cannot be reached here)
    result = CliRunner().invoke(app, ["train", "--config", str(config_file), "--epochs", "2"])
    assert result.exit_code == 0, result.output
    client = MlflowClient()
    [first] = client.search_runs([experiment_id(client)], order_by=["attributes.start_time DESC"], max_results=1)
    # the file's settings reached the run, the option's override over them (a test runner is no terminal: whether
    # a progress bar shows cannot be seen in its output)
    assert (first.data.params["train.progress"], first.data.params["train.epochs"]) == ("False", "2")
    assert "trained namelang version" in result.output and "alias '" in result.output
    assert "next:" in result.output and "predict" in result.output
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false " in result.output and "ui --backend-store-uri" in result.output
    checkpoints = tmp_path / "checkpoints"
    assert not list(checkpoints.glob("*.pt"))  # the model is registered: its checkpoint is gone (its lock stays)
    # a source that is not there: said before any flow runs (the temporary API took some 20 s to start)
    runs_before = _flow_runs("train-name-classifier")
    missing = CliRunner().invoke(app, ["train", "--config", str(config_file), "--source", str(tmp_path / "nams")])
    assert missing.exit_code == 2 and f"{tmp_path / 'nams'}: source does not exist" in missing.output
    assert _flow_runs("train-name-classifier") == runs_before
    # a time budget stops after the first epoch and keeps the checkpoint; --resume without it trains on
    result = CliRunner().invoke(app, ["train", "--config", str(config_file), "--epochs", "3", "--max-seconds", "1e-6"])
    assert result.exit_code == 0, result.output
    [checkpoint] = checkpoints.glob("*.pt")
    assert load_checkpoint(checkpoint)["state"]["epoch"] == 1
    assert f"the time budget ended training; its checkpoint is kept ({checkpoint})" in result.output
    assert re.search(r"gate: macro-F1 [\d.]+ against champion version \d+'s [\d.]+, on \d+ test rows\n",
                     result.output), result.output  # why it got its alias (the same split: nothing left out)
    result = CliRunner().invoke(app, ["train", "--config", str(config_file), "--epochs", "3", "--resume"])
    assert result.exit_code == 0, result.output
    assert "resumed from the checkpoint written after epoch 1" in result.output
    assert "time budget" not in result.output
    assert not list(checkpoints.glob("*.pt"))
    latest = client.search_runs([experiment_id(client)], order_by=["attributes.start_time DESC"], max_results=2)
    resumed, stopped = latest
    assert stopped.data.tags["namelang.stopped_by"] == "time budget"
    assert resumed.data.tags["namelang.resumed_from_epoch"] == "1"
    assert len(client.get_metric_history(resumed.info.run_id, "train_loss")) == 3
    # in the flow run's own log (what the Prefect UI shows), the resume is said before the replayed epochs
    messages = _flow_run_log(resumed.data.tags["prefect.flow_run_id"])
    assert set(_run_tags(resumed.data.tags["prefect.flow_run_id"])) == {"namelang", "training"}  # as deployments'
    said = messages.index("resuming from the checkpoint written after epoch 1 (its epochs' figures follow)")
    epochs = [i for i, m in enumerate(messages) if re.match(r"epoch \d/3: ", m)]
    assert len(epochs) == 3 and said < epochs[0], messages
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": {"epochs": 0}}))
    result = CliRunner().invoke(app, ["train", "--config", str(bad)])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {bad}: bad configuration: train.epochs: Input should be greater " \
                                    "than or equal to 1"
    bad.write_text(json.dumps([{"train": {"epochs": 2}}]))  # a list, not an object: no field to name
    result = CliRunner().invoke(app, ["train", "--config", str(bad)])
    assert result.exit_code == 2 and result.output.strip().startswith(
        f"error: {bad}: bad configuration: Input should be a valid dictionary"), result.output
    result = CliRunner().invoke(app, ["train", "--config", str(config_file), "--epochs", "0"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: bad value: --epochs: Input should be greater than or equal to 1"
    result = CliRunner().invoke(app, ["train", "--config", str(config_file), "--threads", "0"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: bad value: --threads: Input should be greater than or " \
                                    "equal to 1"
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes('{"data": {"source": "élise"}}'.encode("latin-1"))
    result = CliRunner().invoke(app, ["train", "--config", str(latin1)])
    assert result.exit_code == 2 and result.output.startswith(f"error: {latin1}: bad configuration: 'utf-8' codec")
    assert len(result.output.strip().splitlines()) == 1
    missing = tmp_path / "missing.json"  # the file is the problem, not its settings
    result = CliRunner().invoke(app, ["train", "--config", str(missing)])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {missing}: cannot read the configuration file: No such file or directory"


def test_a_missing_gpu_fails_before_any_data_step_or_mlflow_run(harness, tmp_path, monkeypatch):
    """It failed in the train task: after ingest, normalize and tensors, leaving a FAILED MLflow run."""
    import torch

    from pipeline import workflow

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a GPU machine runs this test too

    config = tiny_config(tmp_path, harness["source"], device="cuda")
    runs_before = len(mlflow.search_runs(search_all_experiments=True))
    for entry_point in (train_name_classifier, workflow.run_pipeline):
        with pytest.raises(NamelangError, match="device 'cuda' asked for, but no CUDA GPU is available"):
            entry_point(config)
    assert not config.data.processed_dir.exists() and not config.data.cache_dir.exists()
    assert len(mlflow.search_runs(search_all_experiments=True)) == runs_before


def test_the_cli_says_a_gpu_is_missing_before_starting_a_temporary_prefect_api(tmp_path):
    """It waited for Prefect's temporary API to start (10 to 25 s) for the same one line."""
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), CUDA_VISIBLE_DEVICES="")  # no GPU, whatever the machine
    done = subprocess.run([NAMELANG, "train", "--device", "cuda", "--source",
                           str(small_names_folder(tmp_path))], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == "error: device 'cuda' asked for, but no CUDA GPU is available"
    assert "temporary server" not in done.stdout + done.stderr and not (tmp_path / "data").exists()


def test_cli_train_on_bad_input_says_what_is_wrong_without_tracebacks(harness, tmp_path):
    """Prefect logged some 240 lines of chained tracebacks for one bad byte before the error line."""
    from prefect.settings import PREFECT_API_URL

    source = tmp_path / "bad"
    source.mkdir()
    (source / "English.txt").write_text("Smith\nJones\n", encoding="utf-8")
    (source / "German.txt").write_bytes(b"Schmidt\nAb\xffc\n")
    config_file = tmp_path / "settings.json"
    config_file.write_text(tiny_config(tmp_path, source).model_dump_json())
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(),  # the harness's server: no temporary one
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"}
    problem = f"{source / 'German.txt'}:2: not valid UTF-8 (byte 0xff: invalid start byte)"
    # `python -m flows.training` is the same command (it ran the flow bare: options ignored, Prefect's traceback)
    for command in ([NAMELANG, "train"], [sys.executable, "-m", "flows.training"]):
        proc = subprocess.run([*command, "--config", str(config_file)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 2, output[-3000:]
        assert proc.stderr.strip().splitlines()[-1] == f"error: {problem}"
        assert "Traceback" not in output and len(output.splitlines()) < 15, output[-3000:]
        assert "Task run 'ingest-" in output and "Finished in state Failed" in output  # Prefect still says where


def test_only_user_errors_lose_their_traceback_in_prefect_logs():
    import logging

    from flows.run_logs import UserErrorsInOneLine

    def record(exc: Exception, cause: Exception | None = None, message: str = "failed") -> logging.LogRecord:
        try:
            raise exc from cause
        except Exception:
            return logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1, message, None, sys.exc_info())

    bad_input = record(NamelangError("not valid UTF-8", "German.txt", 2),
                       UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"))
    plain = record(NamelangError("no names in the folder", "names/"))
    bug = record(KeyError("oops"))
    wrapped_bug = record(NamelangError("checkpoint does not match this model", "c.pt"), KeyError("head.weight"))
    for name in ("prefect.task_runs", "prefect.flow_runs"):  # every flow run, by importing `flows`
        assert any(isinstance(f, UserErrorsInOneLine) for f in logging.getLogger(name).filters)
    for r in (bad_input, plain, bug, wrapped_bug):
        assert UserErrorsInOneLine().filter(r)  # every record is still logged
    assert bad_input.exc_info is None and plain.exc_info is None
    assert bug.exc_info is not None and wrapped_bug.exc_info is not None
    # a deployment's flow process repeats the failure as "unexpected": dropped for input errors only
    engine_exit = "Engine execution exited with unexpected exception"
    assert not UserErrorsInOneLine().filter(record(DownloadError("HTTP 503", "http://127.0.0.1/x"), None, engine_exit))
    assert UserErrorsInOneLine().filter(record(KeyError("oops"), None, engine_exit))


def _ctrl_c(args: list[str], cwd: Path, env: dict, ready, sig: int = signal.SIGINT,
            group: bool = True, program: list[str] | None = None) -> tuple[int, float, str]:
    """Run `namelang *args` (or `program *args`) as a terminal would (its own process group), wait for
    the output line `ready` accepts, then Ctrl-C the whole group (or send `sig` to the group, or to
    namelang alone): (exit code, seconds it took to stop, output)."""
    # a shell gives its foreground job the default Ctrl-C; a test session started in the background
    # (`nohup ... &`) ignores SIGINT, and a child would inherit that and never see the Ctrl-C
    program = program or [NAMELANG]
    proc = subprocess.Popen([*program, *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if ready(line):
                break
        assert proc.poll() is None, "".join(lines)[-3000:]
        interrupted = time.monotonic()
        (os.killpg if group else os.kill)(proc.pid, sig)
        rest, _ = proc.communicate(timeout=120)
        took = time.monotonic() - interrupted
    finally:
        _kill(proc)
    return proc.returncode, took, "".join(lines) + rest


def _temporary_api_stopped(output: str) -> bool:
    """Whether the temporary Prefect API a command started (its address is in the output) is gone."""
    [url] = set(re.findall(r"temporary server on (http://127\.0\.0\.1:\d+)", output))
    return stops_answering(f"{url}/api/health", within_s=15)


def test_a_server_out_of_reach_of_ctrl_c_is_told_apart():
    """The check that warns when Prefect's temporary API did not start in a session of its own."""
    from flows.local_api import in_own_session

    shared = subprocess.Popen(["sleep", "60"])
    own = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        assert not in_own_session(shared.pid) and in_own_session(own.pid)
    finally:
        for proc in (shared, own):
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def _answering_503_once(api: str, method: str):
    """A proxy in front of the Prefect API at `api` that answers the first `method` request with 503 Service
    Unavailable (as a busy server's database does), and passes everything else on: (its API URL, the paths
    refused, without their ids)."""
    refused: list[str] = []

    class Proxy(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.command == method and not refused:
                refused.append(self.path.rsplit("/", 1)[0] + "/")
                answer = httpx.Response(503, json={"exception_message": "Service Unavailable"})
            else:
                answer = httpx.request(self.command, api.removesuffix("/api") + self.path, content=body, timeout=30,
                                       headers={"Content-Type": self.headers.get("Content-Type", "application/json")})
            self.send_response(answer.status_code)
            self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = do_PATCH = do_DELETE = _forward  # noqa: N815 - http.server's naming

        def log_message(self, *args):
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{proxy.server_address[1]}/api", refused
    finally:
        proxy.shutdown()


def test_serving_stops_pausing_only_its_own_deployments_and_at_once_if_the_server_went_first(tmp_path):
    """Stopping flows.serve paused, by name, a deployment `prefect deploy` had moved to a work pool
    meanwhile: its schedule never fired. And with the server stopped first (a reboot's order, a
    crash), Prefect's runner tried to pause for some 75 s, then ended in a connection traceback;
    systemd gives a service 90 s."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.serve import RETRAIN, deployments, pause_served

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PYTHONUNBUFFERED": "1",
           "PREFECT_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_LOGGING_LEVEL": "DEBUG"}  # the runner's debug lines say when it polls
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_http(f"{api}/health", timeout_s=120, proc=server)
        with temporary_settings({PREFECT_API_URL: api}):
            served = deployments()
            for deployment in served:
                deployment.apply()
            for command in (["work-pool", "create", "namelang", "--type", "process"],
                            ["--no-prompt", "deploy", "--name", RETRAIN]):  # the training moves to a pool
                done = subprocess.run([PREFECT, *command], cwd=Path(__file__).parents[1], env=env,
                                      capture_output=True, text=True, timeout=120)
                assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            with _answering_503_once(api, "PATCH") as (flaky_api, refused):
                with temporary_settings({PREFECT_API_URL: flaky_api}):  # a busy server's one 503 is tried again
                    pause_served(served)
                assert refused == ["/api/deployments/"], refused
            with get_client(sync_client=True) as client:
                retrain = client.read_deployment_by_name(f"train-name-classifier/{RETRAIN}")
                assert retrain.work_pool_name == "namelang" and not retrain.paused  # the worker's: left alone
                assert client.read_deployment_by_name("batch-predict/on-demand").paused
                client.delete_deployment(retrain.id)  # flows.serve may serve it again
        _ctrl_c_of_serving_cancels_its_training(tmp_path, env, api)

        def server_gone_once_serving(line: str) -> bool:
            if "prefect.runner - Discovered" not in line:
                return False
            _kill(server)
            return True

        returncode, took, output = _ctrl_c(["--source", str(small_names_folder(tmp_path)), "--no-schedule"],
                                           tmp_path, env, ready=server_gone_once_serving, sig=signal.SIGTERM,
                                           group=False, program=[sys.executable, "-m", "flows.serve"])
    finally:
        _kill(server)
    assert took < 30 and returncode in (0, 128 + signal.SIGTERM), output[-3000:]
    # (the server's going is logged by Prefect's observer of cancellations, with its traceback, as it happens)
    _, stopping = output.split("SIGTERM received", 1)
    assert "Traceback" not in stopping, output[-3000:]
    assert "warning: could not pause the served deployments (ConnectError: " in stopping, output[-3000:]


def _ctrl_c_of_serving_cancels_its_training(tmp_path: Path, env: dict, api: str) -> None:
    """Ctrl-C of flows.serve during a training: Prefect's runner unwound and killed the run's process
    without a word, so the flow run stayed Running (holding the one training slot until Prefect's lease
    lapsed, minutes later) and its MLflow run RUNNING. Now it stops as on SIGTERM: the run Cancelled."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.serve import RETRAIN

    source = small_names_folder(tmp_path / "ctrl-c")
    config = tiny_config(tmp_path / "ctrl-c", source, epochs=1000, patience=1000)
    store = f"sqlite:///{tmp_path / 'ctrl-c' / 'mlruns' / 'mlflow.db'}"
    retrain, started = f"train-name-classifier/{RETRAIN}", []

    def training_under_way(line: str) -> bool:
        if not started and "prefect.runner - Discovered" in line:  # served: start a long training
            with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
                deployment = client.read_deployment_by_name(retrain)
                started.append(client.create_flow_run_from_deployment(
                    deployment.id, parameters={"config": config.model_dump(mode="json")}).id)
        return "epoch 2/1000" in line  # a checkpoint is written: there is something to resume

    returncode, took, output = _ctrl_c(["--source", str(source), "--no-schedule"], tmp_path,
                                       {**env, "MLFLOW_TRACKING_URI": store}, ready=training_under_way,
                                       program=[sys.executable, "-m", "flows.serve"])
    assert returncode in (0, 128 + signal.SIGINT) and took < 60, output[-3000:]
    assert "Ctrl-C: stopping; runs in progress are cancelled" in output, output[-3000:]
    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        assert client.read_flow_run(started[0]).state.is_cancelled(), output[-3000:]
        assert client.read_deployment_by_name(retrain).global_concurrency_limit.active_slots == 0  # the next may start
    # FAILED by the run's own process; a terminal's Ctrl-C reaches that process too, and the runner's SIGTERM may
    # cut its clean-up short: RUNNING then, which the next training marks KILLED since the flow run is Cancelled
    [run] = MlflowClient(store).search_runs([experiment_id(MlflowClient(store))])
    assert run.info.status in ("FAILED", "RUNNING"), output[-3000:]
    assert list(config.train.checkpoint_dir.glob("train-*.pt"))  # kept, for "resume": true


def test_a_temporary_api_that_does_not_start_in_time_is_one_line_and_is_stopped(tmp_path):
    """Prefect waits 20 s for its temporary API; a fresh PREFECT_HOME on a busy 2-core machine took longer,
    and the command ended in Prefect's RuntimeError traceback. The wait is now longer; past it, one line."""
    script = textwrap.dedent("""
        import psutil
        from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings
        from flows import local_api
        from pipeline.errors import TransientError

        assert local_api.TEMPORARY_API_STARTUP_S >= 60
        local_api.TEMPORARY_API_STARTUP_S = 0  # so that the server cannot be up in time
        with temporary_settings({PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 1}):
            try:
                local_api.start_temporary_api()
            except TransientError as exc:
                print("error:", exc)
        print("children:", len(psutil.Process().children(recursive=True)))
    """)
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["error: the temporary Prefect API did not start within 1 s: try again, or "
                                        "start a server (prefect server start) and set PREFECT_API_URL",
                                        "children: 0"], done.stdout + done.stderr[-3000:]


@pytest.mark.parametrize(("sig", "group"), [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_ctrl_c_during_cli_training_stops_at_once_and_leaves_a_resumable_run(tmp_path, sig, group):
    """A terminal's Ctrl-C signals the whole foreground process group; the temporary Prefect API
    must outlive it long enough for the flow to record the interrupt. A SIGTERM to namelang alone
    (systemd, kill) does the same clean-up: unhandled, it left the API running for good."""
    settings = tiny_config(tmp_path, small_names_folder(tmp_path), epochs=2000, patience=2000)
    config_file = tmp_path / "settings.json"
    config_file.write_text(settings.model_dump_json())
    store = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    returncode, took, output = _ctrl_c(["train", "--config", str(config_file)], tmp_path, env,
                                       ready=lambda line: "epoch 3/2000" in line, sig=sig, group=group)
    assert returncode == 128 + sig, output[-3000:]
    assert _temporary_api_stopped(output), output[-3000:]
    assert took < 60, output[-3000:]  # was over two minutes when the server died with the flow
    assert "--resume" in output and "Connection refused" not in output and "Error logging to API" not in output
    assert "(network alone, which early stopping judges: " in output  # the figure that picks the kept epoch
    assert "shares this terminal's Ctrl-C" not in output  # the temporary API started in its own session
    assert "Crashed" in output or "Cancelled" in output  # the flow run's end was recorded, not left Running
    [run] = MlflowClient(store).search_runs([experiment_id(MlflowClient(store))])
    assert run.info.status == "FAILED"
    assert list((tmp_path / "checkpoints").glob("train-*.pt"))  # for --resume


def test_ctrl_c_of_serving_on_the_temporary_api_stops_at_once_without_tracebacks(tmp_path):
    """Prefect's own temporary API shared the terminal's Ctrl-C: stopped first, it left the runner
    retrying to pause the deployments for over a minute, with connection tracebacks."""
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    # the runner's debug lines say when it polls: a Ctrl-C before that had nothing to pause
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PYTHONUNBUFFERED="1", PREFECT_LOGGING_LEVEL="DEBUG")
    returncode, took, output = _ctrl_c(["--source", str(small_names_folder(tmp_path)), "--no-schedule"], tmp_path,
                                       env, ready=lambda line: "prefect.runner - Discovered" in line,
                                       program=[sys.executable, "-m", "flows.serve"])
    assert took < 30 and "paused train-name-classifier/scheduled-retrain, batch-predict/on-demand" in output, (
        output[-3000:])
    assert "Traceback" not in output and "ConnectError" not in output, output[-3000:]
    assert _temporary_api_stopped(output), output[-3000:]
    assert returncode in (0, 128 + signal.SIGINT), output[-3000:]


def test_ctrl_c_while_serving_starts_is_one_line(tmp_path):
    """Starting takes a while (the temporary API alone up to 90 s): a Ctrl-C then was a traceback."""
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PYTHONUNBUFFERED="1")
    returncode, took, output = _ctrl_c(["--source", str(small_names_folder(tmp_path)), "--no-schedule"], tmp_path,
                                       env, ready=lambda line: "Starting temporary server on" in line,
                                       program=[sys.executable, "-m", "flows.serve"])
    assert returncode == 128 + signal.SIGINT and took < 30, output[-3000:]
    assert output.rstrip().endswith("Ctrl-C: stopped before serving") and "Traceback" not in output, output[-3000:]
    assert _temporary_api_stopped(output), output[-3000:]


def test_ctrl_c_while_the_temporary_api_starts_is_one_line(tmp_path):
    """The temporary API's start takes some 20 s; a Ctrl-C in it, which Prefect's settings serialiser
    often turns into an error of its own, ended `namelang train` in a traceback."""
    config_file = tmp_path / "settings.json"
    config_file.write_text(tiny_config(tmp_path, small_names_folder(tmp_path)).model_dump_json())
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PYTHONUNBUFFERED="1",
               MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    returncode, took, output = _ctrl_c(["train", "--config", str(config_file)], tmp_path, env,
                                       ready=lambda line: "Starting temporary server on" in line)
    assert returncode == 128 + signal.SIGINT and took < 30, output[-3000:]
    assert "Traceback" not in output and "nothing is checkpointed: run the same command again" in output, output[-3000:]
    assert _temporary_api_stopped(output), output[-3000:]


def test_a_ctrl_c_a_library_turned_into_its_own_error_is_still_noted():
    """Landing in pydantic's serialiser (building the temporary API's command), a Ctrl-C became a
    PydanticSerializationError, with no cause, and ended flows.serve's start in a traceback."""
    from flows.processes import Stopped, ctrl_c_not_lost, stop_signals_interrupt

    def stopped_by(sig: int) -> KeyboardInterrupt:
        with pytest.raises(KeyboardInterrupt) as stopped, ctrl_c_not_lost():
            try:
                os.kill(os.getpid(), sig)
                time.sleep(10)  # the handler raises in here
            except KeyboardInterrupt:
                raise RuntimeError("Error calling function `_ser_model`: KeyboardInterrupt") from None  # as pydantic's
        return stopped.value

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    ctrl_c = stopped_by(signal.SIGINT)
    assert type(ctrl_c) is KeyboardInterrupt
    with stop_signals_interrupt():  # as the CLI's commands: SIGTERM raises Stopped, noted as well
        term = stopped_by(signal.SIGTERM)
    assert isinstance(term, Stopped) and term.signum == signal.SIGTERM
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    with pytest.raises(RuntimeError), ctrl_c_not_lost():  # an error no stop caused is left as it is
        raise RuntimeError("no Ctrl-C")


def test_an_interrupted_training_offers_resume_only_with_a_checkpoint_to_resume(tmp_path):
    """Interrupted during the data steps or the first epoch, the CLI said every finished epoch was
    checkpointed and to use --resume: nothing was. With --resume, another settings' checkpoint in the
    folder made it say so too; interrupted after registration, it said no epoch had finished."""
    from flows.cli import _what_resumes
    from flows.training import Reached

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    old = folder / "train-0123.pt"  # another run's, from before
    old.write_bytes(b"checkpoint")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    started = time.time() - 60
    in_data_steps = Reached()
    assert "nothing is checkpointed: run the same command again" in _what_resumes(in_data_steps, folder, started,
                                                                                  resumed=False)
    assert "(with --resume: the checkpoint it resumes from, if there is one, is untouched)" in _what_resumes(
        in_data_steps, folder, started, resumed=True)
    this_run = Reached(checkpoint=folder / "train-4567.pt")  # the data steps named it: no epoch yet
    for resumed in (False, True):  # another settings' checkpoint is not this run's
        assert "nothing is checkpointed: run the same command again" in _what_resumes(this_run, folder, started,
                                                                                      resumed)
    this_run.checkpoint.write_bytes(b"checkpoint")  # its first epoch
    assert "--resume" in _what_resumes(this_run, folder, started, resumed=False)
    os.utime(this_run.checkpoint, (time.time() - 3600, time.time() - 3600))
    assert "nothing is checkpointed" in _what_resumes(this_run, folder, started, resumed=False)  # an earlier run's
    assert "--resume" in _what_resumes(this_run, folder, started, resumed=True)  # the one it resumed from
    assert "checkpoints are off" in _what_resumes(Reached(), None, started, resumed=False)
    this_run.checkpoint.unlink()  # deleted once registered
    registered = Reached(checkpoint=this_run.checkpoint, version="3", alias="challenger")
    assert _what_resumes(registered, folder, started, resumed=False) == (
        "version 3 was registered before it (alias 'challenger'): the training is done, nothing to resume")


def test_an_interrupted_batch_says_nothing_was_written_only_when_nothing_was():
    """A Ctrl-C after the output was renamed into place (during the run's last reports) was told
    "nothing was written"."""
    from flows.cli import _what_batch_left

    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "names.csv.predictions.parquet"
        started = time.time() - 60
        assert _what_batch_left(target, started).endswith("so nothing was written")
        assert _what_batch_left(None, started).endswith("so nothing was written")  # stopped before its check
        target.write_bytes(b"PAR1")
        assert _what_batch_left(target, started) == f"the output was written before it: {target}"
        os.utime(target, (started - 3600, started - 3600))  # an earlier run's output, left as it was
        assert _what_batch_left(target, started).endswith("so nothing was written")


def test_cli_batch_predicts_a_file(first_run, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    names = tmp_path / "names.txt"
    names.write_text("Nakamura\nRossi\n\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["batch", str(names)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "names.txt.predictions.parquet"  # the whole input name: names.csv beside would not collide
    assert f"3 names -> {out} (1 could not be classified" in result.output
    assert len(pd.read_parquet(out)) == 3
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:  # the latest batch-predict run: this one
        [latest] = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["batch-predict"])),
                                         sort=FlowRunSort.START_TIME_DESC, limit=1)
    assert set(latest.tags) == {"namelang", "prediction"}  # as the deployment's runs: the crash automation's
    runs_before = _flow_runs("batch-predict")
    missing = CliRunner().invoke(app, ["batch", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 2 and "input file not found" in missing.output
    # an output that would replace the input, is a folder, or is not named .parquet: one line, the input untouched
    (tmp_path / "folder").mkdir()
    for target, problem in ((names, "the output would replace the input file; write it elsewhere"),
                            (tmp_path / "folder", "cannot write this file: a folder has its name"),
                            (tmp_path / "out.csv", "the output is written as Parquet: give it a name ending in "
                                                   ".parquet, not 'out.csv'")):
        refused = CliRunner().invoke(app, ["batch", str(names), "--out", str(target)])
        assert refused.exit_code == 2 and refused.output.strip().endswith(f"error: {target}: {problem}"), refused.output
    assert names.read_text(encoding="utf-8") == "Nakamura\nRossi\n\n"
    assert not list((tmp_path / "folder").iterdir()) and not (tmp_path / "out.csv").exists()
    assert _flow_runs("batch-predict") == runs_before  # refused before any flow ran (or a temporary API started)
    assert CliRunner().invoke(app, ["batch", str(names), "--chunk-size", "0"]).exit_code == 2  # a usage error


@pytest.mark.parametrize(("sig", "group"), [(signal.SIGINT, True), (signal.SIGHUP, False), (signal.SIGKILL, False)])
def test_ctrl_c_during_cli_batch_stops_at_once_and_writes_nothing(first_run, tmp_path, sig, group):
    """As for training: the temporary Prefect API must not die with the flow on a terminal's Ctrl-C
    (it did: minutes of connection tracebacks), and a half-predicted file is never written. A closed
    terminal (SIGHUP) does the same clean-up; after a SIGKILL, where nothing can clean up, the API
    still stops, and only a temp file is left."""
    names = tmp_path / "many.txt"
    names.write_text("Nakamura\nRossi\nSmith\nIvanov\n" * 250_000, encoding="utf-8")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PYTHONUNBUFFERED": "1"}
    returncode, took, output = _ctrl_c(["batch", str(names), "--chunk-size", "5000"], tmp_path, env,
                                       ready=lambda line: "predicted 5,000 names so far" in line,  # predicting
                                       sig=sig, group=group)
    assert _temporary_api_stopped(output), output[-3000:]
    assert not (tmp_path / "many.txt.predictions.parquet").exists()
    if sig == signal.SIGKILL:
        assert returncode == -sig
        return
    assert returncode == 128 + sig and took < 60, output[-3000:]  # over two minutes before
    assert "nothing was written" in output and "Connection refused" not in output, output[-3000:]
    assert not list(tmp_path.glob("*many.txt.predictions.parquet*"))  # neither the output nor a temp file


def test_serving_says_at_once_that_its_default_source_is_empty_or_not_there(tmp_path, monkeypatch, capsys):
    """Any --source was served without a word (a typo, or NAMELANG_SOURCE="" as an empty source): the
    weekly run failed on it days later."""
    from flows.serve import default_source, main, source_missing
    from pipeline.config import DEFAULT_SOURCE

    for empty in ("", "  "):
        monkeypatch.setenv("NAMELANG_SOURCE", empty)
        assert default_source() == DEFAULT_SOURCE  # empty is unset, as for NAMELANG_RETRAIN_CRON
    monkeypatch.setenv("NAMELANG_SOURCE", "../shared/data/names")
    assert default_source() == "../shared/data/names"
    with pytest.raises(SystemExit) as stopped:
        main(["--source", " "])
    assert stopped.value.code == 2 and "no data source given (--source)" in capsys.readouterr().err
    for url, problem in (("http://[::1/data.zip", "not a valid URL: Invalid port: ':1'"),
                         ("ftp://example.org/data.zip", "unsupported URL scheme 'ftp'")):
        with pytest.raises(SystemExit) as stopped:  # never fetchable: refused before any Prefect API starts
            main(["--source", url])
        assert stopped.value.code == 2 and f"bad data source (--source): {url}: {problem}" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    (tmp_path / "names").mkdir()
    assert source_missing("names") is None and source_missing(DEFAULT_SOURCE) is None  # a URL: fetched when run
    assert source_missing("../shared/data/name") == (
        f"../shared/data/name: no such file or folder here ({tmp_path}, where the runs start): scheduled and "
        "on-demand trainings on this default source will fail until it exists")


def test_serving_with_a_bad_schedule_is_a_usage_error(tmp_path, monkeypatch, capsys):
    """The command itself once (its exit code, no traceback); each case through its `main`, in this process
    (the schedule is checked before any Prefect API is asked, and a start of the command takes ~5 s)."""
    done = subprocess.run([sys.executable, "-m", "flows.serve", "--cron", "not a cron"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PREFECT_HOME": str(tmp_path)})
    assert done.returncode == 2, done.stderr[-2000:]
    assert 'bad schedule (--cron \'not a cron\', --timezone \'UTC\'): Invalid cron string: "not a cron"' in done.stderr
    assert "Traceback" not in done.stderr
    from flows.serve import main

    for args, env, problem in (
            (["--cron", "not a cron"], {}, 'Invalid cron string: "not a cron"'),
            (["--timezone", "Mars/Base"], {}, 'Invalid timezone: "Mars/Base"'),
            # Quartz-style, with seconds first: Prefect took it and read "0" as the second
            (["--cron", "0 0 3 * * 1"], {}, "--cron '0 0 3 * * 1', --timezone 'UTC'): a cron has 5 fields"),
            ([], {"NAMELANG_RETRAIN_CRON": "*/5 * * * *"},  # queued 57 runs a minute as "* * * * * *"
             "(NAMELANG_RETRAIN_CRON '*/5 * * * *', --timezone 'UTC'): it starts a retraining 5 minutes after another, "
             "and one trains at a time: runs due meanwhile would queue up faster than they finish; leave at least "
             "1 hour between starts"),
            # argparse's abbreviation of --cron, beside the variable: the option is what was used
            (["--cr=0 3 30 2 *"], {"NAMELANG_RETRAIN_CRON": "0 4 * * *"},
             "(--cron '0 3 30 2 *', --timezone 'UTC'): it never fires (no such date)")):
        monkeypatch.delenv("NAMELANG_RETRAIN_CRON", raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(SystemExit) as stopped:
            main(args)
        stderr = capsys.readouterr().err
        assert stopped.value.code == 2, stderr
        assert "bad schedule" in stderr and problem in stderr, stderr


@pytest.mark.parametrize(("cron", "timezone", "fine"), [
    ("0 3 * * 1", "UTC", True), ("@daily", "Europe/Berlin", True), ("0 * * * *", "UTC", True),
    ("* * * * * *", "UTC", False), ("*/30 * * * *", "UTC", False), ("0,30 9 * * *", "UTC", False),
    ("0 3 * *", "UTC", False), ("@hourly", "UTC", True), ("0 3 31 4 *", "UTC", False),
    ("30 2 * * *", "America/New_York", True)])
def test_retraining_schedules_fire_at_most_hourly_on_five_fields(cron, timezone, fine):
    from flows.serve import schedule_problem

    assert (schedule_problem(cron, timezone) is None) == fine, schedule_problem(cron, timezone)


def test_a_training_closes_the_mlflow_runs_of_flow_runs_that_ended_without_closing_them(first_run):
    """A flow run killed hard (then Crashed by flows.unresponsive, or Cancelled) left its MLflow run
    RUNNING; the next training marks it KILLED and says why. Runs whose flow run still runs, or is
    unknown to this Prefect API, or that no flow run started, are left alone."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled, Crashed, Running

    config, _ = first_run

    @flow
    def stand_in() -> None:  # only its flow runs are used, never run
        pass

    client = MlflowClient()
    experiment = experiment_id(client)
    with get_client(sync_client=True) as prefect:
        flow_runs = {}
        for label, state in (("crashed", Crashed()), ("cancelled", Cancelled()), ("running", Running())):
            flow_runs[label] = prefect.create_flow_run(stand_in, name=f"stand-in-{label}").id
            prefect.set_flow_run_state(flow_runs[label], state, force=True)
    tags = {label: {"prefect.flow_run_id": str(flow_run_id)} for label, flow_run_id in flow_runs.items()}
    tags["unknown"] = {"prefect.flow_run_id": "0195a000-0000-7000-8000-000000000000"}
    tags["no flow run"] = {}
    runs = {label: client.create_run(experiment, tags=run_tags).info.run_id for label, run_tags in tags.items()}
    try:
        summary = train_name_classifier(config.model_copy(update={"train": config.train.model_copy(
            update={"epochs": 1})}))
        status = {label: client.get_run(run_id).info.status for label, run_id in runs.items()}
        assert status == {"crashed": "KILLED", "cancelled": "KILLED", "running": "RUNNING", "unknown": "RUNNING",
                          "no flow run": "RUNNING"}
        reason = client.get_run(runs["crashed"]).data.tags["namelang.closed_because"]
        assert reason == f"its Prefect flow run {flow_runs['crashed']} ended Crashed without closing it"
        assert client.get_run(summary["run_id"]).info.status == "FINISHED"  # its own run, left to finish
    finally:
        for run_id in runs.values():
            client.set_terminated(run_id, "KILLED")


def test_a_training_killed_hard_is_found_dead_and_closed_by_the_next_one(first_run, tmp_path):
    """`namelang train` killed by SIGKILL (the OOM killer, say) leaves its flow run Running and its
    MLflow run RUNNING, and nothing watches a temporary API. The next training, on the same host,
    finds its process gone: the flow run is marked Crashed, the MLflow run KILLED. A flow run retried
    since (a later attempt under the same id, which may be running now) is not Crashed, though the
    dead attempt's MLflow run is closed; a run whose process lives, or of another host, is left alone."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL
    from prefect.states import Running

    from pipeline.liveness import HOST_TAG, PID_TAG, STARTED_TAG, this_process
    from pipeline.tracking import FLOW_RUN_ATTEMPT_TAG, FLOW_RUN_TAG

    config, _ = first_run
    settings = config.model_copy(update={"train": config.train.model_copy(
        update={"epochs": 500, "patience": 500, "progress": False})})
    config_file = tmp_path / "settings.json"
    config_file.write_text(settings.model_dump_json())
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    killed = subprocess.Popen([NAMELANG, "train", "--config", str(config_file)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = MlflowClient()
    try:
        deadline = time.monotonic() + 120
        while not (found := client.search_runs([experiment_id(client)], f"tags.`{PID_TAG}` = '{killed.pid}'")):
            assert killed.poll() is None and time.monotonic() < deadline, "the training never started its MLflow run"
            time.sleep(0.2)
    finally:
        killed.kill()
        killed.wait()
    dead = found[0]
    assert client.get_run(dead.info.run_id).info.status == "RUNNING"
    dead_process = {k: v for k, v in dead.data.tags.items() if k in this_process()}

    @flow
    def stand_in() -> None:  # only its flow runs are used, never run
        pass

    with get_client(sync_client=True) as prefect:
        dead_flow_run = prefect.read_flow_run(dead.data.tags[FLOW_RUN_TAG])
        assert dead_flow_run.state.is_running()
        assert dead.data.tags[FLOW_RUN_ATTEMPT_TAG] == str(dead_flow_run.run_count) == "1"
        others, flow_runs = {}, {}
        for label, process in (("this process", this_process()), ("retried since", dead_process),
                               ("another host", {**dead_process, HOST_TAG: "elsewhere"})):
            flow_runs[label] = prefect.create_flow_run(stand_in, name=f"stand-in-{label}").id
            prefect.set_flow_run_state(flow_runs[label], Running(), force=True)
            attempt = prefect.read_flow_run(flow_runs[label]).run_count - (label == "retried since")
            others[label] = client.create_run(experiment_id(client), tags={
                **process, FLOW_RUN_TAG: str(flow_runs[label]), FLOW_RUN_ATTEMPT_TAG: str(attempt)}).info.run_id
    try:
        train_name_classifier(config.model_copy(update={"train": config.train.model_copy(update={"epochs": 1})}))
        closed = client.get_run(dead.info.run_id)
        assert closed.info.status == "KILLED"
        assert f"its process (pid {killed.pid} on " in closed.data.tags["namelang.closed_because"]
        assert STARTED_TAG in closed.data.tags
        with get_client(sync_client=True) as prefect:
            state = prefect.read_flow_run(dead_flow_run.id).state
            retried = prefect.read_flow_run(flow_runs["retried since"]).state
        assert state.is_crashed() and "is gone" in state.message, state
        assert retried.is_running(), retried  # its later attempt may be running: not Crashed
        assert {label: client.get_run(run_id).info.status for label, run_id in others.items()} == {
            "this process": "RUNNING", "retried since": "KILLED", "another host": "RUNNING"}
        assert "has been retried since" in client.get_run(others["retried since"]).data.tags["namelang.closed_because"]
    finally:
        for run_id in others.values():
            client.set_terminated(run_id, "KILLED")


def test_a_failed_clean_up_of_abandoned_runs_only_warns(first_run, monkeypatch):
    """The clean-up is housekeeping: when its search fails (here a fault put in its place, one that
    is not retried), the training goes on, registers its model and says in its log what failed."""
    import flows.training

    def broken_search():
        raise TypeError("the search broke")

    monkeypatch.setattr(flows.training, "unfinished_runs_by_flow_run", broken_search)
    config, _ = first_run
    summary = train_name_classifier(config.model_copy(update={"train": config.train.model_copy(
        update={"epochs": 1})}))
    assert MlflowClient().get_run(summary["run_id"]).info.status == "FINISHED"
    assert summary["version"] not in ("", None)
    warnings = [m for m in _flow_run_log(summary["flow_run_id"]) if "could not close the MLflow runs" in m]
    assert len(warnings) == 1 and "the search broke" in warnings[0], warnings


def test_the_crash_automation_is_set_up_once_and_changed_only_to_wait_longer(harness, capsys):
    """`python -m flows.unresponsive` (and flows.serve, which calls the same function) leaves one
    automation however often it runs, watching for three heartbeat periods. Set up again unchanged,
    its trigger keeps its id (a new one would make the server forget the runs it watches); a shorter
    period does not shorten it (runs elsewhere may beat less often); one turned off by hand stays off;
    none is made with heartbeats off. (That it crashes a killed run, and only once its heartbeats
    stop: test_deployment_run_on_a_real_prefect_server.)"""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from flows.unresponsive import AUTOMATION_NAME, main

    def automations() -> list:
        with get_client(sync_client=True) as client:
            return client.read_automations_by_name(AUTOMATION_NAME)

    def set_up_with(period: int | None) -> tuple[float, str, bool]:
        """The window, the trigger's id as the server holds it, and whether it is enabled."""
        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: period}):
            main([])
        [automation] = automations()
        raw = httpx.get(f"{PREFECT_API_URL.value()}/automations/{automation.id}", timeout=30).json()
        return automation.trigger.within.total_seconds(), raw["trigger"]["id"], automation.enabled

    with get_client(sync_client=True) as client:  # a serve test of this module may have made it
        for automation in automations():
            client.delete_automation(automation.id)
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        with pytest.raises(SystemExit) as exit_info:
            main([])
        assert exit_info.value.code == 0 and automations() == []

    window, trigger_id, enabled = set_up_with(180)
    assert window == 540 and enabled
    [automation] = automations()
    assert automation.trigger.match_related.model_dump() == {"prefect.resource.role": "tag",
                                                             "prefect.resource.id": "prefect.tag.namelang"}
    assert set_up_with(180) == (540, trigger_id, True)  # unchanged, not rewritten
    capsys.readouterr()
    assert set_up_with(40) == (540, trigger_id, True)  # 120 s would crash runs that beat every 180 s
    assert "kept: it waits longer than 3 x 40 s" in capsys.readouterr().out
    window, new_trigger_id, _ = set_up_with(200)
    assert window == 600 and new_trigger_id != trigger_id
    with get_client(sync_client=True) as client:
        client.pause_automation(automation.id)
    assert set_up_with(200)[2] is False


def test_the_crash_automation_needs_a_server(monkeypatch, capsys):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.unresponsive import main

    with temporary_settings({PREFECT_API_URL: None}), pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: PREFECT_API_URL is not set")


@pytest.mark.parametrize(("digest", "fine"), [("ab" * 32, True), ("AB" * 32, True), ("ab" * 32 + "\n", False),
                                             ("ab" * 31, False), ("ab" * 32 + "0", False)])
def test_a_prefect_server_checks_a_pinned_sha256_as_the_config_does(digest, fine):
    """The deployment's parameter schema, checked as a Prefect server checks it (`re.search` of the
    pattern), agrees with the config's own validator: a run with a bad digest is refused when it is
    created, not when it starts."""
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools.validation import is_valid
    from pydantic import ValidationError

    from pipeline.config import DataConfig

    schema = parameter_schema(train_name_classifier).model_dump()
    assert is_valid({"config": {"data": {"source_sha256": digest}}}, schema) == fine
    try:
        DataConfig(source_sha256=digest)
    except ValidationError:
        assert not fine
    else:
        assert fine


def test_every_entry_point_turns_telemetry_off():
    """`python -m flows.serve`, workers and the CLI import `flows` first: telemetry is off before
    Prefect or MLflow loads, whatever the user's shell has (nothing reaches beyond this machine)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DO_NOT_TRACK", "MLFLOW_DISABLE_TELEMETRY", "PREFECT_SERVER_ANALYTICS_ENABLED")}
    probe = ("import flows.serve; from mlflow.telemetry.utils import is_telemetry_disabled; "
             "from prefect.settings import get_current_settings; "
             "print(is_telemetry_disabled(), get_current_settings().server.analytics_enabled)")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False"]


def test_a_prefect_api_that_does_not_answer_is_one_line_not_a_traceback(tmp_path):
    """PREFECT_API_URL left exported after its server stopped: the engine failed with a 135-line
    connection traceback and exit code 1; each command now says what to do, in one line, exit 2."""
    url = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    names = tmp_path / "names.txt"
    names.write_text("Rossi\n", encoding="utf-8")
    env = {**os.environ, "PREFECT_API_URL": url}
    commands = {"batch": [NAMELANG, "batch", str(names)],
                "serve": [sys.executable, "-m", "flows.serve", "--source", str(names.parent)]}
    for command in commands.values():
        proc = subprocess.run(command, env=env, cwd=Path(__file__).parents[1], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stderr.strip() == (f"error: {url}: no Prefect API answers at PREFECT_API_URL (ConnectError: "
                                       "[Errno 111] Connection refused): start it (prefect server start), or unset "
                                       "PREFECT_API_URL to use a temporary local one"), proc.stderr
    assert not list(tmp_path.glob("*.parquet"))


def test_prefect_yaml_deploys_what_flows_serve_serves():
    """The worker-based deployments (prefect.yaml) and the served ones (flows/serve.py) are two spellings of
    the same two deployments: their descriptions had drifted apart."""
    import yaml

    from flows.serve import deployments
    from pipeline.config import PipelineConfig

    repo = Path(__file__).parents[1]
    spec = yaml.safe_load((repo / "prefect.yaml").read_text())
    served = {d.name: d for d in deployments()}
    assert sorted(d["name"] for d in spec["deployments"]) == sorted(served)
    for entry in spec["deployments"]:
        ours = served[entry["name"]]
        # Prefect writes a served entrypoint relative to the working directory, prefect.yaml's to the repo
        (file, function), (our_file, our_function) = entry["entrypoint"].split(":"), ours.entrypoint.split(":")
        assert (repo / file).resolve() == (Path.cwd() / our_file).resolve() and function == our_function
        assert entry["description"] == ours.description
        assert entry["tags"] == ours.tags
        limit = entry.get("concurrency_limit")
        assert (limit["limit"], limit["collision_strategy"]) == (ours.concurrency_limit, "ENQUEUE") if limit else \
            ours.concurrency_limit is None
        assert [(s["cron"], s["timezone"]) for s in entry.get("schedules") or []] == \
            [(s.schedule.cron, s.schedule.timezone) for s in ours.schedules]
        if "config" in ours.parameters:  # the same settings, spelt out in full or as changes to the defaults
            assert PipelineConfig.model_validate(entry["parameters"]["config"]) == \
                PipelineConfig.model_validate(ours.parameters["config"])
        else:
            assert not entry.get("parameters")


def test_serving_without_a_schedule_removes_the_one_served_before(harness):
    """`--no-schedule`: retraining on demand only, both deployments still served; on the server, the
    schedule an earlier `flows.serve` left is gone (a paused one came back on every restart)."""
    from prefect import get_client

    from flows.serve import RETRAIN, deployments

    def served(cron: str | None) -> tuple[list[str], list[str]]:
        served = deployments(cron)
        for deployment in served:
            deployment.apply()  # what `serve` does with each
        with get_client(sync_client=True) as client:
            retrain = client.read_deployment_by_name(f"train-name-classifier/{RETRAIN}")
        return sorted(d.name for d in served), [s.schedule.cron for s in retrain.schedules]

    names, schedules = served("0 3 * * 1")
    assert schedules == ["0 3 * * 1"]
    assert served(None) == (names, [])


def test_every_parameter_and_setting_says_what_it_is_in_the_deployments_form():
    """The Prefect UI's run form shows each field's description: 22 settings and every flow parameter had none."""
    from prefect.utilities.callables import parameter_schema

    for entry in (train_name_classifier, batch_predict):
        schema = parameter_schema(entry).model_dump()
        undescribed = [name for name, field in schema["properties"].items() if not field.get("description")]
        for section, definition in schema.get("definitions", {}).items():
            undescribed += [f"{section}.{name}" for name, field in definition["properties"].items()
                            if "$ref" not in field and not field.get("description")]  # a section: its own fields
        assert not undescribed, (entry.name, undescribed)
