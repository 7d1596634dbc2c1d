"""Prefect flow `train-name-classifier`: ingest -> normalize -> tensors -> train -> evaluate -> register.

Orchestration only: each task calls one function of `pipeline.workflow`. Prefect adds caching
of the data steps (keyed on content hashes and code version), retries with backoff on the
download and the tracking store, artifacts in the UI, and the flow-run id on the MLflow run (by
which a later training closes the MLflow runs of flow runs that died without closing them).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import uuid
import warnings
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_client, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.context import TaskRunContext
from prefect.filesystems import LocalFileSystem
from prefect.runtime import flow_run
from prefect.states import Crashed
from prefect.tasks import exponential_backoff

from flows.retries import RETRY_TRANSIENT
from flows.run_logs import credentials_hidden
from flows.unresponsive import RUN_TAG
from pipeline import features, ingest, normalize, store, workflow
from pipeline.config import DataConfig, PipelineConfig, SplitConfig
from pipeline.errors import NamelangWarning, TransientError, hide_credentials
from pipeline.evaluate import Evaluation
from pipeline.features import TensorData
from pipeline.normalize import NamesTable
from pipeline.registry import PromotionDecision, model_uri
from pipeline.store import Stored
from pipeline.tracking import (
    FLOW_RUN_ATTEMPT_TAG,
    FLOW_RUN_TAG,
    MODEL_NAME,
    TrackedRun,
    UnfinishedRun,
    artifact_progress_bars,
    tracking_uri,
    unfinished_runs_by_flow_run,
    without_credentials,
)
from pipeline.train import TrainResult, checkpoint_path, cpu_threads, resolve_device

DEFAULT_CONFIG = PipelineConfig()
TAGS = (RUN_TAG, "training")  # of its runs, deployed (flows.serve, prefect.yaml) or from the CLI
FLOW_RUNS_PER_READ = 200  # the most a Prefect server returns for one read


@dataclass
class Reached:
    """How far a training in this process got: what the words an interrupt ends it with may promise."""

    checkpoint: Path | None = None  # its per-epoch checkpoint, once the data steps have named it
    version: str | None = None      # the model version it registered, once it has
    alias: str | None = None        # the alias that version got then


_reached: ContextVar[Reached | None] = ContextVar("namelang_training_reached", default=None)


@contextlib.contextmanager
def reporting_to(progress: Reached) -> Iterator[Reached]:
    """Trainings started inside the block record in `progress` how far they get (`namelang train` tells
    an interrupted run's user from it whether a checkpoint or a registered version is left)."""
    token = _reached.set(progress)
    try:
        yield progress
    finally:
        _reached.reset(token)


def _reach(**milestones: Any) -> None:
    if (progress := _reached.get()) is not None:
        for name, value in milestones.items():
            setattr(progress, name, value)


def _key(*parts: Any) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32]


def _location(source: str) -> str:
    """Where the names come from, as provenance records it: the URL, or the absolute path (the same
    relative `names` in two working directories is two folders)."""
    return source if ingest.is_url(source) else str(Path(source).expanduser().resolve())


def _ingest_key(ctx: TaskRunContext, params: dict) -> str:
    return "ingest-" + _ingest_identity(params["config"], params["fingerprint"])


def _ingest_identity(config: DataConfig, fingerprint: str) -> str:
    """The ingest step's cache key, and its raw lines' file name: the source's bytes, and where they
    are, symlinks resolved (provenance records it; the same name may point elsewhere on the next run)."""
    return _key(fingerprint, _location(config.source), workflow.code_version(ingest, store), config.max_member_bytes)


def _normalize_key(ctx: TaskRunContext, params: dict) -> str:
    cfg: DataConfig = params["config"]
    return "normalize-" + _key(params["fingerprint"], _location(cfg.source),
                               workflow.code_version(ingest, normalize, store), cfg.max_name_chars)


def _tensors_key(ctx: TaskRunContext, params: dict) -> str:
    split: SplitConfig = params["split"]
    return "tensors-" + _key(params["table"].sha256, split.model_dump_json(), workflow.code_version(features, store))


def _prepared_key(ctx: TaskRunContext, params: dict) -> str:
    """Everything the three data steps' keys depend on (the table hash follows from these)."""
    cfg: PipelineConfig = params["config"]
    return "prepared-" + _key(params["fingerprint"], _location(cfg.data.source), cfg.data.max_member_bytes,
                              cfg.data.max_name_chars, cfg.split.model_dump_json(),
                              workflow.code_version(ingest, normalize, features, store))


@task(name="fetch-source", cache_policy=NO_CACHE, **RETRY_TRANSIENT)
def fetch_source(config: DataConfig) -> Path:
    return workflow.fetch_source(config)


@task(name="ingest", cache_key_fn=_ingest_key, persist_result=True)
def ingest_source(config: DataConfig, local_source: Path, fingerprint: str) -> Stored:
    raw = workflow.ingest_source(config, local_source)
    # the cache key is the fingerprint taken before reading: rows read from files changed since then
    # would be cached under it, and served for the old files for good (the bytes read are checked,
    # not the files read again)
    if raw.fingerprint != fingerprint:
        raise TransientError("the source changed while it was being read; run again once it is complete",
                             local_source)
    return store.store_ingest(raw, config.cache_dir, _ingest_identity(config, fingerprint))


@task(name="normalize", cache_key_fn=_normalize_key, persist_result=True)
def normalize_names(raw: Stored, config: DataConfig, fingerprint: str) -> Stored:
    return store.store_table(workflow.normalize_names(store.load_ingest(raw), config), config.cache_dir)


def _report_data_quality(table: NamesTable) -> None:
    create_markdown_artifact(key="data-quality", markdown=normalize.quality_markdown(table.quality),
                             description=f"Data-quality report of names table {table.sha256[:12]}")


@task(name="build-tensors", cache_key_fn=_tensors_key, persist_result=True)
def build_tensors(table: Stored, split: SplitConfig, cache_dir: Path) -> Stored:
    return store.store_tensors(workflow.build_tensors(store.load_table(table), split), cache_dir)


@task(name="start-mlflow-run", cache_policy=NO_CACHE, **RETRY_TRANSIENT)
@credentials_hidden
def start_run(config: PipelineConfig, table: NamesTable) -> TrackedRun:
    tags = {FLOW_RUN_TAG: str(flow_run.id or ""), "prefect.flow_run_name": str(flow_run.name or ""),
            FLOW_RUN_ATTEMPT_TAG: str(flow_run.run_count)}
    return workflow.start_run(config, table, tags, run_name=flow_run.name or None)  # one name in both UIs


@task(name="close-abandoned-mlflow-runs", cache_policy=NO_CACHE, **RETRY_TRANSIENT)
@credentials_hidden
def close_abandoned_runs() -> dict[str, str]:
    """MLflow runs still RUNNING whose process died are marked KILLED: those whose flow run has ended
    (flows.unresponsive marks such a flow run Crashed on a server), or whose process is known to be
    gone (`pipeline.liveness`: a `namelang train` killed hard under a temporary API, which nothing
    watched). If that flow run still says Running, on the attempt that started the MLflow run, it
    is marked Crashed first; a flow run retried since (the same id, a later attempt), or this very
    one, is left to run. Only flow runs this Prefect API knows are judged."""
    unfinished = []
    for found in unfinished_runs_by_flow_run():
        try:
            unfinished.append((found, uuid.UUID(found.flow_run_id)))
        except ValueError:  # a tag someone else wrote
            continue
    flow_runs = _flow_runs({flow_run_id for _, flow_run_id in unfinished})
    closed = {}
    for found, flow_run_id in unfinished:
        reason = _why_abandoned(found, flow_runs.get(flow_run_id))
        if reason is not None and found.run.close_abandoned(reason):
            closed[found.run.run_id] = reason
            get_run_logger().warning("MLflow run %s marked KILLED: %s", found.run.run_id, reason)
    return closed


def _why_abandoned(found: UnfinishedRun, flow: FlowRun | None) -> str | None:
    """Why the MLflow run `found` is abandoned, or None if it may still be written to (or nothing
    can be known). Marks its flow run Crashed when that flow run still says Running in vain."""
    if flow is None or flow.state is None:  # unknown to this API: another server's
        return None
    if flow.state.is_final():
        return f"its Prefect flow run {flow.id} ended {flow.state.name} without closing it"
    if not found.process_gone:
        return None
    if found.attempt is not None and flow.run_count > found.attempt:
        return (f"its process ({found.process}) is gone; its Prefect flow run {flow.id} has been retried since "
                f"(attempt {flow.run_count})")
    still_says_running = flow.state.is_running() and str(flow.id) != flow_run.id and found.attempt == flow.run_count
    if still_says_running and _crash(flow.id, f"its process ({found.process}) is gone: found by a later training"):
        return f"its process ({found.process}) is gone; its Prefect flow run {flow.id} was marked Crashed"
    return None


def _flow_runs(ids: set[uuid.UUID]) -> dict[uuid.UUID, FlowRun]:
    """Each flow run among `ids` that this Prefect API knows."""
    ids_in_order, found = sorted(ids), {}
    if not ids:  # the usual case: no client to open
        return found
    with get_client(sync_client=True) as client:
        for i in range(0, len(ids_in_order), FLOW_RUNS_PER_READ):
            batch = ids_in_order[i:i + FLOW_RUNS_PER_READ]
            for run in client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=batch)),
                                             limit=len(batch)):
                found[run.id] = run
    return found


def _crash(flow_run_id: uuid.UUID, message: str) -> bool:
    """Mark a flow run whose process died Crashed, as Prefect does when it sees one crash (not forced:
    the server refuses it if the run has just ended); True if it is Crashed now."""
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run_id, Crashed(message=message))
        return client.read_flow_run(flow_run_id).state.is_crashed()


def _close_abandoned_runs() -> None:
    """Housekeeping: if it fails (after its retries), the training goes on, with a warning."""
    state = close_abandoned_runs(return_state=True)
    if state.is_failed():
        get_run_logger().warning("could not close the MLflow runs of ended flow runs: %s", state.message)


@task(name="train", cache_policy=NO_CACHE)
@credentials_hidden
def train(data: TensorData, config: PipelineConfig, run: TrackedRun, resume: bool) -> TrainResult:
    logger = get_run_logger()

    def log_epoch(r: dict) -> None:
        # both validation macro-F1s: early stopping keeps the epoch of the network's best, not the whole model's
        logger.info("epoch %d/%d: train loss %.4f, acc %.4f; validation acc %.4f, macro-F1 %.4f (network alone, "
                    "which early stopping judges: %.4f) (%.1f s)", r["epoch"], config.train.epochs, r["train_loss"],
                    r["train_acc"], _figure(r["val_acc"]), _figure(r["val_macro_f1"]),
                    _figure(r["val_network_macro_f1"]), r["epoch_seconds"])

    def log_resume(epoch: int) -> None:
        logger.info("resuming from the checkpoint written after epoch %d (its epochs' figures follow)", epoch)

    result = workflow.train(data, config, run, resume, on_epoch=log_epoch, on_resume=log_resume)
    kept = result.history[result.best_epoch - 1] if result.best_epoch else {}
    logger.info("training ended after epoch %d (stopped by %s); kept epoch %d, the network's best validation "
                "macro-F1 %.4f (whole model %.4f), %.1f s", len(result.history), result.stopped_by, result.best_epoch,
                _figure(kept.get("val_network_macro_f1")), result.best_val_macro_f1, result.train_seconds)
    return result


def _figure(value: float | None) -> float:
    """A validation figure for the log: nan where there is none (no validation split), 0.0 as 0.0."""
    return float("nan") if value is None else value


@task(name="evaluate", cache_policy=NO_CACHE, **RETRY_TRANSIENT)  # it sends what the store missed in training
@credentials_hidden
def evaluate(result: TrainResult, data: TensorData, table: NamesTable, config: PipelineConfig,
             run: TrackedRun) -> Evaluation:
    ev, _ = workflow.evaluate_model(result, data, table, config, run)
    rows = [{"metric": k, "value": round(v, 4)} for k, v in ev.metrics.items()]
    create_table_artifact(key="metrics", table=rows, description="Test-split metrics of the trained model")
    return ev


@task(name="register", cache_policy=NO_CACHE, **RETRY_TRANSIENT)
@credentials_hidden
def register(bundle: Path, ev: Evaluation, data: TensorData, run: TrackedRun) -> workflow.Registration:
    registration = workflow.register_model(bundle, ev, data, run)
    _reach(version=registration.version, alias=registration.decision.alias)  # before the task run ends
    return registration


def result_storage(path: Path) -> LocalFileSystem:
    """A saved LocalFileSystem block for `path` (Prefect keeps result storage server-side).

    The saved instance, not its slug, goes to the tasks: a slug is looked up again by every task.
    """
    basepath = str(path.resolve())
    block = LocalFileSystem(basepath=basepath)
    block.save("namelang-cache-" + _key(basepath)[:12], overwrite=True)
    return block


def mlflow_ui_base() -> str:
    """Where the links in the run's artifacts point: a tracking server's own UI, else a local `mlflow ui`."""
    uri = tracking_uri()
    return without_credentials(uri).rstrip("/") if uri.startswith("http") else "http://127.0.0.1:5000"


def _report_registration(reg: workflow.Registration, run: TrackedRun) -> None:
    base = mlflow_ui_base()
    create_link_artifact(key="mlflow-run", link=f"{base}/{run.url()}", link_text=f"MLflow run {reg.run_id}",
                         description="The MLflow run: params, curves, dataset, reports")
    create_link_artifact(key="model-version", link=f"{base}/#/models/{MODEL_NAME}/versions/{reg.version}",
                         link_text=f"{MODEL_NAME} version {reg.version}")
    create_markdown_artifact(key="promotion-decision", markdown=promotion_markdown(reg.decision))


def promotion_markdown(d: PromotionDecision) -> str:
    """The `promotion-decision` artifact: the gate's one-line reason, then both scores."""
    champion = ("none" if d.previous_champion is None
                else f"version {d.previous_champion}, not compared" if d.champion_macro_f1 is None
                else f"{d.champion_macro_f1:.4f} (version {d.previous_champion})")
    return (f"# Promotion decision\n\nVersion **{d.version}** of `{MODEL_NAME}` got the alias **{d.alias}**: "
            f"{d.reason()}.\n\n"
            f"| | macro-F1 |\n|---|---:|\n| new version | {d.new_macro_f1:.4f} |\n| champion before | {champion} |\n")


@dataclass
class PreparedData:
    table: NamesTable
    data: TensorData
    steps: dict[str, str]  # step -> "ran" | "cached"
    seconds: float


@dataclass(frozen=True)
class PreparedRefs:
    table: Stored
    tensors: Stored
    steps: dict[str, str]

    def exists(self) -> bool:
        return self.table.exists() and self.tensors.exists()


@task(name="prepare-data", cache_key_fn=_prepared_key, persist_result=True)
def prepare_steps(config: PipelineConfig, local_source: Path, fingerprint: str,
                  storage: LocalFileSystem) -> PreparedRefs:
    """Ingest -> normalize -> tensors as cached child tasks, under one cache entry for all three.

    A rerun on unchanged data and settings is one cache lookup instead of three (Prefect's fixed
    cost per task run is about as large as the data steps' own work at the size of the shared
    data); a change in the split alone still reuses the cached ingest and normalize children.
    """
    cached = {t.name: t.with_options(result_storage=storage) for t in (ingest_source, normalize_names,
                                                                       build_tensors)}
    ingested = _run(cached["ingest"], config.data, local_source, fingerprint)
    normalized = _run(cached["normalize"], ingested.result(), config.data, fingerprint)
    tensors = _run(cached["build-tensors"], normalized.result(), config.split, config.data.cache_dir)
    steps = {"ingest": ingested, "normalize": normalized, "build-tensors": tensors}
    return PreparedRefs(normalized.result(), tensors.result(),
                        {name: _ran_or_cached(state) for name, state in steps.items()})


def prepare_data(config: PipelineConfig) -> PreparedData:
    """The data steps inside the calling flow: fetch, ingest, normalize, write the table, tensors.

    Fetching is a task with retries only for a URL; a local path needs no retry. Writing the
    table is a plain call: it is idempotent (skipped when the Parquet file already holds this
    table's provenance), so a table deleted or moved by hand is written again even on a cached run.
    """
    storage = result_storage(Path(config.data.cache_dir))
    prepare = prepare_steps.with_options(result_storage=storage)
    retries = config.data.download_retries
    fetch = fetch_source.with_options(retries=retries, retry_delay_seconds=exponential_backoff(
        backoff_factor=config.data.retry_backoff_s)(retries) if retries else 0)
    started = time.perf_counter()
    local = fetch(config.data) if ingest.is_url(config.data.source) else workflow.fetch_source(config.data)
    fingerprint = ingest.source_fingerprint(Path(local))
    state = _run(prepare, config, local, fingerprint, storage)
    refs: PreparedRefs = state.result()
    table, data = store.load_table(refs.table), store.load_tensors(refs.tensors)
    workflow.write_table(table, config.data)
    workflow.publish_tensors(Path(refs.tensors.paths["tensors"]), config.data.processed_dir)
    steps = {name: "cached" for name in refs.steps} if _ran_or_cached(state) == "cached" else refs.steps
    if steps["build-tensors"] == "cached" and (unmeasured := features.languages_not_held_out(data)):
        warnings.warn(unmeasured, NamelangWarning, stacklevel=2)  # as build_tensors said it when it ran
    return PreparedData(table, data, steps, time.perf_counter() - started)


def _ran_or_cached(state) -> str:
    return "cached" if state.name == "Cached" else "ran"


def _run(step, *args):
    """State of a cached step whose result references files; if they were deleted since, the step
    runs again for real instead of trusting the cache."""
    state = step(*args, return_state=True)
    if not state.result().exists():
        state = step.with_options(refresh_cache=True)(*args, return_state=True)
    return state


@flow(name="train-name-classifier", log_prints=True)
def train_name_classifier(config: PipelineConfig = DEFAULT_CONFIG, resume: bool = False) -> dict:
    """Train, evaluate and register a surname-language classifier; returns a summary.

    Args:
        config: Every setting (data, split, model, training). Given in a run's parameters, it replaces the
            deployment's whole configuration: settings left out take the code's defaults, not the deployment's.
        resume: Continue an interrupted training of the same data and settings from its last checkpoint.
    """
    # a deployment's logs, not a terminal: MLflow's download bars off too, for this run only
    with artifact_progress_bars(config.train.progress), cpu_threads(config.train.num_threads):
        return _train_name_classifier(config, resume)


def _train_name_classifier(config: PipelineConfig, resume: bool) -> dict:
    resolve_device(config.train.device)  # a missing GPU fails now, not after the data steps and a new MLflow run
    prepared = prepare_data(config)
    table, data = prepared.table, prepared.data
    get_run_logger().info("data steps: %s (%.2f s)", prepared.steps, prepared.seconds)
    _report_data_quality(table)  # every run, cached or not, shows the report of the table it trained on
    _reach(checkpoint=checkpoint_path(data, config.model, config.train))
    with workflow.training_slot(config, data, on_wait=get_run_logger().warning):
        run = start_run(config, table)
        with run.failed_on_error():
            _close_abandoned_runs()
            result = train(data, config, run, resume)
            bundle = workflow.save_model(result, data, config)  # first: kept whatever the store does next
            ev = evaluate(result, data, table, config, run)
            registration = register(bundle, ev, data, run)
        run.finish()
        workflow.discard_checkpoint(result, config)
    _report_registration(registration, run)
    out = workflow.summary(result, ev, registration)
    out.update(data_steps=prepared.steps, data_steps_s=round(prepared.seconds, 3), table_sha256=table.sha256,
               model_uri=model_uri(registration.decision.alias), mlflow_tracking_uri=hide_credentials(tracking_uri()),
               flow_run_id=str(flow_run.id or ""))
    return out


if __name__ == "__main__":  # pragma: no cover - run in a subprocess by the tests
    # `python -m flows.training [OPTIONS]` is `namelang train [OPTIONS]`: called bare, the flow ignored its
    # options, started Prefect's temporary API in the terminal's process group with Prefect's 20 s to start
    # (too short on a busy 2-core machine) and printed a traceback for a bad input; the command does neither
    import sys

    from flows.cli import main

    sys.argv[1:1] = ["train"]
    main()
