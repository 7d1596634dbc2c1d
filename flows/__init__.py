"""Prefect flows and deployments over `pipeline/`, plus the `namelang` command line.

Nothing here re-implements a stage: the flows only wire `pipeline` functions as tasks.
Importing any of them first turns usage telemetry off (`flows.telemetry`), before Prefect or
MLflow is imported, so that no entry point (CLI, `python -m flows.serve`, a worker) phones home.
"""

from flows.telemetry import quiet_telemetry

quiet_telemetry()
