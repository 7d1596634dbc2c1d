"""Which failed tasks are worth another try, and how often: the flows' retry policies, in one place."""

from __future__ import annotations

from prefect import Task
from prefect.client.schemas.objects import State, TaskRun
from prefect.tasks import exponential_backoff

from pipeline.errors import NamelangError, TransientError, is_programming_error, refused_for_good


def worth_retrying(task: Task, task_run: TaskRun, state: State) -> bool:
    """Retry what may pass on a second try (the tracking store busy, restarting, unreachable; a
    download cut off or answered with a 5xx), not another NamelangError: it says what the user has
    to do (e.g. train a model first, fix a URL that gives 404), and a retry would only say it again,
    later; nor a bug (a TypeError, a KeyError, lists that do not line up), nor the tracking store's
    refusal of a run that is gone, both of which would fail again."""
    try:
        state.result()
    except TransientError as exc:  # our word for the store failing: unless what it wraps says no retry mends it
        return not refused_for_good(exc.__cause__)
    except NamelangError:
        return False
    except Exception as exc:  # noqa: BLE001 - any other failure may be transient
        return not (is_programming_error(exc) or refused_for_good(exc))
    return True


# Both retry only failures `worth_retrying`.
# A training run's downloads and tracking-store steps: 3 more tries, backing off exponentially (about
# 40 s in all), which lets a restarting tracking server come back.
RETRY_TRANSIENT = {"retries": 3, "retry_delay_seconds": exponential_backoff(backoff_factor=2),
                   "retry_jitter_factor": 0.2, "retry_condition_fn": worth_retrying}
# A batch prediction's model lookup, which someone may be waiting on (`namelang batch`): 2 more tries,
# 10 s in all.
RETRY_TRANSIENT_QUICK = {"retries": 2, "retry_delay_seconds": [2, 8], "retry_condition_fn": worth_retrying}
