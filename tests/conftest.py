"""Shared test set-up: nothing phones home, and where the development data lives."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# ../shared/data/names beside the checkout (CI clones the repo next to shared/ too); read-only.
SHARED_NAMES = Path(__file__).resolve().parents[2] / "shared/data/names"


def pytest_configure(config: pytest.Config) -> None:
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    # Prefect keeps its database and cached results in PREFECT_HOME: one fresh home per session,
    # and never a developer's running server.
    os.environ["PREFECT_HOME"] = home = tempfile.mkdtemp(prefix="namelang-prefect-home-")
    # removed at exit, after the temporary Prefect APIs this process started (their stops registered later)
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    os.environ.pop("PREFECT_API_URL", None)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):  # the tests' own stores
        os.environ.pop(name, None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `waits` (minutes spent waiting on a server's heartbeat clock) start first: run on
    two workers (`make test`), the other tests then fill that wait instead of following it."""
    items.sort(key=lambda item: item.get_closest_marker("waits") is None)  # stable: the rest keep their order


@pytest.fixture(scope="session")
def shared_names() -> Path:
    """The tutorial's 18 `<Language>.txt` files (never write there)."""
    if not SHARED_NAMES.is_dir():
        pytest.fail(f"development data not found at {SHARED_NAMES} (expected ../shared beside the repo)")
    return SHARED_NAMES
