"""Nothing phones home: Prefect's and MLflow's usage telemetry off in every entry point.

MLflow reads `MLFLOW_DISABLE_TELEMETRY`, or `DO_NOT_TRACK` only when it is "true"; other tools
read `DO_NOT_TRACK=1`. A user's own setting wins (`setdefault`).
"""

from __future__ import annotations

import os

SETTINGS = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}


def quiet_telemetry() -> None:
    for key, value in SETTINGS.items():
        os.environ.setdefault(key, value)
