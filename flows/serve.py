"""Deployments served by one long-running process: `python -m flows.serve`.

- `train-name-classifier/scheduled-retrain`: weekly retraining on a cron schedule (change it
  with --cron); a new version becomes champion only through the promotion gate.
- `batch-predict/on-demand`: predictions for a file, started with `prefect deployment run`.

On a Prefect server it also sets up the automation that marks a run Crashed when its process died
without a word (`flows.unresponsive`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import NoReturn

from prefect import get_client, serve
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.client.schemas.responses import DeploymentResponse
from prefect.deployments.runner import RunnerDeployment
from prefect.exceptions import ObjectNotFound
from prefect.runner import Runner
from prefect.schedules import Cron
from prefect.server.schemas.schedules import CronSchedule  # the server's own: it computes the run times
from prefect.settings import PREFECT_API_REQUEST_TIMEOUT, PREFECT_CLIENT_MAX_RETRIES, temporary_settings
from pydantic import ValidationError

from flows import run_logs
from flows.batch_predict import TAGS as PREDICTION_TAGS
from flows.batch_predict import batch_predict
from flows.local_api import configured_api, start_temporary_api
from flows.processes import ctrl_c_not_lost, exit_code
from flows.training import TAGS as TRAINING_TAGS
from flows.training import train_name_classifier
from flows.unresponsive import ensure_crash_automation
from pipeline.config import DEFAULT_SOURCE, DataConfig, PipelineConfig
from pipeline.errors import NamelangError, NamelangWarning, typed_first_line, validation_message
from pipeline.ingest import check_url, is_url

DEFAULT_CRON = "0 3 * * 1"  # Mondays 03:00
# A training takes minutes (hours on a large source), one at a time: a schedule that fires more often
# queues runs faster than they finish, and the queue outlives restarts of this process.
MIN_RETRAIN_INTERVAL = timedelta(hours=1)
RETRAIN, ON_DEMAND = "scheduled-retrain", "on-demand"


def deployments(cron: str | None = DEFAULT_CRON, source: str = DEFAULT_SOURCE, timezone: str = "UTC"
                ) -> list[RunnerDeployment]:
    """Both deployments; `cron=None` serves the training one without a schedule (runs on demand only)."""
    config = PipelineConfig(data=DataConfig(source=source))
    config.train.progress = False  # logs, not a terminal
    retrain = train_name_classifier.to_deployment(
        name=RETRAIN, schedules=[] if cron is None else [Cron(cron, timezone=timezone)],
        parameters={"config": config.model_dump(mode="json")},
        description="Retrain on the configured source; the champion alias moves only through the gate.",
        tags=list(TRAINING_TAGS),
        # one training at a time (two would share the cores); a run due meanwhile waits its turn
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
    )
    on_demand = batch_predict.to_deployment(name=ON_DEMAND, tags=list(PREDICTION_TAGS),
                                            description="Predict languages for a file of names.")
    return [retrain, on_demand]


def bound_to_work_pools(served: list[RunnerDeployment]) -> dict[str, str]:
    """The deployments among `served` that already exist in a work pool (`prefect deploy` made them), by
    full name. Serving them again would keep their pool but drop their pull steps: a worker would then
    take their runs and crash them, looking for the flow's file in a temp folder."""
    with get_client(sync_client=True) as client:
        return {full_name: existing.work_pool_name for full_name, existing in _existing(client, served)
                if existing.work_pool_name}


def _existing(client: SyncPrefectClient, served: list[RunnerDeployment]) -> Iterator[tuple[str, DeploymentResponse]]:
    """The deployments among `served` that the API knows, by full name, as it has them now."""
    for deployment in served:
        full_name = f"{deployment.flow_name}/{deployment.name}"
        try:
            yield full_name, client.read_deployment_by_name(full_name)
        except ObjectNotFound:  # not (or no longer) there
            continue


def schedule_problem(cron: str, timezone: str) -> str | None:
    """Why `cron` is no retraining schedule, or None. Prefect reads a sixth field as seconds, so a
    Quartz-style "0 0 3 * * 1" or a "* * * * * *" would fire far more often than meant."""
    try:
        schedule = CronSchedule(cron=cron, timezone=timezone)
    except ValidationError as exc:
        return validation_message(exc.errors()[0])
    fields = cron.split()
    if len(fields) != 5 and not (len(fields) == 1 and cron.startswith("@")):  # or a macro: @daily, @weekly
        return (f"a cron has 5 fields (minute hour day-of-month month day-of-week), not {len(fields)}"
                + ("; Prefect would read the sixth as seconds" if len(fields) == 6 else ""))
    try:
        starts = [d.timestamp() for d in asyncio.run(schedule.get_dates(n=48))]
    except ValueError:  # croniter's CroniterBadDateError: "0 3 30 2 *", February 30th
        starts = []
    if not starts:
        return "it never fires (no such date)"
    shortest = min((b - a for a, b in itertools.pairwise(starts)), default=math.inf)
    if shortest < MIN_RETRAIN_INTERVAL.total_seconds():
        minutes = f"{shortest / 60:g} minute" + ("" if shortest == 60 else "s")
        return (f"it starts a retraining {minutes} after another, and one trains at a time: runs due meanwhile "
                f"would queue up faster than they finish; leave at least {_hours(MIN_RETRAIN_INTERVAL)} between starts")
    return None


def _hours(interval: timedelta) -> str:
    hours = interval.total_seconds() / 3600
    return f"{hours:g} hour" + ("" if hours == 1 else "s")


def default_source() -> str:
    """`NAMELANG_SOURCE`, or the tutorial's archive when it is unset or empty (as an empty
    `NAMELANG_RETRAIN_CRON` is the default cron)."""
    return (os.environ.get("NAMELANG_SOURCE") or "").strip() or DEFAULT_SOURCE


def source_missing(source: str) -> str | None:
    """A local source that is not there, said now: a scheduled run would fail on it days later."""
    if is_url(source) or Path(source).expanduser().exists():
        return None
    return (f"{source}: no such file or folder here ({Path.cwd()}, where the runs start): scheduled and "
            "on-demand trainings on this default source will fail until it exists")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cron", default=None,
                        help=f"retraining schedule (default: {DEFAULT_CRON!r}, env NAMELANG_RETRAIN_CRON)")
    parser.add_argument("--source", default=default_source(),
                        help="default data source of scheduled runs (env NAMELANG_SOURCE; now: %(default)s)")
    parser.add_argument("--timezone", default="UTC", help="time zone of the schedule (IANA name, default UTC)")
    parser.add_argument("--no-schedule", action="store_true",
                        help="no scheduled retraining (a schedule served before is removed); runs on demand only")
    args = parser.parse_args(argv)
    # where the cron came from, for the error message: the option, the environment, or the default
    origin = ("--cron" if args.cron is not None
              else "NAMELANG_RETRAIN_CRON" if os.environ.get("NAMELANG_RETRAIN_CRON") else "the default cron")
    if args.cron is None:
        args.cron = os.environ.get("NAMELANG_RETRAIN_CRON") or DEFAULT_CRON
    problem = None if args.no_schedule else schedule_problem(args.cron, args.timezone)
    if problem is not None:  # argparse's one-line usage error, exit 2
        parser.error(f"bad schedule ({origin} {args.cron!r}, --timezone {args.timezone!r}): {problem}")
    if not args.source.strip():
        parser.error("no data source given (--source): a folder of <Language>.txt files, a .zip, or a URL")
    try:  # a URL no run can fetch, refused now as the empty one is: the weekly run failed on it days later
        check_url(args.source)
    except NamelangError as exc:
        parser.error(f"bad data source (--source): {exc}")
    served, applying = [], False
    # starting takes a while (a temporary API alone up to 90 s): a Ctrl-C then is one line, not a traceback
    try:
        with ctrl_c_not_lost():
            on_a_server = _prefect_api(parser)
            run_logs.warnings_in_one_line()
            if (missing := source_missing(args.source)) is not None:
                warnings.warn(missing, NamelangWarning, stacklevel=1)
            served = deployments(None if args.no_schedule else args.cron, args.source, args.timezone)
            _refuse_pool_deployments(parser, served)
            if on_a_server:  # a temporary API ends with this process, and its runs with it
                ensure_crash_automation()
            # paused here, not by Prefect's runner: it tried for over a minute on an API stopped first, then left a
            # traceback; serve returns on Ctrl-C and SIGTERM, and a failure before serving leaves others' deployments
            with ctrl_c_stops_as_sigterm_does():
                applying = True
                serve(*served, pause_on_shutdown=False)
    except KeyboardInterrupt as exc:  # before the runner served (then Ctrl-C stops it as SIGTERM does)
        _stopped_before_serving(exc, served if applying else [])
    pause_served(served)


def _prefect_api(parser: argparse.ArgumentParser) -> bool:
    """Whether a Prefect server is configured; if not, a temporary API started in a session of its own (Prefect's
    own would share the terminal's Ctrl-C: stopped first, it made the runner retry pausing the deployments for a
    minute, with tracebacks). Its failure ends the command in one line."""
    try:
        on_a_server = configured_api()
        if not on_a_server:
            start_temporary_api()
    except NamelangError as exc:
        parser.exit(2, f"error: {exc}\n")
    return on_a_server


def _refuse_pool_deployments(parser: argparse.ArgumentParser, served: list[RunnerDeployment]) -> None:
    """Deployments `prefect deploy` has bound to a work pool are its workers' to run: served here too, the
    workers would take their runs and fail them."""
    if bound := bound_to_work_pools(served):
        deletes = "; ".join(f"prefect deployment delete '{name}'" for name in bound)
        parser.exit(2, "error: " + ", ".join(f"{name} belongs to work pool {pool!r}" for name, pool in bound.items())
                    + f" (made by prefect deploy), which workers run; to serve them from this process instead, "
                    f"delete them first: {deletes}\n")


def _stopped_before_serving(interrupt: KeyboardInterrupt, applied: list[RunnerDeployment]) -> NoReturn:
    """One line and the shell's exit code; deployments perhaps up already are paused: their schedules
    must not fire with no process to run them."""
    print("\nCtrl-C: stopped before serving", file=sys.stderr, flush=True)
    if applied:
        pause_served(applied)
    sys.exit(exit_code(interrupt))


@contextlib.contextmanager
def ctrl_c_stops_as_sigterm_does() -> Iterator[None]:
    """Within the block, Ctrl-C (SIGINT) goes to the SIGTERM handler Prefect's runner sets once it
    serves: that one cancels the runs in progress (flow run Cancelled, the training's MLflow run FAILED,
    its checkpoint kept) before `serve` returns. On Ctrl-C Prefect's runner itself just unwinds, killing
    a training's process without a word: its flow run stayed Running, holding the one training slot
    until Prefect's lease lapsed, and its MLflow run stayed RUNNING. A second Ctrl-C stops at once (the
    runner's handler exits when it is already stopping); before the runner serves, Ctrl-C is Python's."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    said = False

    def on_ctrl_c(signum: int, frame: object) -> None:
        nonlocal said
        graceful = signal.getsignal(signal.SIGTERM)
        if not isinstance(getattr(graceful, "__self__", None), Runner):  # not serving yet: Ctrl-C as before
            if callable(previous):
                previous(signum, frame)
            raise KeyboardInterrupt
        if not said:
            print("Ctrl-C: stopping; runs in progress are cancelled (Ctrl-C again to stop at once)", file=sys.stderr,
                  flush=True)
            said = True
        graceful(signum, frame)

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def pause_served(served: list[RunnerDeployment]) -> None:
    """Pause the deployments this process served, as Prefect's runner does when it stops (their
    schedules would queue runs no process takes), briefly: an API already gone is one warning line at
    once, not a minute of retries; a busy one's 503 is tried twice more (2 and 4 s later, as Prefect's
    client backs off). One that `prefect deploy` has moved to a work pool meanwhile is a worker's now,
    and is left as it is."""
    paused = []
    try:
        with (temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 2, PREFECT_API_REQUEST_TIMEOUT: 10}),
              get_client(sync_client=True) as client):
            if (problem := client.api_healthcheck()) is not None:
                raise problem
            for full_name, existing in _existing(client, served):
                if not existing.work_pool_name:
                    client.pause_deployment(existing.id)
                    paused.append(full_name)
    except Exception as exc:  # noqa: BLE001 (the API's failure in any form: what is left to do is said)
        warnings.warn(f"could not pause the served deployments ({typed_first_line(exc)}): their schedules stay "
                      "active until python -m flows.serve runs again", NamelangWarning, stacklevel=2)
        return
    if paused:
        print(f"paused {', '.join(paused)}: python -m flows.serve serves them again", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    main()
