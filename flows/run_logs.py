"""Prefect's run logs: a bad-input error in one line, a bug with its traceback.

Prefect logs a failed task's or flow's exception with its traceback, chained causes and all (some
240 lines for one bad byte in a names file, repeated for the task, its parent and the flow). A
NamelangError that the input explains already names the file, line and problem; its records keep
their message and lose the traceback, in the terminal and in the Prefect UI alike. Any other
exception, or a NamelangError wrapping one (maybe a bug), keeps it.
"""

from __future__ import annotations

import logging

from pipeline.errors import explained_by_input

RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")


class UserErrorsInOneLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and explained_by_input(record.exc_info[1]):
            record.exc_info, record.exc_text = None, None
        return True


def install() -> None:
    """Filter Prefect's run loggers (once per process; Prefect's logging setup keeps logger filters)."""
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, UserErrorsInOneLine) for f in logger.filters):
            logger.addFilter(UserErrorsInOneLine())
