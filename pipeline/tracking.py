"""MLflow tracking: the store, the experiment, and one run's params, curves, data and artifacts.

Everything goes through `MlflowClient` with an explicit run id, so stages that run in different
tasks or threads log into the same run without relying on MLflow's global "active run".
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import filelock
import mlflow
import pyarrow as pa
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.environment_variables import (
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR,
    MLFLOW_EXPERIMENT_NAME,
    MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT,
)
from mlflow.exceptions import MlflowException
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.rest_utils import http_request

from pipeline.config import MODEL_NAME, PipelineConfig, flat_params
from pipeline.errors import (
    NamelangError,
    NamelangWarning,
    TrackingError,
    first_line,
    is_programming_error,
    refused_for_good,
    typed_first_line,
)
from pipeline.liveness import HOST_TAG, PID_TAG, process_gone, this_process

if TYPE_CHECKING:  # annotations only: importing them would slow every command's start
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.models.model import ModelInfo

EXPERIMENT = MODEL_NAME
DEFAULT_STORE_DIR = Path("mlruns")


# MLflow reads it at each download; a server's log or a one-line answer has no use for its bars
ARTIFACTS_PROGRESS_BAR = MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name


@contextlib.contextmanager
def artifact_progress_bars(enabled: bool) -> Iterator[None]:
    """MLflow's download bars (from a tracking server: some 30 updates for one model) off within the
    block, unless `enabled` and standard error is a terminal (in a log file their frames fill the
    line), and restored after, so that the rest of the process (a served flow, a notebook) keeps its
    own setting."""
    with _environment(ARTIFACTS_PROGRESS_BAR, None if enabled and _on_a_terminal() else "false"):
        yield


@contextlib.contextmanager
def _environment(name: str, value: str | None) -> Iterator[None]:
    """The environment variable `name` set to `value` within the block (None: left as it is), and as it
    was after: MLflow reads its settings there at each use."""
    before = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _on_a_terminal() -> bool:
    stream = sys.stderr
    return stream is not None and hasattr(stream, "isatty") and stream.isatty()


def default_tracking_uri() -> str:
    return f"sqlite:///{(DEFAULT_STORE_DIR / 'mlflow.db').resolve()}"


def sqlite_file(uri: str) -> Path | None:
    """The database file of an embedded `sqlite:///` store, read as SQLAlchemy reads it (`?timeout=30`
    is an option, not part of the name); None for a tracking server."""
    if not uri.startswith("sqlite:///"):
        return None
    from sqlalchemy.engine import make_url  # here: a tracking server's client never needs SQLAlchemy

    database = make_url(uri).database
    return Path(database) if database else None


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` when set (a team's server), else the embedded SQLite store in mlruns/."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def without_credentials(url: str) -> str:
    """A tracking server's URL as a link to show: no `user:password@` (the browser asks for them)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url  # as given: urllib would write "sqlite:///x" back as "sqlite:/x"
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


# MLflow's own retries of a request to a tracking server, bounded (its defaults wait minutes on a dead one);
# set in the environment, so that a child process (the REST server) inherits them too
HTTP_RETRY_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                       "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def server_silence(uri: str, timeout_s: float = 5) -> str | None:
    """Why a tracking server does not answer its health check ("MlflowException: API request to ...
    failed", "HTTP 503"); None when it does, or when `uri` is not a server's (a SQLite store). Asked
    as MLflow asks, with its TLS settings (`MLFLOW_TRACKING_INSECURE_TLS`, `..._SERVER_CERT_PATH`,
    `..._CLIENT_CERT_PATH`, `REQUESTS_CA_BUNDLE`): a team server with its own certificate authority
    answers MLflow, so it answers here."""
    if urlsplit(uri).scheme not in ("http", "https"):
        return None
    try:
        status = http_request(get_default_host_creds(uri), "/health", "GET", max_retries=0, timeout=timeout_s,
                              raise_on_status=False).status_code
    except MlflowException as exc:  # MLflow's word for a refused connection, a timeout, a certificate refused
        return _transport_reason(exc)
    return f"HTTP {status}" if status >= 500 else None


# the transport's own reason, from inside MLflow's and urllib3's wrappings ("API request to ... failed with
# exception HTTPConnectionPool(...): Max retries exceeded ... [Errno 111] Connection refused"))"), some 400
# characters for two words; the first that matches, else the whole first line
_TRANSPORT_REASONS = (re.compile(r"(certificate verify failed[^'\"()]*)"), re.compile(r"\[Errno -?\d+\] ([^'\"()\]]+)"),
                      re.compile(r"(Read timed out|timed out)"))


def _transport_reason(exc: BaseException) -> str:
    text = typed_first_line(exc)
    for pattern in _TRANSPORT_REASONS:
        if found := pattern.search(text):
            return found.group(1).strip()
    return text


def check_reachable(uri: str, attempts: int = 3, backoff_s: float = 0.5) -> None:
    """Fail fast, after a few bounded retries, when a tracking server does not answer."""
    for attempt in range(attempts):
        last = server_silence(uri)
        if last is None:
            return
        if attempt < attempts - 1:
            time.sleep(backoff_s * 2**attempt)
    # the URI's credentials are hidden, as in any NamelangError
    raise TrackingError(f"MLflow tracking server unreachable after {attempts} tries ({last})", uri)


def configure(uri: str | None = None, create: bool = True) -> str:
    """Point MLflow (tracking and registry) at `uri` or the default store; returns the URI used.

    With `create=False` (prediction), a missing SQLite store is an error, not a new empty store.
    """
    uri = uri or tracking_uri()
    db = sqlite_file(uri)
    if db is not None:
        if db.parent != Path(uri.removeprefix("sqlite:///")).parent:
            # SQLAlchemy reads a URL (`?` starts its options, `%41` is an A), MLflow makes the folder of the
            # text as written: quoted or not, one folder would be made and a database opened in another
            raise NamelangError(f"this store's path holds a '%' or a '?' ({uri}), which MLflow and SQLAlchemy "
                                "read differently: move the checkout, or set MLFLOW_TRACKING_URI to a store "
                                "elsewhere")
        if not create and not db.exists():
            raise NamelangError("no MLflow store here, so no model to use; train one with `make run` or "
                                "`namelang train --source DATA` (or set MLFLOW_TRACKING_URI)", db)
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in its way, no permission: the store's to mend, not worth a retry
            raise NamelangError(f"cannot make the MLflow store's folder ({exc.strerror or exc})", db.parent) from exc
    else:
        for key, value in HTTP_RETRY_SETTINGS.items():
            os.environ.setdefault(key, value)  # bounded retries against an unreachable server
    check_reachable(uri)
    if db is not None and create:
        _set_up_sqlite_store(uri, db)
    if db is None and without_credentials(uri) != uri:  # MLflow's "View run at" lines would print the password
        os.environ.setdefault(MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.name, "true")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


# How long a process waits for another that is setting up a new SQLite store (seconds, even on 2 busy cores)
STORE_SETUP_LOCK_TIMEOUT_S = 300.0


def _set_up_sqlite_store(uri: str, db: Path) -> None:
    """Open the store as MLflow's clients will, one process at a time: the first process to open a new
    SQLite store creates and migrates its tables, and two doing so at once (two first trainings) both
    failed, leaving a half-migrated store that every later run failed on."""
    lock = filelock.FileLock(f"{db}.setup.lock", timeout=STORE_SETUP_LOCK_TIMEOUT_S)
    try:
        with lock:
            client = MlflowClient(uri, uri)  # the tracking store, created here if new
            client.search_registered_models(max_results=1)  # and the registry's
    except filelock.Timeout as exc:
        raise TrackingError(f"another process held the MLflow store's set-up lock for over "
                            f"{STORE_SETUP_LOCK_TIMEOUT_S:.0f} s", lock.lock_file) from exc
    except Exception as exc:  # sqlalchemy's, alembic's or MLflow's: a store that will not open is one line
        if is_programming_error(exc):
            raise
        half_made = "alembic" in f"{type(exc).__module__} {exc}".lower()
        raise NamelangError(f"MLflow could not {'set up its tables in' if half_made else 'open'} this store "
                            f"({first_line(exc)})" + ("; one left half-made by a first set-up that failed: if it "
                                                      "holds no runs yet, move it aside and run again"
                                                      if half_made else ""), db) from exc


def experiment_name() -> str:
    """MLflow's own `MLFLOW_EXPERIMENT_NAME` when set (a team's experiment per project), else `namelang`."""
    return MLFLOW_EXPERIMENT_NAME.get() or EXPERIMENT


def experiment_id(client: MlflowClient, name: str | None = None) -> str:
    name = name or experiment_name()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None and experiment.lifecycle_stage == "deleted":  # deleted in the UI: nothing to retry
        raise NamelangError(f"the MLflow experiment {name!r} (id {experiment.experiment_id}) is deleted, so no run "
                            f"can start in it: restore it (`{_restore_experiment(experiment.experiment_id)}`, or "
                            "the UI), or remove it for good (`mlflow gc`)", without_credentials(client.tracking_uri))
    if experiment is not None:
        return experiment.experiment_id
    db = sqlite_file(client.tracking_uri)  # embedded store: artifacts beside the database
    location = (db.parent / "artifacts").resolve().as_uri() if db is not None else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException as exc:  # another process's first training made it first
        if exc.error_code != "RESOURCE_ALREADY_EXISTS" or (made := client.get_experiment_by_name(name)) is None:
            raise
        return made.experiment_id


def _restore_experiment(experiment_id: str) -> str:
    return f"mlflow experiments restore --experiment-id {experiment_id}"


# During an outage, how long the next epoch waits for a tracking server's health check before its
# figures are kept again; MLflow's own tries would wait out HTTP_RETRY_SETTINGS (up to 30 s each)
OUTAGE_PROBE_S = 2.0


@dataclass
class TrackedRun:
    """One MLflow run, addressed by id; callable as the training loop's per-epoch callback."""

    client: MlflowClient
    run_id: str
    # figures and tags the store did not take during training (it restarted, say): sent with the next
    # ones, and by `send_kept` before anything else is logged after training
    kept_metrics: list[Metric] = field(default_factory=list, repr=False)
    kept_tags: list[RunTag] = field(default_factory=list, repr=False)

    @classmethod
    def start(cls, config: PipelineConfig, tags: dict[str, str], run_name: str | None = None) -> TrackedRun:
        client = MlflowClient()
        # MLflow's context tags (mlflow.user, mlflow.source.*: the UI's User and Source columns), as its
        # fluent start_run sets them; the client's create_run does not
        run = client.create_run(experiment_id(client), tags=resolve_tags({**this_process(), **tags}),
                                run_name=run_name)
        tracked = cls(client, run.info.run_id)
        params = [Param(k, str(v)) for k, v in flat_params(config).items()]
        with tracked.failed_on_error():  # a retry starts a new run: this one must not stay RUNNING
            for i in range(0, len(params), 100):
                client.log_batch(tracked.run_id, params=params[i:i + 100])
        return tracked

    def __call__(self, record: dict) -> None:
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, int(record["epoch"])) for k, v in record.items()
                   if k != "epoch" and isinstance(v, int | float)]
        self.send_or_keep(metrics=metrics, what=f"epoch {record['epoch']}'s figures")

    def send_or_keep(self, metrics: list[Metric] = (), tags: list[RunTag] = (), what: str = "the figures") -> None:
        """Log during training without letting the store stop it: a tracking server that restarts
        for a minute would otherwise cost the whole training. What the store refuses is kept, with
        its epoch and time, and sent with the next figures or by `send_kept`; a bug, or a refusal
        that no retry mends (the run deleted or ended, a value refused), still raises."""
        first_refusal = not (self.kept_metrics or self.kept_tags)
        self.kept_metrics.extend(metrics)
        self.kept_tags.extend(tags)
        if not first_refusal and server_silence(self.client.tracking_uri, OUTAGE_PROBE_S) is not None:
            return  # still away: one quick look, not MLflow's retries and timeouts once more each epoch
        try:
            # during an outage, one try: a server whose health check answers while its API fails (its
            # database down) cost each epoch MLflow's tries and back-off again
            with _environment("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None if first_refusal else "0"):
                self.send_kept()
        except Exception as exc:  # noqa: BLE001 - whatever the store raises, training goes on
            if is_programming_error(exc) or refused_for_good(exc):
                raise
            if first_refusal:  # `what` names the epoch: each outage is said, not only a process's first
                warnings.warn(f"the tracking store did not take {what} ({typed_first_line(exc)}); training "
                              "goes on, and they are sent once it answers", NamelangWarning, stacklevel=2)

    def send_kept(self) -> None:
        """Send what the store refused during training, in batches of MLflow's size; raises if it still
        refuses (kept for another try)."""
        while self.kept_metrics or self.kept_tags:
            # MLflow's limits per request: 100 tags, 1000 metrics, 1000 entities in all
            tags = self.kept_tags[:100]
            metrics = self.kept_metrics[:1000 - len(tags)]
            self.client.log_batch(self.run_id, metrics=metrics, tags=tags)
            del self.kept_metrics[:len(metrics)], self.kept_tags[:len(tags)]

    def set_tags(self, tags: dict[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=self.tags(tags))

    def log_metrics(self, metrics: dict[str, float], prefix: str = "") -> None:
        """Figures of the run as a whole, but those it holds already at the same value: a step the
        flow retries (evaluation) would add a second, later point of each to its history."""
        held = self.client.get_run(self.run_id).data.metrics
        fresh = {k: v for k, v in metrics.items() if held.get(prefix + k) != float(v)}
        if fresh:
            self.client.log_batch(self.run_id, metrics=self.metrics(fresh, prefix))

    @staticmethod
    def metrics(figures: dict[str, float], prefix: str = "") -> list[Metric]:
        """Figures of the run as a whole (step 0), stamped now."""
        now = int(time.time() * 1000)
        return [Metric(prefix + k, float(v), now, 0) for k, v in figures.items()]

    @staticmethod
    def tags(tags: dict[str, str]) -> list[RunTag]:
        return [RunTag(k, str(v)) for k, v in tags.items()]

    def log_dataset(self, names: pa.Table, source: str, provenance: dict) -> None:
        """The names table as the run's dataset input, with its content hash as digest.

        MLflow infers the schema from a pandas frame; a sample of rows gives the same columns and
        types without converting the whole table (half a second at a million names), and the
        profile states the whole table's size.
        """
        with warnings.catch_warnings():  # hints about local-path sources and integer nulls do not apply here
            warnings.simplefilter("ignore", UserWarning)
            sample = mlflow.data.from_pandas(names.slice(0, 1000).to_pandas(), source=source, name="names",
                                             digest=provenance["content_sha256"][:36])._to_mlflow_entity()
        from mlflow.entities import Dataset, DatasetInput, InputTag

        profile = {"num_rows": names.num_rows, "num_elements": names.num_rows * names.num_columns}
        dataset = Dataset(sample.name, sample.digest, sample.source_type, sample.source, sample.schema,
                          json.dumps(profile))

        tags = [InputTag("mlflow.data.context", "training"),
                InputTag("namelang.source_uri", str(provenance["ingest"]["source_uri"])[:500]),
                InputTag("namelang.content_sha256", provenance["content_sha256"])]
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset, tags)])
        self.client.log_dict(self.run_id, provenance, "data/provenance.json")

    def log_artifacts(self, paths: dict[str, Path], folder: str) -> None:
        for path in paths.values():
            self.client.log_artifact(self.run_id, str(path), folder)

    def log_model(self, bundle: Path, tags: dict[str, str] | None = None) -> ModelInfo:
        """Log the pyfunc model into this run; returns MLflow's ModelInfo."""
        from pipeline.pyfunc import INPUT_EXAMPLE, code_path, entry_point, signature

        with mlflow.start_run(run_id=self.run_id):
            info = mlflow.pyfunc.log_model(
                name="model", python_model=entry_point(), artifacts={"bundle": str(bundle)},
                code_paths=[code_path()], signature=signature(), input_example=INPUT_EXAMPLE,
                pip_requirements=_requirements(), tags=tags,
            )
        # leaving the fluent run marks it FINISHED; registration is still to come, and `finish`
        # decides the final status (FAILED if a later step breaks)
        self.client.update_run(self.run_id, status="RUNNING")
        return info

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)

    def fail(self, error: BaseException | None = None) -> None:
        """Mark the run FAILED, on the way out of an error, with the tag `namelang.failed_because` (the
        error's type and first line: a Ctrl-C or a cancelled flow run reads differently from a crash);
        if the store cannot be told (it may be what failed), warn and let the original error through
        rather than replace it."""
        try:
            if error is not None:
                self.set_tags({"namelang.failed_because": typed_first_line(error)[:500]})
            self.finish("FAILED")
        except Exception as exc:  # noqa: BLE001 - whatever the store raises, the first error matters more
            warnings.warn(f"could not mark MLflow run {self.run_id} as FAILED ({typed_first_line(exc)})",
                          NamelangWarning, stacklevel=2)

    @contextlib.contextmanager
    def failed_on_error(self) -> Iterator[None]:
        """Mark the run FAILED if the block raises, then let the error go on."""
        try:
            yield
        except BaseException as exc:
            self.fail(exc)
            raise

    def registered_version(self, name: str = MODEL_NAME) -> ModelVersion | None:
        """The registry version already made from this run, if any (a retried registration reuses it)."""
        versions = self.client.search_model_versions(f"name='{name}' and run_id='{self.run_id}'")
        return max(versions, key=lambda v: int(v.version)) if versions else None

    def close_abandoned(self, reason: str) -> bool:
        """Mark a run whose process died KILLED, saying why (the `namelang.closed_because` tag); False,
        and nothing done, if it is no longer RUNNING (it ended since it was found) or was deleted."""
        info = self.client.get_run(self.run_id).info
        if info.status != "RUNNING" or info.lifecycle_stage != "active":  # deleted since: it takes no tag
            return False
        self.set_tags({"namelang.closed_because": reason})
        self.finish("KILLED")
        return True

    def restore_command(self) -> str | None:
        """None while the run is there; once it is deleted (or its experiment), the command that brings it back."""
        info = self.client.get_run(self.run_id).info
        if info.lifecycle_stage != "deleted":
            return None
        if self.client.get_experiment(info.experiment_id).lifecycle_stage == "deleted":  # it took its runs along
            return _restore_experiment(info.experiment_id)
        return f"mlflow runs restore --run-id {self.run_id}"

    def url(self) -> str:
        run = self.client.get_run(self.run_id)
        return f"#/experiments/{run.info.experiment_id}/runs/{self.run_id}"


FLOW_RUN_TAG = "prefect.flow_run_id"  # set by flows.training on the runs it starts
# which attempt of that flow run (Prefect's run_count): a retried flow run runs again under the same id
FLOW_RUN_ATTEMPT_TAG = "namelang.flow_run_attempt"


@dataclass(frozen=True)
class UnfinishedRun:
    """A RUNNING MLflow run that a Prefect flow run started."""

    run: TrackedRun
    flow_run_id: str
    attempt: int | None  # the flow run's attempt that started it, if recorded
    process: str  # "pid N on HOST", for messages
    process_gone: bool  # its process is known to be dead (see `pipeline.liveness`)


def unfinished_runs_by_flow_run(client: MlflowClient | None = None) -> list[UnfinishedRun]:
    """The runs still RUNNING that a Prefect flow run started: a flow run whose process was killed
    leaves one, and its flow run may still say Running."""
    client = client or MlflowClient()
    experiment, found, page = experiment_id(client), [], None
    while True:
        runs = client.search_runs([experiment], f"attributes.status = 'RUNNING' and tags.`{FLOW_RUN_TAG}` != ''",
                                  max_results=1000, page_token=page)
        for run in runs:
            tags = run.data.tags
            attempt = tags.get(FLOW_RUN_ATTEMPT_TAG, "")
            found.append(UnfinishedRun(TrackedRun(client, run.info.run_id), tags[FLOW_RUN_TAG],
                                       int(attempt) if attempt.isdigit() else None,
                                       f"pid {tags.get(PID_TAG, '?')} on {tags.get(HOST_TAG, '?')}",
                                       process_gone(tags)))
        if not runs.token:
            return found
        page = runs.token


def _requirements() -> list[str]:
    """Pins an environment manager can install: without a local label such as torch's `+cpu`,
    which exists only on PyTorch's own index (the same release from PyPI runs the model)."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg).split('+')[0]}" for pkg in ("mlflow", "torch", "pandas", "pyarrow", "numpy")]

