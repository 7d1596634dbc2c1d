"""How our messages reach the user: a bad-input error in one line, a bug with its traceback.

Prefect logs a failed task's or flow's exception with its traceback, chained causes and all (some
240 lines for one bad byte in a names file, repeated for the task, its parent and the flow). A
NamelangError that the input explains already names the file, line and problem; its records keep
their message and lose the traceback, in the terminal and in the Prefect UI alike. Any other
exception, or a NamelangError wrapping one (maybe a bug), keeps it. Our warnings, likewise, are
one `warning:` line in the processes our entry points start (`warnings_in_one_line`).
"""

from __future__ import annotations

import functools
import logging
import os
import uuid
import warnings
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from pipeline.errors import NamelangWarning, explained_by_input, hide_credentials

RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")
P = ParamSpec("P")
R = TypeVar("R")


# Prefect's process that runs a deployment's flow logs this after the flow's own failure line; for
# an input error it would read as a bug ("unexpected"), and the flow's line has already said it all
_ENGINE_EXIT = "Engine execution exited with unexpected exception"


class UserErrorsInOneLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and (explained_by_input(record.exc_info[1]) or _bad_parameters(record.exc_info[1])):
            if record.getMessage() == _ENGINE_EXIT:
                return False
            record.exc_info, record.exc_text = None, None
        return True


# Prefect's engine says this on its own logger, before the run's context exists: a deployment's run
# refusing its parameters said why in the serving terminal only, not in the run's log in the UI
_BAD_PARAMETERS = "Validation of flow parameters failed"


class ParameterErrorsInTheRunLog(logging.Filter):
    """Sends the engine's "parameters refused" line to the run's log, by the run id the runner gives the
    run's process (said once: the run logger prints to the terminal too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        run_id = os.environ.get("PREFECT__FLOW_RUN_ID")
        if not (run_id and record.getMessage().startswith(_BAD_PARAMETERS)):
            return True
        # the run logger's terminal format names the run: without its name, logging printed three chained
        # tracebacks ("Formatting field not found in record: 'flow_run_name'") in the serving terminal
        logging.getLogger("prefect.flow_runs").error("%s", record.getMessage(), extra={
            "flow_run_id": run_id, "flow_run_name": _flow_run_name(run_id)})
        return False


# Prefect's flow logs this just before the engine's line, with pydantic's raw errors and every
# parameter (the whole configuration): a deployment's run says it again in the engine's one line
_PREFECT_PARAMETER_DUMP = "Parameter validation failed for flow "


class NoParameterDump(logging.Filter):
    """Leaves out that dump in a deployment's run process (reads the record's text unformatted: a filter
    that formats a bad log call raises into the caller, and Prefect's line is an f-string)."""

    def filter(self, record: logging.LogRecord) -> bool:
        dump = isinstance(record.msg, str) and record.msg.startswith(_PREFECT_PARAMETER_DUMP)
        return not (dump and os.environ.get("PREFECT__FLOW_RUN_ID"))


def _flow_run_name(run_id: str) -> str:
    """The run's name, as its log lines show it; its id when the API cannot say (a deployment's run
    always has an API: without one, asking would start a temporary server)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        return run_id
    try:
        with get_client(sync_client=True) as client:
            return client.read_flow_run(uuid.UUID(run_id)).name
    except Exception:  # noqa: BLE001 - a name for a log line: the message matters, not how the run is called
        return run_id


class NoCredentials(logging.Filter):
    """No URL's `user:password@` in a run's log: MLflow quotes its tracking URI whole in its errors
    ("API request to http://user:password@host/... failed"), and Prefect logs a failed task's
    exception, causes and all, to the terminal and the UI."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad log call: logging's handlers report it, a filter must not raise
            return True
        if hide_credentials(message) != message:
            record.msg, record.args = hide_credentials(message), None
        if record.exc_info and record.exc_info[1] is not None:  # what the handlers' formatters print for it
            record.exc_text = hide_credentials(logging.Formatter().formatException(record.exc_info))
        return True


def credentials_hidden(step: Callable[P, R]) -> Callable[P, R]:
    """A task's step whose errors carry no URL's `user:password@`: Prefect keeps a failed task's
    exception text as its state message (the run's page in the UI), and MLflow's errors quote the
    tracking URI whole. The exception keeps its type and its error code, which decide a retry."""

    @functools.wraps(step)
    def hiding(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return step(*args, **kwargs)
        except Exception as exc:
            _hide_credentials_in(exc)
            raise

    return hiding


def _hide_credentials_in(exc: BaseException) -> None:
    """Rewrite the text of `exc` and of what it wraps (our TrackingError wraps MLflow's error), which
    Prefect persists with the failed state."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        hidden = tuple(hide_credentials(a) if isinstance(a, str) else a for a in exc.args)
        if hidden != exc.args:
            exc.args = hidden
            if isinstance(getattr(exc, "message", None), str):  # MlflowException's own copy
                exc.message = hide_credentials(exc.message)
        exc = exc.__cause__ or exc.__context__


def _bad_parameters(exc: BaseException | None) -> bool:
    """Parameters a deployment's run was given that the server let through (a check across fields,
    split fractions that do not sum to 1, is not in the JSON schema it checks): the run's own check
    names each one, so the traceback through Prefect's engine adds nothing."""
    from prefect.exceptions import ParameterTypeError

    return isinstance(exc, ParameterTypeError)


def install() -> None:
    """Filter Prefect's run loggers (once per process; Prefect's logging setup keeps logger filters),
    and send our warnings raised inside a run to its log."""
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        for kind in (UserErrorsInOneLine, NoCredentials):  # in this order: the first may drop the traceback
            if not any(isinstance(f, kind) for f in logger.filters):
                logger.addFilter(kind())
    for name, kind in (("prefect.engine", ParameterErrorsInTheRunLog), ("prefect.flows", NoParameterDump)):
        logger = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())
    if warnings.showwarning is not _into_run_log:
        global _shown_before
        _shown_before = warnings.showwarning
        warnings.showwarning = _into_run_log


_shown_before = warnings.showwarning


def _into_run_log(message, category, filename, lineno, file=None, line=None) -> None:
    """Our warnings raised inside a flow or task run (an empty file, nothing to resume, a language left
    untested) go to that run's log: the Prefect UI shows them, and so does a terminal running the flow.
    A deployment's run went on in a process whose stderr only the serving terminal saw. Any other
    warning, or one outside a run, is shown as before. (A `warnings.catch_warnings(record=True)`, as
    pytest's, puts Python's own function back for its duration: it records them all.)"""
    if issubclass(category, NamelangWarning):
        logger = _run_logger()
        if logger is not None:
            logger.warning("%s", message)
            return
    _shown_before(message, category, filename, lineno, file, line)


def _run_logger() -> logging.LoggerAdapter | None:
    from prefect.context import FlowRunContext, TaskRunContext
    from prefect.logging import get_run_logger

    if TaskRunContext.get() is None and FlowRunContext.get() is None:
        return None
    return get_run_logger()


_python_formatwarning = warnings.formatwarning


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Our warnings (a file that gave no names, nothing to resume) are sentences for the user: one
    line, no source line echoed; other libraries' keep Python's format, which says where they come from."""
    if issubclass(category, NamelangWarning):
        return f"warning: {message}\n"
    return _python_formatwarning(message, category, filename, lineno, line)


def warnings_in_one_line() -> None:
    """For an entry point's own process (the CLI, `python -m flows.serve`): a library importing
    `flows` (a test session, a notebook) keeps its warnings format."""
    warnings.formatwarning = _one_line_warning

