"""The one exception type for problems a user can cause (bad input, missing model, bad checkpoint)."""

from __future__ import annotations

from pathlib import Path


class NamelangError(Exception):
    """A user-facing error: says which file, which line and what is wrong, in one line."""

    def __init__(self, problem: str, file: str | Path | None = None, line: int | None = None):
        self.problem = problem
        self.file = str(file) if file is not None else None
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file or ""
        if self.file and self.line is not None:
            where = f"{self.file}:{self.line}"
        return f"{where}: {self.problem}" if where else self.problem

    def __reduce__(self):  # keep file/line when pickled (Prefect results, subprocesses)
        return (type(self), (self.problem, self.file, self.line))


class TrackingError(NamelangError):
    """The tracking store failed (unreachable, busy, a server error): unlike other user-facing
    errors, one that may pass on a second try, so orchestration may retry it."""
