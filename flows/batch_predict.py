"""Prefect flow `batch-predict`: the champion (or any model URI) over a file of names."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from mlflow import MlflowClient
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from flows.retries import worth_retrying
from pipeline.batch import check_output_path, predict_file
from pipeline.config import BATCH_CHUNK_NAMES
from pipeline.errors import NamelangError
from pipeline.registry import (
    get_alias_version,
    load_model,
    missing_model_problem,
    model_uri,
    needs_tracking_store,
    parse_model_uri,
)
from pipeline.tracking import configure

TRANSIENT_RETRY = {"retries": 2, "retry_delay_seconds": [2, 8], "retry_condition_fn": worth_retrying}


@task(name="resolve-model", cache_policy=NO_CACHE, **TRANSIENT_RETRY)
def resolve_version(uri: str) -> tuple[str, str]:
    """(URI to load, version to record): an alias resolves to its version now, which is both recorded
    beside every prediction and the one loaded (an alias moved meanwhile does not change the model
    mid-file); a version asked for by number, or as `latest`, is recorded as its number; other URIs stay
    as they are."""
    if not needs_tracking_store(uri):
        return uri, uri
    configure(create=False)
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
        numbers = [int(v.version) for v in MlflowClient().search_model_versions(f"name='{ref.name}'")]
        if not numbers:
            raise NamelangError(missing_model_problem(ref) or f"model {ref.name!r} has no versions")
        return f"models:/{ref.name}/{max(numbers)}", str(max(numbers))
    return uri, uri


@task(name="predict-file", cache_policy=NO_CACHE)
def predict(uri: str, version: str, input_path: Path, output_path: Path, column: str, chunk_size: int) -> dict:
    logger = get_run_logger()

    def progress(rows: int, errors: int) -> None:
        logger.info("predicted %s names so far (%s could not be classified)", f"{rows:,}", f"{errors:,}")

    model = load_model(uri, download_bars=False)  # logs, not a terminal
    return predict_file(model, input_path, output_path, version, column, chunk_size, on_chunk=progress)


@flow(name="batch-predict", log_prints=True)
def batch_predict(input_path: str, output_path: str | None = None, model: str = model_uri(),
                  column: str = "name", chunk_size: Annotated[int, Field(ge=1)] = BATCH_CHUNK_NAMES) -> dict:
    """Read names from Parquet, CSV or text; write Parquet with top-3 languages and the model version."""
    source = Path(input_path)
    # beside the input, after its whole name: names.csv and names.txt make two outputs, not one
    target = check_output_path(source, output_path or source.with_name(f"{source.name}.predictions.parquet"))
    pinned, version = resolve_version(model)
    stats = predict(pinned, version, source, target, column, chunk_size)
    create_markdown_artifact(key="batch-predictions", markdown=(
        f"# Batch prediction\n\n- input: `{stats['input']}`\n- output: `{stats['output']}`\n"
        f"- rows: {stats['rows']} ({stats['errors']} with an error)\n- model version: {stats['model_version']}\n"))
    print(f"wrote {stats['rows']} predictions to {stats['output']} (model version {stats['model_version']})")
    return stats
