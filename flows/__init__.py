"""Prefect flows and deployments over `pipeline/`, plus the `namelang` command line.

Nothing here re-implements a stage: the flows only wire `pipeline` functions as tasks.
Importing any of them first turns usage telemetry off (`flows.telemetry`), before Prefect or
MLflow is imported, so that no entry point (CLI, `python -m flows.serve`, a worker) phones home,
and makes bad-input errors one line in every flow run's log (`flows.run_logs`).
"""

from flows import run_logs
from flows.telemetry import quiet_telemetry

quiet_telemetry()
run_logs.install()
