"""The `namelang` command line: ingest, train, predict, batch, serve, promote, prune.

Lives beside the flows (not in `pipeline/`) because `train` and `batch` run Prefect flows; the other
commands call `pipeline` directly and never import Prefect, so they start fast.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn
from urllib.parse import urlsplit

import typer
from typer.core import TyperCommand, TyperGroup

from flows import run_logs
from flows.processes import exit_code, run_forwarding_signals, stop_signals_interrupt, stop_with_parent
from flows.wording import counted
from pipeline.config import BATCH_CHUNK_NAMES, CHALLENGER, CHAMPION_URI, DEFAULT_SOURCE, NAME_COLUMN, TOP_K, DataConfig
from pipeline.errors import NamelangError, first_line, validation_message

if TYPE_CHECKING:
    from pydantic import ValidationError

    from flows.training import Reached


class _FlagsTakeNoValue:
    """typer 0.29's help shows a flag's type as if it took a value (`--json <bool>`, `--help <bool>`),
    so `--json true` looks right and fails; a flag's help shows no value."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""  # what typer shows in place of the type
        return params


class _Command(_FlagsTakeNoValue, TyperCommand):
    pass


class _Group(_FlagsTakeNoValue, TyperGroup):
    pass


app = typer.Typer(help="Learn which language a surname comes from, from its spelling.", cls=_Group,
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

_DATA_DEFAULTS = DataConfig()  # the CLI's defaults are the configuration's
_INGEST_OPTIONS = {"source": "--source", "processed_dir": "--out", "raw_dir": "--raw-dir", "source_sha256": "--sha256"}
SourceOption = Annotated[str, typer.Option("--source", "-s", help="Folder of <Language>.txt, a .zip, or a URL")]


def _print_version(asked: bool) -> None:
    """What a bug report needs: namelang's version and those of the libraries that shape its results
    (theirs read from the installed packages' metadata: importing them would take seconds)."""
    if not asked:
        return
    from importlib.metadata import PackageNotFoundError, version

    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    from pipeline import __version__  # as the runs' `namelang.version` tag and the table's provenance say it

    libraries = ", ".join(f"{package} {installed(package)}" for package in ("torch", "mlflow", "prefect"))
    typer.echo(f"namelang {__version__} ({libraries}; Python {sys.version.split()[0]})")
    raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                               help="Print the versions of namelang and its libraries, and exit")
                            ] = False,
) -> None:
    """namelang: ingest names, train and register models, predict languages."""


def validation_problems(exc: ValidationError, options: dict[str, str] | None = None) -> str:
    """A pydantic ValidationError in one line: `section.key: what is wrong` for each field, or the
    command-line option that set the field, where `options` maps field names to options."""
    def where(loc: tuple) -> str:
        field = ".".join(map(str, loc))
        return (options or {}).get(field, field)

    # a problem with the whole input (a JSON list, say) has no field to name
    return "; ".join(f"{where(e['loc'])}: {validation_message(e)}" if e["loc"] else validation_message(e)
                     for e in exc.errors())


def fail(exc: Exception) -> NoReturn:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=2)


@app.command(cls=_Command)
def ingest(
    source: SourceOption = DEFAULT_SOURCE,
    out: Annotated[Path, typer.Option(help="Folder for names.parquet and the reports")] = _DATA_DEFAULTS.processed_dir,
    raw_dir: Annotated[Path, typer.Option(help="Folder for downloaded archives")] = _DATA_DEFAULTS.raw_dir,
    sha256: Annotated[str | None, typer.Option(help="Expected SHA-256 of the archive")] = None,
) -> None:
    """Read a source, normalize it, and write data/processed/names.parquet with its provenance."""
    from pydantic import ValidationError

    from pipeline.ingest import ingest as read_source
    from pipeline.normalize import normalize, write_names_table

    try:
        config = DataConfig(source=source, processed_dir=out, raw_dir=raw_dir, source_sha256=sha256)
    except ValidationError as exc:
        fail(NamelangError(f"bad value: {validation_problems(exc, _INGEST_OPTIONS)}"))
    try:
        table = normalize(read_source(config), config.max_name_chars)
        paths = write_names_table(table, config.processed_dir)
    except NamelangError as exc:
        fail(exc)
    q = table.quality
    typer.echo(f"ingested {counted(q['lines'], 'line')} from {source}")
    typer.echo(f"  rows kept: {q['rows']:,} in {counted(q['languages'], 'language')} "
               f"({counted(q['distinct_names'], 'distinct name')}, {counted(q['duplicate_lines'], 'duplicate line')})")
    typer.echo(f"  names in several languages: {q['multi_language_names']['count']:,}; "
               f"rejected: {q['rejected']['count']:,} {q['rejected']['by_reason'] or ''}".rstrip())
    typer.echo(f"  table: {paths['names']} (sha256 {table.sha256[:12]})")
    typer.echo(f"  report: {paths['quality_md']}")


@app.command(cls=_Command)
def train(
    source: Annotated[str | None, typer.Option(
        "--source", "-s", help="Folder of <Language>.txt, a .zip, or a URL (default: the --config file's "
        "data.source, else the tutorial's archive)")] = None,
    config_file: Annotated[Path | None, typer.Option("--config", help="JSON file of PipelineConfig settings")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override train.epochs")] = None,
    cell: Annotated[str | None, typer.Option(help="Override model.cell: rnn, lstm or gru")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda")] = None,
    threads: Annotated[int | None, typer.Option(
        help="Override train.num_threads: CPU threads (default: every core; 1 is faster when another job "
        "keeps a core busy)")] = None,
    max_seconds: Annotated[float | None, typer.Option(
        help="Override train.max_seconds: stop training after this many seconds (the best epoch so far is "
        "kept; --resume without it trains on)")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its checkpoint")] = False,
    progress: Annotated[bool | None, typer.Option(
        help="Show a progress bar on a terminal (default: on, or the --config file's train.progress; never in a "
             "log or a pipe)")] = None,
) -> None:
    """Run the training flow once, end to end: ingest, train, evaluate, register in MLflow."""
    config = _training_config(config_file, {
        ("--source", "data", "source"): source, ("--epochs", "train", "epochs"): epochs,
        ("--cell", "model", "cell"): cell, ("--device", "train", "device"): device,
        ("--threads", "train", "num_threads"): threads, ("--max-seconds", "train", "max_seconds"): max_seconds,
        ("--progress", "train", "progress"): progress})
    from prefect import tags

    from flows.local_api import prefect_api
    from flows.training import TAGS, Reached, reporting_to, train_name_classifier
    from pipeline.ingest import check_source
    from pipeline.train import resolve_device

    started, progress = time.time(), Reached()
    try:  # tagged as the deployments' runs: on a server, the crash automation watches it too
        # a path not there or a GPU missing, at once: Prefect's temporary API takes some 20 s to start
        check_source(config.data)
        resolve_device(config.train.device)
        with stop_signals_interrupt(), prefect_api(), tags(*TAGS), reporting_to(progress):
            summary = train_name_classifier(config, resume=resume)
    except NamelangError as exc:
        fail(exc)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM or SIGHUP
        typer.echo(f"\ninterrupted; {_what_resumes(progress, config.train.checkpoint_dir, started, resume)}",
                   err=True)
        raise typer.Exit(code=exit_code(exc)) from None
    _print_training_summary(summary)


def _what_resumes(progress: Reached, checkpoint_dir: Path | None, started: float, resumed: bool) -> str:
    """What an interrupted training leaves (`progress`: how far it got, a `flows.training.Reached`): a
    registered version, or this run's checkpoint once an epoch has finished. Told from the folder alone,
    an interrupt after registration (the checkpoint deleted) was "no epoch had finished", and with --resume
    any settings' checkpoint there promised one."""
    if progress.version is not None:
        return (f"version {progress.version} was registered before it (alias '{progress.alias}'): the training is "
                "done, nothing to resume")
    if checkpoint_dir is None:
        return "checkpoints are off (train.checkpoint_dir), so the next run starts over"
    if progress.checkpoint is None:  # still in the data steps, which name the checkpoint
        return "training had not started, so nothing is checkpointed: run the same command again" + (
            " (with --resume: the checkpoint it resumes from, if there is one, is untouched)" if resumed else "")
    written = _modified(progress.checkpoint)
    # with --resume, the checkpoint it resumed from, whenever written; else one this run wrote
    if written is None or not (resumed or written >= started):
        return "no training epoch had finished, so nothing is checkpointed: run the same command again"
    return "every finished training epoch is checkpointed: run the same command with --resume to continue"


def _modified(path: Path | None) -> float | None:
    """When `path` was last written; None when it is not there (deleted meanwhile, the folder unreadable)."""
    try:
        return None if path is None else path.stat().st_mtime
    except OSError:
        return None


def _training_config(config_file: Path | None, overrides: dict[tuple[str, str, str], object]):
    """The --config file's settings (or the defaults), with the options given on the command line
    ({(option, section, key): value}, None when not given) winning over it."""
    from pydantic import ValidationError

    from pipeline.config import PipelineConfig

    try:
        # a BOM, as Windows editors write, is not JSON but not a mistake either
        config = PipelineConfig.model_validate(json.loads(config_file.read_text(encoding="utf-8-sig"))
                                               if config_file else {})
    except ValidationError as exc:
        fail(NamelangError(f"bad configuration: {validation_problems(exc)}", config_file))
    except OSError as exc:  # not there, a folder, not readable: the file, not its settings, is the problem
        fail(NamelangError(f"cannot read the configuration file: {exc.strerror or exc}", config_file))
    except ValueError as exc:  # not UTF-8 (UnicodeDecodeError), not JSON (JSONDecodeError)
        fail(NamelangError(f"bad configuration: {exc}", config_file))
    for (option, section, key), value in overrides.items():
        if value is not None:
            try:
                setattr(getattr(config, section), key, value)
            except ValidationError as exc:
                fail(NamelangError(f"bad value: {validation_problems(exc, {key: option})}"))
    return config


def _print_training_summary(summary: dict) -> None:
    """What was trained, why it got its alias, and what to do next."""
    typer.echo("")
    typer.echo(f"trained {summary['model']} version {summary['version']} -> alias '{summary['alias']}'")
    typer.echo(f"  gate: {summary['gate']['reason']}")
    if summary["alias"] == CHALLENGER:  # whatever the reason, the way round it is the same
        typer.echo(f"  the champion stays; to make this version champion anyway: namelang promote "
                   f"{summary['version']}")
    typer.echo(f"  test accuracy {summary['test_accuracy']:.3f}, macro-F1 {summary['test_macro_f1']:.3f}, "
               f"top-3 accuracy {summary['test_top3_accuracy']:.3f} ({summary['train_seconds']} s on "
               f"{summary['device']})")
    typer.echo(f"  data steps: {summary['data_steps']}")
    if summary.get("resumed_from_epoch") is not None:
        typer.echo(f"  resumed from the checkpoint written after epoch {summary['resumed_from_epoch']}")
    if summary.get("checkpoint"):
        typer.echo(f"  the time budget ended training; its checkpoint is kept ({summary['checkpoint']}): the same "
                   "command with --resume, without --max-seconds or with more, trains on from it")
    typer.echo("next:")
    typer.echo(f"  browse runs and models:  {_browse_command(summary['mlflow_tracking_uri'])}")
    typer.echo(f"  predict:                 {_command('namelang')} predict Hinton Nakamura Schmidt")
    typer.echo(f"  serve over REST:         {_command('namelang')} serve   "
               "(mlflow models serve on the champion's version at start: restart it after a promotion)")


def _browse_command(uri: str) -> str:
    """How to see a store's runs: a tracking server's own page, else a local `mlflow ui` on it. A
    database URI may hold credentials: the command then names the variable, not its value."""
    from pipeline.tracking import without_credentials

    parts = urlsplit(uri)
    if parts.scheme in {"http", "https"}:
        return f"open {without_credentials(uri)}"
    # the summary's URI hides its credentials; a path with a space is one word to the shell
    store = shlex.quote(uri) if "@" not in parts.netloc else '"$MLFLOW_TRACKING_URI"'
    mlflow = shlex.quote(_command("mlflow"))
    return (f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false {mlflow} ui --backend-store-uri {store} --workers 1   "
            "(then http://127.0.0.1:5000)")


def _command(name: str) -> str:
    """How the user can type `name`: bare when on PATH, else the path inside this virtualenv."""
    local = Path(sys.executable).parent / name
    if shutil.which(name) == str(local) or not local.exists():
        return name
    try:
        return str(local.relative_to(Path.cwd()))
    except ValueError:
        return str(local)


def _read_names(names: list[str], file: Path | None) -> list[str]:
    from pipeline.batch import stream_lines, text_lines  # the batch reader: BOM removed, a bad byte named by its line

    collected = list(names)
    if file is not None:
        try:
            from_file = [line.strip() for chunk in text_lines(file) for line in chunk if line.strip()]
        except OSError as exc:
            raise NamelangError(f"cannot read names: {exc.strerror or exc}", file) from exc
        if not from_file:  # not a cue to read standard input: in a loop that would swallow its input
            raise NamelangError("no names in this file", file)
        collected += from_file
    if not collected and sys.stdin is not None and not sys.stdin.isatty():  # None: started with it closed
        collected = [line.strip() for chunk in stream_lines(sys.stdin.buffer, "<stdin>") for line in chunk
                     if line.strip()]
    if not collected:
        raise NamelangError("no names given: pass them as arguments, with --file, or on standard input")
    return collected


def invocations_url(host: str, port: int) -> str:
    """Where the server answers: an IPv6 address is bracketed in a URL (`http://::1:5001` is none)."""
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/invocations"


@app.command(cls=_Command)
def predict(
    names: Annotated[list[str] | None, typer.Argument(help="Surnames to classify")] = None,
    top: Annotated[int, typer.Option(min=1, help="How many languages to show per name")] = TOP_K,
    model: Annotated[str, typer.Option(help="Model URI")] = CHAMPION_URI,
    file: Annotated[Path | None, typer.Option(help="A text file, one name per line")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Which language does each surname come from? Uses the registered champion by default."""
    from pipeline.predict import rank_columns
    from pipeline.registry import configure_store_for, load_model

    try:
        batch = _read_names(names or [], file)
        configure_store_for(model)
        loaded = load_model(model, download_bars=False)  # an answer, not a download's bars
        import pandas as pd

        frame = loaded.predict(pd.DataFrame({"name": pd.Series(batch, dtype=object)}), params={"top_k": top})
    except NamelangError as exc:
        fail(exc)
    except Exception as exc:  # MLflow's own errors (bad top_k, schema) reach the user in one line
        fail(NamelangError(first_line(exc)))
    failed = 0
    records = []
    for row in frame.to_dict("records"):
        row["error"] = row["error"] if isinstance(row["error"], str) and row["error"] else None
        # a model of fewer languages than --top gives as many guesses as it has languages (a --top of
        # 10**20 once counted its way up to there)
        ranked = []
        for lang, prob in map(rank_columns, range(1, top + 1)):
            if lang not in row:
                break
            ranked.append((row[lang], row[prob]))
        records.append({"name": row["name"], "error": row["error"],
                        "top": [] if row["error"] else [{"language": lang, "probability": round(p, 4)}
                                                        for lang, p in ranked]})
        failed += bool(row["error"])
    if as_json:
        typer.echo(json.dumps(records, ensure_ascii=False, indent=2))
    else:
        for rec in records:
            # a blank name is shown quoted, not as an empty start of line; so is one with control
            # characters, which a terminal would act on (an escape that clears the screen) rather than show
            name = rec["name"]
            shown = name if isinstance(name, str) and name.strip() and not _has_control(name) else repr(name)
            if rec["error"]:
                typer.echo(f"{shown}: error: {rec['error']}")
            else:
                typer.echo(f"{shown}: " + ", ".join(f"{t['language']} ({t['probability']:.2f})" for t in rec["top"]))
    if failed:
        raise typer.Exit(code=1)


def _has_control(text: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in text)


@app.command(cls=_Command)
def batch(
    input_path: Annotated[Path, typer.Argument(help="Parquet, CSV or text file of names")],
    out: Annotated[Path | None, typer.Option(help="Output Parquet (default: <input>.predictions.parquet)")] = None,
    model: Annotated[str, typer.Option(help="Model URI")] = CHAMPION_URI,
    column: Annotated[str, typer.Option(help="Column holding the names (Parquet, CSV)")] = NAME_COLUMN,
    chunk_size: Annotated[int, typer.Option(min=1, help="Names per chunk (bounds memory)")] = BATCH_CHUNK_NAMES,
) -> None:
    """Predict a whole file through the `batch-predict` flow; writes Parquet with the top-3 languages."""
    from prefect import tags

    from flows.batch_predict import TAGS, batch_predict
    from flows.local_api import prefect_api
    from pipeline.batch import check_paths

    started, target = time.time(), None
    try:
        target = check_paths(input_path, out)  # at once: Prefect's temporary API takes some 20 s to start
        with stop_signals_interrupt(), prefect_api(), tags(*TAGS):
            stats = batch_predict(str(input_path), str(out) if out else None, model, column, chunk_size)
    except NamelangError as exc:
        fail(exc)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM or SIGHUP
        typer.echo(f"\ninterrupted; {_what_batch_left(target, started)}", err=True)
        raise typer.Exit(code=exit_code(exc)) from None
    typer.echo(f"{counted(stats['rows'], 'name')} -> {stats['output']} ({stats['errors']:,} could not be classified; "
               f"model version {stats['model_version']})")


def _what_batch_left(target: Path | None, started: float) -> str:
    """The output is written whole, once every name is done: after that, a Ctrl-C (during the run's
    last reports) leaves it written, which "nothing was written" denied."""
    written = _modified(target)
    return (f"the output was written before it: {target}" if written is not None and written >= started
            else "the output is written only when every name is done, so nothing was written")


@app.command(cls=_Command)
def serve(
    model: Annotated[str, typer.Option(help="Model URI")] = CHAMPION_URI,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 5001,
) -> None:
    """REST endpoint: `mlflow models serve` on the champion, offline (no environment is built)."""
    try:
        check_port_free(host, port)
        # in a child process that then ends: this one stays up as long as the server, and loading the model
        # here would keep PyTorch and the weights (about 500 MB) in it for nothing; the child dies with this
        # one, and subprocess.run kills it when this one is interrupted
        with stop_signals_interrupt():
            check = subprocess.run([sys.executable, "-P", "-m", "flows.cli", "serving-environment", model],
                                   capture_output=True, text=True, env=_this_code_first(),
                                   preexec_fn=stop_with_parent())
    except NamelangError as exc:
        fail(exc)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM or SIGHUP while the model was checked: nothing started
        typer.echo("\ninterrupted before the server started", err=True)
        raise typer.Exit(code=exit_code(exc)) from None
    if check.returncode < 0:  # killed (the kernel's out-of-memory killer, loading the model): it said nothing
        died = signal.Signals(-check.returncode).name
        typer.echo(f"error: {model}: the model check was killed by {died} before the server started", err=True)
        raise typer.Exit(code=128 - check.returncode)
    if check.returncode != 0:  # its one-line error, as the check would have printed it here
        typer.echo(check.stderr, err=True, nl=False)
        raise typer.Exit(code=check.returncode)
    checked = json.loads(check.stdout.splitlines()[-1])
    # mlflow starts `uvicorn` by name: put this interpreter's bin folder (the virtualenv) on PATH
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, **checked["environment"], "PATH": path}
    pinned = checked["model"]  # the version checked is the one served: an alias moved meanwhile is not followed
    which = f" (version {checked['version']}, until restarted)" if pinned != model else ""
    typer.echo(f"serving {model}{which} on {invocations_url(host, port)} (Ctrl-C to stop)")
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", pinned, "--env-manager", "local",
           "-h", host, "-p", str(port)]
    # the server's temporary folder, removed when it stops: MLflow downloads the model from a tracking server
    # into a folder of its own that it never removes (20 MB at each start)
    from pipeline.atomic import scratch_folder

    with scratch_folder("namelang-serve-") as scratch:  # one a killed serve left is removed by the next
        code = run_forwarding_signals(cmd, {**env, "TMPDIR": scratch})
    raise typer.Exit(code=code)


@app.command(cls=_Command)
def promote(
    version: Annotated[str, typer.Argument(help="The registered version to make champion, e.g. 3")],
) -> None:
    """Make a version the champion by hand: one the promotion gate kept as challenger, or a rollback."""
    from pipeline.registry import promote as set_champion
    from pipeline.tracking import configure

    try:
        configure(create=False)
        previous = set_champion(version)
    except NamelangError as exc:
        fail(exc)
    model = CHAMPION_URI
    if previous == str(int(version)):
        typer.echo(f"version {previous} is already {model}; nothing changed")
    else:
        typer.echo(f"{model} is now version {int(version)}" + (f" (was version {previous})" if previous else "")
                   + "; a running `namelang serve` serves it once restarted")


@app.command(cls=_Command)
def prune(
    keep: Annotated[int, typer.Option(min=1, help="How many of the newest versions to keep")] = 5,
    dry_run: Annotated[bool, typer.Option(help="Say what would be deleted, and delete nothing")] = False,
) -> None:
    """Delete old model versions, with their runs and logged models, to free disk (about 20 MB each).

    The newest --keep versions and every version an alias names (@champion, @challenger) stay."""
    from pipeline.prune import prune as prune_versions
    from pipeline.tracking import configure

    try:
        configure(create=False)
        done = prune_versions(keep, dry_run=dry_run)
    except NamelangError as exc:
        fail(exc)
    if not done.deleted:
        typer.echo(f"nothing to delete: {counted(len(done.kept), 'version')} (keeping {keep} and those with aliases)")
        return
    verb = "would delete" if dry_run else "deleted"
    freed = f"; {done.freed_bytes / 2**20:.1f} MB freed" if done.freed_bytes is not None else (
        "" if dry_run else "; their files stay in the tracking server's store until its `mlflow gc` (which also "
        "removes every deleted run and experiment there)")
    typer.echo(f"{verb} {counted(len(done.deleted), 'version')} ({', '.join(done.deleted)}), "
               f"{counted(len(done.runs), 'run')} and {counted(len(done.logged_models), 'logged model')}{freed}; "
               f"kept {', '.join(done.kept)}")


@app.command("serving-environment", hidden=True, cls=_Command)
def _serving_environment_command(model: str) -> None:
    """For `serve`, in a process of its own: check MODEL, print as JSON the server's settings and the
    model to serve (an alias resolved to its version)."""
    try:
        settings = serving_environment(model)
    except NamelangError as exc:
        fail(exc)
    typer.echo(json.dumps(settings))


def _this_code_first() -> dict[str, str]:
    """The environment for a child `python -P -m flows.cli`: it imports this very namelang, not another
    `flows` package in the working directory (-P leaves the working directory off sys.path)."""
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}


def serving_environment(model: str) -> dict:
    """The model server's MLflow settings (`environment`), and the `model` URI to serve with its
    `version`: an alias resolved once, here, so that the version checked is the one served and the
    start-up line can name it. A missing model fails here, in one line, rather than in the server's log."""
    import mlflow

    from pipeline.registry import load_model, needs_tracking_store, pin_model_uri
    from pipeline.tracking import ARTIFACTS_PROGRESS_BAR, HTTP_RETRY_SETTINGS

    # a server's log is no terminal: no artifact-download progress bars in it
    env = {ARTIFACTS_PROGRESS_BAR: "false"}
    pinned, version = pin_model_uri(model)  # points MLflow at the store, when the model is in one
    store = mlflow.get_tracking_uri() if needs_tracking_store(model) else None
    if store is not None:  # registry too, as configure() set it here: not a MLFLOW_REGISTRY_URI of the shell's
        env["MLFLOW_TRACKING_URI"] = env["MLFLOW_REGISTRY_URI"] = store
        # the bounded retries configure() set here, in this child, for the server too
        env.update({key: os.environ[key] for key in HTTP_RETRY_SETTINGS if key in os.environ})
    load_model(pinned, download_bars=False)
    return {"environment": env, "model": pinned, "version": version}


def check_port_free(host: str, port: int) -> None:
    """Refuse a port already taken, in one line, before mlflow prints its own 30-line traceback."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # as uvicorn binds: a port whose last connections linger in TIME_WAIT is free to it, a listening one not
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            # no such name, or an address this machine does not have: another port would not help
            if isinstance(exc, socket.gaierror) or exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                raise NamelangError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; check --host") from exc
            raise NamelangError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port "
                                "or stop what is using it") from exc


def main() -> None:  # pragma: no cover - console entry point
    run_logs.warnings_in_one_line()
    app(prog_name="namelang")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
