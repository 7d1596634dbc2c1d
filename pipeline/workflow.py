"""The pipeline's stages as plain functions, in order, and `run_pipeline` that calls them all.

The Prefect flow wires these same functions as tasks (adding caching, retries, artifacts);
calling `run_pipeline` runs the identical work without Prefect (a notebook, a benchmark).
"""

from __future__ import annotations

import contextlib
import filecmp
import functools
import hashlib
import inspect
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import filelock

from pipeline import __version__, features, ingest, normalize
from pipeline import config as config_module
from pipeline.atomic import atomic_path, write_text_atomic
from pipeline.config import DataConfig, PipelineConfig, SplitConfig, flat_params
from pipeline.errors import NamelangError, NamelangWarning, TrackingError, is_programming_error, typed_first_line
from pipeline.evaluate import Evaluation, evaluate, model_card, write_reports
from pipeline.features import TEST, TRAIN, VALIDATION, TensorData
from pipeline.ingest import IngestResult, git_commit
from pipeline.normalize import NamesTable
from pipeline.pyfunc import save_bundle
from pipeline.registry import LEARNT_NAMES_ARTIFACT, PromotionDecision, describe, promote_if_better, register
from pipeline.tracking import MODEL_NAME, TrackedRun, artifact_progress_bars, configure
from pipeline.train import TrainResult, checkpoint_path, cpu_threads, resolve_device, run_key, train_model


@functools.cache
def code_version(*modules) -> str:
    """Version of the code behind a stage: package version plus a hash of the modules' source, and of
    `pipeline.config`'s, whose constants (the alphabet, the out-of-vocabulary symbol) shape every stage's
    output without being a setting that a cache key would see."""
    h = hashlib.sha256(__version__.encode())
    for module in (config_module, *modules):
        h.update(inspect.getsource(module).encode())
    return h.hexdigest()[:16]


def fetch_source(config: DataConfig) -> Path:
    return ingest.resolve_source(config)


def ingest_source(config: DataConfig, local_source: Path) -> IngestResult:
    """Read the already-fetched source (the URL, if any, stays the recorded origin)."""
    return ingest.ingest(config, local_source)


def normalize_names(raw: IngestResult, config: DataConfig) -> NamesTable:
    return normalize.normalize(raw, config.max_name_chars)


def write_table(table: NamesTable, config: DataConfig) -> dict[str, Path]:
    """Write the tables and reports, unless the files already hold this very table.

    The whole provenance is compared, not only the names' content hash: a changed source whose
    accepted rows stay the same (a line rejected more, a file touched) still changes the file
    hashes recorded, the rejected rows and the quality report, and so rewrites all four files.
    """
    paths = normalize.output_paths(config.processed_dir)
    if all(p.exists() for p in paths.values()):
        try:
            if normalize.read_provenance(paths["names"]) == table.provenance:
                return paths
        except (NamelangError, OSError, ValueError):
            pass  # unreadable or foreign: rewrite it
    return normalize.write_names_table(table, config.processed_dir)


def build_tensors(table: NamesTable, split: SplitConfig) -> TensorData:
    absent = ([f"{language}, every line rejected (see rejected.parquet)"
               for language in table.quality.get("languages_all_rejected", [])]
              + [f"{path}, an empty file" for path in table.quality.get("empty_files", [])])
    return features.build_tensors(table.names, table.sha256, split, absent=tuple(absent))


def write_tensors(data: TensorData, processed_dir: Path) -> Path:
    return features.save_tensors(data, Path(processed_dir) / features.TENSORS_FILE)


def publish_tensors(cached_file: Path, processed_dir: Path) -> Path:
    """Make `processed_dir/tensors.pt` a copy of the cached tensors file the flow trained on.

    The flow builds tensors into its cache only; this one copy (skipped when the bytes already
    match) serves a first run, a cached run, a new folder, or a folder holding another split's.
    """
    target = Path(processed_dir) / features.TENSORS_FILE
    if not (target.exists() and filecmp.cmp(cached_file, target, shallow=False)):
        with atomic_path(target) as tmp:
            shutil.copyfile(cached_file, tmp)
    return target


def start_run(config: PipelineConfig, table: NamesTable, tags: dict[str, str] | None = None,
              run_name: str | None = None) -> TrackedRun:
    """A new MLflow run for this config and table; `run_name`: MLflow makes one up when None."""
    configure()
    tags = {"namelang.data_sha256": table.sha256, "namelang.git_commit": git_commit() or "",
            "namelang.version": __version__, **(tags or {})}
    run = TrackedRun.start(as_recorded(config), tags, run_name)
    with run.failed_on_error():  # a retry starts a new run: this one must not stay RUNNING
        run.log_dataset(table.names, str(config.data.processed_dir / normalize.NAMES_FILE), table.provenance)
    return run


def train(data: TensorData, config: PipelineConfig, run: TrackedRun | None = None, resume: bool = False,
          on_epoch: Callable[[dict], None] | None = None,
          on_resume: Callable[[int], None] | None = None) -> TrainResult:
    """Train; every epoch's metrics go to the MLflow run (curves) and to `on_epoch` (e.g. a log);
    `on_resume(epoch)` hears first when a checkpoint is resumed."""
    def each_epoch(record: dict) -> None:
        for callback in (run, on_epoch):
            if callback is not None:
                callback(record)

    result = train_model(data, config.model, config.train, on_epoch=each_epoch, resume=resume, on_resume=on_resume)
    if run is not None:  # kept, not lost, if the store is away now: evaluation sends them
        summary = {"best_epoch": result.best_epoch, "best_val_macro_f1": result.best_val_macro_f1,
                   "train_seconds": result.train_seconds}
        tags = {"namelang.device": result.device, "namelang.tensors_sha256": data.sha256,
                "namelang.stopped_by": result.stopped_by}
        if result.resumed_from_epoch is not None:
            tags["namelang.resumed_from_epoch"] = str(result.resumed_from_epoch)
        run.send_or_keep(metrics=run.metrics(summary), tags=run.tags(tags), what="the training's summary")
    return result


def model_dir(config: PipelineConfig, data: TensorData) -> Path:
    """Where this data and these settings' model is saved: a rerun replaces its own folder."""
    return models_root(config.data) / run_key(data, config.model, config.train)


@contextlib.contextmanager
def training_slot(config: PipelineConfig, data: TensorData,
                  on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """One training at a time of the same data with the same settings (those the run key leaves out,
    such as threads or a time budget, may differ): they share a checkpoint and a model folder, so the
    first to end deleted the checkpoint another kept for `--resume`, and one's weights could go into
    the other's upload. A second one waits, said through `on_wait` (a warning by default). Both the
    model folder and the checkpoint are locked (in that order): either may be shared on its own."""
    checkpoint = checkpoint_path(data, config.model, config.train)
    shared = [model_dir(config, data), *([checkpoint] if checkpoint is not None else [])]
    with contextlib.ExitStack() as held:
        for path in shared:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = filelock.FileLock(f"{path}.lock")
            try:
                lock.acquire(timeout=0)
            except filelock.Timeout:
                message = (f"another training of the same data with the same settings is running (they share "
                           f"{path}): waiting for it to end")
                if on_wait is None:
                    warnings.warn(message, NamelangWarning, stacklevel=3)
                else:
                    on_wait(message)
                lock.acquire()
            held.callback(lock.release)
        yield


def models_root(data: DataConfig) -> Path:
    """`data.models_dir`, or by default `models/` beside `processed_dir`."""
    return Path(data.models_dir or Path(data.processed_dir).parent / "models")


def as_recorded(config: PipelineConfig) -> PipelineConfig:
    """The settings as the run's params and the model card record them: the models folder used,
    not `None` for its default."""
    return config.model_copy(update={"data": config.data.model_copy(update={"models_dir": models_root(config.data)})})


def evaluate_model(result: TrainResult, data: TensorData, table: NamesTable, config: PipelineConfig,
                   run: TrackedRun | None = None) -> tuple[Evaluation, dict[str, Path]]:
    ev = evaluate(result.model, data, TEST)
    card = model_card(ev, provenance=table.provenance, split_config=data.split_config,
                      config=flat_params(as_recorded(config)), tensors_sha256=data.sha256,
                      train_summary={"device": result.device, "epochs_run": len(result.history),
                                     "best_epoch": result.best_epoch,
                                     "best_val_macro_f1": round(result.best_val_macro_f1, 4),  # train-only counts
                                     "ngram_models_counted": result.ngram_models_counted,
                                     "train_seconds": round(result.train_seconds, 1),
                                     "refit_on_train_and_validation_epochs": result.refit_epochs})
    folder = model_dir(config, data)
    reports = folder / "reports"
    paths = write_reports(ev, reports, card)
    if run is None:
        return ev, paths
    # the report of the table trained on, not what the processed folder holds now; written before the store is
    # asked, so that only the store's failures read as such below
    quality = write_quality_reports(table, reports) if table.quality else {}
    learnt = {"learnt_names": write_learnt_names(data, reports)}
    with _store_failure("could not send the evaluation to MLflow", "the trained model and its reports are", folder):
        run.send_kept()  # what the store did not take during training
        run.log_metrics(ev.metrics, prefix="test_")
        run.log_artifacts(paths, "evaluation")
        run.log_artifacts(quality, "data")
        run.log_artifacts(learnt, "data")
    return ev, paths


@contextlib.contextmanager
def _store_failure(problem: str, kept: str, where: Path) -> Iterator[None]:
    """The tracking store failing in the block: a TrackingError (the flow retries it) that says what is
    kept on disk and where. Our own errors and bugs (a TypeError, a KeyError) go on as they are."""
    try:
        yield
    except NamelangError:
        raise
    except Exception as exc:
        if is_programming_error(exc):
            raise
        raise TrackingError(f"{problem} ({typed_first_line(exc)}); {kept} kept on disk", where) from exc


def write_quality_reports(table: NamesTable, folder: Path) -> dict[str, Path]:
    """The quality report of the table the model trained on, beside its other reports: read back from
    the processed folder, it was another table's once an ingest ran there during training."""
    names = normalize.output_paths(folder)
    return {key: write_text_atomic(names[key], text) for key, text in normalize.quality_texts(table.quality).items()}


def write_learnt_names(data: TensorData, folder: Path) -> Path:
    """The distinct names the model learnt from (train and validation: early stopping and the n-gram
    models use the latter): as champion, it is not judged on these names of a later run's test split."""
    names = sorted({data.names[i] for i in data.indices(TRAIN, VALIDATION).tolist()})
    path = folder / Path(LEARNT_NAMES_ARTIFACT).name
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    return path


@dataclass(frozen=True)
class Registration:
    run_id: str
    model_uri: str
    version: str
    decision: PromotionDecision
    bundle: str

    def as_dict(self) -> dict:
        return {**asdict(self), "decision": self.decision.as_dict()}


def save_model(result: TrainResult, data: TensorData, config: PipelineConfig) -> Path:
    """The trained weights on disk first: whatever happens to the tracking store, they are kept."""
    return save_bundle(model_dir(config, data) / "model.pt", result.model, data.label_names,
                       config.data.max_name_chars)


def version_description(ev: Evaluation, data: TensorData, run: TrackedRun) -> str:
    m = ev.metrics
    return (f"Test accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}, top-3 accuracy "
            f"{m['top3_accuracy']:.4f} on {len(ev.y_true)} held-out (name, language) rows "
            f"(split {data.split_config['method']}, seed {data.split_config['seed']}) of names table "
            f"{data.table_sha256[:12]}. MLflow run {run.run_id}: params, curves, model card.")


def register_model(bundle: Path, ev: Evaluation, data: TensorData, run: TrackedRun) -> Registration:
    """Log the pyfunc model, register it, and pass it through the promotion gate.

    Safe to retry: a version already registered from this run is reused, not registered again. A
    store failure is a TrackingError, which the flow retries; a bug is raised as it is, not retried.
    """
    with _store_failure("could not log or register the model in MLflow", "the trained model is", bundle):
        restore = run.restore_command()
        if restore is not None:  # deleted in the UI since training: no retry brings it back
            raise NamelangError(f"MLflow run {run.run_id} was deleted, so the model cannot be logged to it "
                                f"(`{restore}` brings it back); the trained model is kept on disk", bundle)
        version = run.registered_version()
        if version is None:
            info = run.log_model(bundle, tags={"namelang.tensors_sha256": data.sha256})
            version = register(info.model_uri, {"namelang.data_sha256": data.table_sha256,
                                                "namelang.run_id": run.run_id,
                                                "namelang.test_macro_f1": f"{ev.metrics['macro_f1']:.6f}"})
        describe(str(version.version), version_description(ev, data, run))
        test_languages = [ev.label_names[i] for i in ev.y_true]
        predicted = [ev.label_names[i] for i in ev.y_pred]
        spellings = None if data.spellings is None else [data.spellings[i] for i in data.indices(TEST).tolist()]
        decision = promote_if_better(str(version.version), ev.names, test_languages, predicted,
                                     languages=ev.label_names, spellings=spellings)
        # the alias it got then: it may move later (the registry holds the current one)
        run.set_tags({"namelang.model_version": str(version.version),
                      "namelang.alias_at_registration": decision.alias})
    return Registration(run.run_id, version.source, str(version.version), decision, str(bundle))


def discard_checkpoint(result: TrainResult, config: PipelineConfig) -> None:
    """Once the model is registered, its checkpoint is dead weight (about 70 MB a run, one per data
    version and setting): retraining on a schedule would otherwise fill the disk. A run that failed
    before this point, or one a time budget stopped, keeps it for `--resume`."""
    if result.checkpoint is not None and not (config.train.keep_checkpoint or result.stopped_by_budget):
        result.checkpoint.unlink(missing_ok=True)


def summary(result: TrainResult, ev: Evaluation, registration: Registration | None) -> dict:
    out = {"model": MODEL_NAME, "test_accuracy": round(ev.metrics["accuracy"], 4),
           "test_macro_f1": round(ev.metrics["macro_f1"], 4), "test_top3_accuracy":
           round(ev.metrics["top3_accuracy"], 4), "train_seconds": round(result.train_seconds, 1),
           "device": result.device, "stopped_by": result.stopped_by,
           "resumed_from_epoch": result.resumed_from_epoch}
    if result.stopped_by_budget and result.checkpoint is not None:  # kept by discard_checkpoint: `--resume` trains on
        out["checkpoint"] = str(result.checkpoint)
    if registration is not None:
        out.update(version=registration.version, alias=registration.decision.alias,
                   run_id=registration.run_id, champion_macro_f1=registration.decision.champion_macro_f1,
                   gate=registration.decision.as_dict())
    return out


def run_pipeline(config: PipelineConfig, tags: dict[str, str] | None = None) -> dict:
    """Every stage, in order, without Prefect: ingest -> normalize -> tensors -> train -> evaluate -> register."""
    resolve_device(config.train.device)  # a missing GPU fails now, not after the data steps and a new MLflow run
    started = time.perf_counter()
    local = fetch_source(config.data)
    table = normalize_names(ingest_source(config.data, local), config.data)
    write_table(table, config.data)
    data = build_tensors(table, config.split)
    write_tensors(data, config.data.processed_dir)
    data_steps_s = time.perf_counter() - started
    with training_slot(config, data):
        run = start_run(config, table, tags)
        # no progress bars asked for: none of MLflow's either (the gate downloads the champion to score it)
        with (run.failed_on_error(), artifact_progress_bars(config.train.progress),
              cpu_threads(config.train.num_threads)):
            result = train(data, config, run)
            bundle = save_model(result, data, config)  # before the store is needed again: its failure loses nothing
            ev, _ = evaluate_model(result, data, table, config, run)
            registration = register_model(bundle, ev, data, run)
        run.finish()
        discard_checkpoint(result, config)
    return {**summary(result, ev, registration), "data_steps_s": round(data_steps_s, 3)}

