"""Deployments served by one long-running process: `python -m flows.serve`.

- `train-name-classifier/scheduled-retrain`: weekly retraining on a cron schedule (change it
  with --cron); a new version becomes champion only through the promotion gate.
- `batch-predict/on-demand`: predictions for a file, started with `prefect deployment run`.
"""

from __future__ import annotations

import argparse
import os

from prefect import get_client, serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import RunnerDeployment
from prefect.exceptions import ObjectNotFound
from prefect.schedules import Cron
from pydantic import ValidationError

from flows import run_logs
from flows.batch_predict import batch_predict
from flows.local_api import configured_api
from flows.training import train_name_classifier
from pipeline.config import DEFAULT_SOURCE, DataConfig, PipelineConfig
from pipeline.errors import NamelangError

DEFAULT_CRON = "0 3 * * 1"  # Mondays 03:00
RETRAIN, ON_DEMAND = "scheduled-retrain", "on-demand"


def deployments(cron: str = DEFAULT_CRON, source: str = DEFAULT_SOURCE, timezone: str = "UTC"
                ) -> list[RunnerDeployment]:
    config = PipelineConfig(data=DataConfig(source=source))
    config.train.progress = False  # logs, not a terminal
    retrain = train_name_classifier.to_deployment(
        name=RETRAIN, schedule=Cron(cron, timezone=timezone), parameters={"config": config.model_dump(mode="json")},
        description="Retrain on the configured source; the champion alias moves only through the gate.",
        tags=["namelang", "training"],
        # one training at a time (two would share the cores); a run due meanwhile waits its turn
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
    )
    on_demand = batch_predict.to_deployment(name=ON_DEMAND, tags=["namelang", "prediction"],
                                            description="Predict languages for a file of names.")
    return [retrain, on_demand]


def bound_to_work_pools(served: list[RunnerDeployment]) -> dict[str, str]:
    """The deployments among `served` that already exist in a work pool (`prefect deploy` made them), by
    full name. Serving them again would keep their pool but drop their pull steps: a worker would then
    take their runs and crash them, looking for the flow's file in a temp folder."""
    bound: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        for deployment in served:
            full_name = f"{deployment.flow_name}/{deployment.name}"
            try:
                existing = client.read_deployment_by_name(full_name)
            except ObjectNotFound:
                continue
            if existing.work_pool_name:
                bound[full_name] = existing.work_pool_name
    return bound


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cron", default=os.environ.get("NAMELANG_RETRAIN_CRON", DEFAULT_CRON),
                        help=f"retraining schedule (default: {DEFAULT_CRON!r}, env NAMELANG_RETRAIN_CRON)")
    parser.add_argument("--source", default=os.environ.get("NAMELANG_SOURCE", DEFAULT_SOURCE),
                        help="default data source of scheduled runs (env NAMELANG_SOURCE)")
    parser.add_argument("--timezone", default="UTC")
    args = parser.parse_args(argv)
    try:
        CronSchedule(cron=args.cron, timezone=args.timezone)  # what the deployment's schedule becomes
    except ValidationError as exc:  # a bad cron or time zone: argparse's one-line usage error, exit 2
        parser.error(f"bad schedule (--cron {args.cron!r}, --timezone {args.timezone!r}): {exc.errors()[0]['msg']}")
    try:
        configured_api()
    except NamelangError as exc:
        parser.exit(2, f"error: {exc}\n")
    run_logs.warnings_in_one_line()
    served = deployments(args.cron, args.source, args.timezone)
    bound = bound_to_work_pools(served)
    if bound:
        deletes = "; ".join(f"prefect deployment delete '{name}'" for name in bound)
        parser.exit(2, "error: " + ", ".join(f"{name} belongs to work pool {pool!r}" for name, pool in bound.items())
                    + f" (made by prefect deploy), which workers run; to serve them from this process instead, "
                    f"delete them first: {deletes}\n")
    serve(*served)


if __name__ == "__main__":  # pragma: no cover
    main()
