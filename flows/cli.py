"""The `namelang` command line: ingest, train, predict, serve.

Lives beside the flows (not in `pipeline/`) because `train` starts a Prefect flow; the other
commands call `pipeline` directly and never import Prefect, so they start fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from pipeline.config import DEFAULT_SOURCE, DataConfig
from pipeline.errors import NamelangError

app = typer.Typer(help="Learn which language a surname comes from, from its spelling.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

SourceOption = Annotated[str, typer.Option("--source", "-s", help="Folder of <Language>.txt, a .zip, or a URL")]


@app.callback()
def _main() -> None:
    """namelang: ingest names, train and register models, predict languages."""


def fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=2)


@app.command()
def ingest(
    source: SourceOption = DEFAULT_SOURCE,
    out: Annotated[Path, typer.Option(help="Folder for names.parquet and the reports")] = Path("data/processed"),
    raw_dir: Annotated[Path, typer.Option(help="Folder for downloaded archives")] = Path("data/raw"),
    sha256: Annotated[str | None, typer.Option(help="Expected SHA-256 of the archive")] = None,
) -> None:
    """Read a source, normalize it, and write data/processed/names.parquet with its provenance."""
    from pipeline.ingest import ingest as read_source
    from pipeline.normalize import normalize, write_names_table

    try:
        config = DataConfig(source=source, processed_dir=out, raw_dir=raw_dir, source_sha256=sha256)
        table = normalize(read_source(config), config.max_name_chars)
        paths = write_names_table(table, config.processed_dir)
    except NamelangError as exc:
        fail(exc)
    q = table.quality
    typer.echo(f"ingested {q['lines']} lines from {source}")
    typer.echo(f"  rows kept: {q['rows']} in {q['languages']} languages "
               f"({q['distinct_names']} distinct names, {q['duplicate_lines']} duplicate lines)")
    typer.echo(f"  names in several languages: {q['multi_language_names']['count']}; "
               f"rejected: {q['rejected']['count']} {q['rejected']['by_reason'] or ''}".rstrip())
    typer.echo(f"  table: {paths['names']} (sha256 {table.sha256[:12]})")
    typer.echo(f"  report: {paths['quality_md']}")


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="namelang")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
