"""Which failed tasks are worth another try: shared by the flows' tracking-store tasks."""

from __future__ import annotations

from pipeline.errors import NamelangError, TrackingError


def worth_retrying(task, task_run, state) -> bool:
    """Retry what may pass on a second try (the tracking store busy, restarting, unreachable), not
    another NamelangError: it says what the user has to do (e.g. train a model first), and a retry
    would only say it again, later."""
    try:
        state.result()
    except TrackingError:
        return True
    except NamelangError:
        return False
    except Exception:  # noqa: BLE001 - any other failure may be transient
        return True
    return True
