"""Which failed tasks are worth another try: shared by the flows' download and tracking-store tasks."""

from __future__ import annotations

from pipeline.errors import NamelangError, TransientError, is_programming_error


def worth_retrying(task, task_run, state) -> bool:
    """Retry what may pass on a second try (the tracking store busy, restarting, unreachable; a
    download cut off or answered with a 5xx), not another NamelangError: it says what the user has
    to do (e.g. train a model first, fix a URL that gives 404), and a retry would only say it again,
    later; nor a bug (a TypeError, a KeyError, lists that do not line up), which would fail again."""
    try:
        state.result()
    except TransientError:
        return True
    except NamelangError:
        return False
    except Exception as exc:  # noqa: BLE001 - any other failure may be transient
        return not is_programming_error(exc)
    return True
