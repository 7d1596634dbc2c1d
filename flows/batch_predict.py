"""Prefect flow `batch-predict`: the champion (or any model URI) over a file of names."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from flows.retries import RETRY_TRANSIENT_QUICK
from flows.run_logs import credentials_hidden
from flows.unresponsive import RUN_TAG
from flows.wording import counted
from pipeline.batch import check_paths, predict_file
from pipeline.config import BATCH_CHUNK_NAMES, NAME_COLUMN
from pipeline.registry import load_model, model_uri, pin_model_uri

TAGS = (RUN_TAG, "prediction")  # of its runs, deployed (flows.serve, prefect.yaml) or from the CLI


@task(name="resolve-model", cache_policy=NO_CACHE, **RETRY_TRANSIENT_QUICK)
@credentials_hidden
def resolve_version(uri: str) -> tuple[str, str]:
    return pin_model_uri(uri)


@task(name="predict-file", cache_policy=NO_CACHE)
@credentials_hidden
def predict(uri: str, version: str, input_path: Path, output_path: Path, column: str, chunk_size: int) -> dict:
    logger = get_run_logger()

    def progress(rows: int, errors: int) -> None:
        logger.info("predicted %s so far (%s could not be classified)", counted(rows, "name"), f"{errors:,}")

    model = load_model(uri, download_bars=False)  # logs, not a terminal
    return predict_file(model, input_path, output_path, version, column, chunk_size, on_chunk=progress)


@flow(name="batch-predict", log_prints=True)
def batch_predict(input_path: str, output_path: str | None = None, model: str = model_uri(),
                  column: str = NAME_COLUMN, chunk_size: Annotated[int, Field(ge=1)] = BATCH_CHUNK_NAMES) -> dict:
    """Read names from Parquet, CSV or text; write Parquet with top-3 languages and the model version.

    Args:
        input_path: The names: a Parquet or CSV file with a column of them, or a text file of one per line.
        output_path: The Parquet file to write; default: the input's name with `.predictions.parquet` added.
        model: The model's URI; default: the champion, its version fixed when the run starts.
        column: The column of names in a Parquet or CSV input.
        chunk_size: Names read, predicted and written at a time (bounds the run's memory).
    """
    source = Path(input_path)
    target = check_paths(source, output_path)
    pinned, version = resolve_version(model)
    stats = predict(pinned, version, source, target, column, chunk_size)
    create_markdown_artifact(key="batch-predictions", markdown=(
        f"# Batch prediction\n\n- input: `{stats['input']}`\n- output: `{stats['output']}`\n"
        f"- rows: {stats['rows']:,} ({stats['errors']:,} with an error)\n- model version: {stats['model_version']}\n"))
    print(f"wrote {counted(stats['rows'], 'prediction')} to {stats['output']} (model version {stats['model_version']})")
    return stats
