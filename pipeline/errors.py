"""The one exception type for problems a user can cause (bad input, missing model, bad checkpoint)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

# the `user:password@` or `token@` of any URL (a tracking server's, a database's), as libraries quote it:
# up to the authority's last `@`, as urllib reads it, so that a raw `@` inside a password is hidden too
_CREDENTIALS = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#\s]+@")


def hide_credentials(text: str) -> str:
    """`text` with each URL's user and password replaced by `***`: messages, logs and summaries are read
    by others (MLflow quotes a failed request's whole URL, `https://user:password@host/...`)."""
    return _CREDENTIALS.sub(r"\1***@", text)


def recordable_url(url: str) -> str:
    """A URL as it may be kept where others read it (the provenance, MLflow params and tags, the model
    card): no `user:password@`, and no query values, which for a presigned or tokened download are
    the secret (`?X-Amz-Signature=***`). Text that is not a URL is returned as it is."""
    parts = urlsplit(url)
    if not (parts.scheme and parts.netloc):
        return url
    # as written, not decoded: a bare `?TOKEN` is a secret too, and so may a fragment be
    query = "&".join(f"{part.split('=', 1)[0]}=***" if "=" in part else "***" for part in parts.query.split("&")
                     if part)
    return hide_credentials(urlunsplit(parts._replace(query=query, fragment="***" if parts.fragment else "")))


class NamelangError(Exception):
    """A user-facing error: says which file, which line and what is wrong, in one line; never a password
    from a URL in either."""

    def __init__(self, problem: str, file: str | Path | None = None, line: int | None = None):
        self.problem = hide_credentials(problem)
        self.file = hide_credentials(str(file)) if file is not None else None
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file or ""
        if self.file and self.line is not None:
            where = f"{self.file}:{self.line}"
        return f"{where}: {self.problem}" if where else self.problem

    def __reduce__(self):  # keep file/line when pickled (Prefect results, subprocesses)
        return (type(self), (self.problem, self.file, self.line))


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (its type's name when it has none), for messages,
    warnings and tags: libraries' messages often go on with SQL, stack dumps or request bodies that a
    one-line error does not want, and quote a URL's password (MLflow: "API request to
    https://user:password@host/... failed")."""
    return hide_credentials(next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__))


def validation_message(error: dict) -> str:
    """One of a pydantic ValidationError's `errors()` in its validator's own words: pydantic labels the
    text of a ValueError raised by a validator (ours, Prefect's) "Value error, "."""
    return error["msg"].removeprefix("Value error, ")


def typed_first_line(exc: BaseException) -> str:
    """`first_line` after the exception's type ("KeyError: 'state'"), the type alone when the
    message is empty: where the type tells what went wrong, as a library's bare message may not."""
    line = first_line(exc)
    return line if line == type(exc).__name__ else f"{type(exc).__name__}: {line}"


def is_programming_error(exc: BaseException) -> bool:
    """Whether `exc` says the code is wrong (a wrong type, a missing key, lists that do not line up)
    rather than that the outside world failed: a second try would fail the same way, only later and
    with its traceback buried under the retries'."""
    bug = (TypeError, ValueError, AttributeError, LookupError, NameError, AssertionError, NotImplementedError,
           ArithmeticError)
    return isinstance(exc, bug) and not isinstance(exc, (OSError, UnicodeError, NamelangError))


# MLflow's error codes (an MlflowException's `error_code`, a tracking server's answer) for what is not
# there: a model, version or alias (the registry says INVALID_PARAMETER_VALUE for some), a run or
# experiment deleted (INVALID_PARAMETER_VALUE: "must be in the 'active' state")
MLFLOW_NOT_THERE = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})
# ... and what no retry mends: those, the SQLite store's "more than one run with this id", and credentials
# refused. Not BAD_REQUEST: the SQLite store says it for database errors that pass (a connection pool
# exhausted, a connection dropped), and so does a proxy's bare HTTP 400
_MLFLOW_REFUSED_FOR_GOOD = MLFLOW_NOT_THERE | {"INVALID_STATE", "UNAUTHENTICATED", "PERMISSION_DENIED"}
# credentials refused as a bare HTTP status: MLflow's artifact uploads and downloads raise requests'
# HTTPError, which carries the response and no error code
_HTTP_REFUSED_FOR_GOOD = frozenset({401, 403})


def refused_for_good(exc: BaseException) -> bool:
    """Whether the tracking store's refusal would be the same on every try (the run deleted, a value
    refused): retrying it, a flow's store step would fail only later, and training would carry on
    logging to a run that is gone."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return getattr(exc, "error_code", None) in _MLFLOW_REFUSED_FOR_GOOD or status in _HTTP_REFUSED_FOR_GOOD


class DamagedFileError(NamelangError):
    """A file that cannot be read as what it should be (a truncated checkpoint, a foreign model bundle):
    whatever the reading library raised on the way, the file is the cause and the message names it."""


class NamelangWarning(UserWarning):
    """Something the user should know that does not stop the run (an empty file, nothing to resume):
    the CLI prints these as one `warning:` line, other libraries' warnings in Python's format."""


class TransientError(NamelangError):
    """A failure of the outside world that may pass on a second try (unlike other user-facing
    errors, which say what the user has to change): orchestration may retry it."""


class TrackingError(TransientError):
    """The tracking store failed (unreachable, busy, a server error)."""


class DownloadError(TransientError):
    """A download failed on the way (connection, timeout, a cut-off transfer, a 5xx or 429 answer);
    a 404 or a file over the size limit is a plain NamelangError: retrying cannot mend it."""


# libraries whose exceptions are the outside world failing, in their own words (httpx wraps httpcore's
# errors, which wrap h11's, anyio's or the socket's): a cause of theirs is plumbing, not our bug
_TRANSPORT_LIBRARIES = {"httpx", "httpcore", "h11", "h2", "anyio", "ssl", "socket"}


def explained_by_input(exc: BaseException) -> bool:
    """Whether `exc` is a NamelangError whose causes, if any, are the outside world failing (a file,
    an archive, the network, a model that does not exist) or a damaged file: its one-line message says it all. One that
    wraps any other exception, anywhere down the chain, may be hiding a bug in our code, whose
    traceback matters."""
    import zipfile

    import pyarrow as pa

    outside = (OSError, EOFError, UnicodeError, zipfile.BadZipFile, zipfile.LargeZipFile, pa.ArrowInvalid)
    if not isinstance(exc, NamelangError):
        return False
    seen: set[int] = set()
    cause = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, DamagedFileError):  # what it wraps is the file's fault, in a library's words
            return True
        missing_model = getattr(cause, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"  # an MlflowException
        library = type(cause).__module__.split(".")[0]
        if not (isinstance(cause, (NamelangError, *outside)) or missing_model or library in _TRANSPORT_LIBRARIES):
            return False
        seen.add(id(cause))
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    return True
