"""A temporary Prefect API for one command, in a session of its own.

Without `PREFECT_API_URL`, Prefect starts a temporary API server as a child process in the
terminal's process group, so Ctrl-C stops the server along with the flow. The flow's engine then
spends minutes retrying to report the interrupt to an API that is gone, prints connection
tracebacks, and leaves the flow run Running for good. Starting that same server first (Prefect's
own `SubprocessASGIServer`, the instance its clients look up) in a new session keeps it up until
the flow has recorded the interrupt and its logs are sent; Prefect stops it when Python exits.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import warnings
from collections.abc import Iterator

import httpx
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

from flows.processes import ctrl_c_not_lost, stop_with_parent
from pipeline.errors import NamelangWarning, TransientError, typed_first_line

# Prefect waits 20 s for it; a fresh PREFECT_HOME (its database created) on a busy 2-core machine
# took longer, and the command failed with Prefect's traceback
TEMPORARY_API_STARTUP_S = 90.0


def configured_api() -> bool:
    """Whether `PREFECT_API_URL` names an API; one that does not answer stops the command in one
    line, before a flow starts: Prefect's engine would fail on it with a long connection traceback.
    (A server stopped while `PREFECT_API_URL` stays exported in the shell is the usual cause.)"""
    url = PREFECT_API_URL.value()
    if not url:
        return False
    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        raise TransientError(f"no Prefect API answers at PREFECT_API_URL ({typed_first_line(problem)}): start it "
                             "(prefect server start), or unset PREFECT_API_URL to use a temporary local one", url)
    return True


@contextlib.contextmanager
def prefect_api() -> Iterator[None]:
    """The configured API if there is one and it answers; else a temporary server that a Ctrl-C
    does not reach."""
    if configured_api():
        yield
        return
    start_temporary_api()
    yield


def start_temporary_api() -> None:
    """Prefect's temporary API server, started now, in a session of its own."""
    from prefect.server.api.server import SubprocessASGIServer  # here: importing it takes over a second

    server = SubprocessASGIServer()
    popen = subprocess.Popen
    # Prefect offers no option for the child's session; it calls subprocess.Popen once, here
    # and it dies with namelang however namelang ends, even by SIGKILL, where atexit never runs
    subprocess.Popen = functools.partial(popen, start_new_session=True, preexec_fn=stop_with_parent())
    timeout = max(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value(), TEMPORARY_API_STARTUP_S)
    try:
        with ctrl_c_not_lost():  # Prefect's settings serialiser makes an error of its own of a Ctrl-C
            server.start(timeout=timeout)  # registers its own stop with atexit: after Prefect's log workers drained
    # Prefect's "Timed out while attempting to connect to ephemeral ...", "Unable to find an available
    # port", or its health check's error status
    except (RuntimeError, httpx.HTTPError) as exc:
        process = getattr(server, "server_process", None)
        exited = None if process is None else process.poll()
        server.stop()  # not left starting up behind the error (a notebook's kernel lives on)
        problem = (f"did not start within {timeout:.0f} s" if "Timed out" in str(exc)
                   else f"could not start ({typed_first_line(exc)})")
        raise TransientError(f"the temporary Prefect API {problem}"
                             + (f" (its process exited with code {exited})" if exited is not None else "")
                             + ": try again, or start a server (prefect server start) and set PREFECT_API_URL"
                             ) from exc
    finally:
        subprocess.Popen = popen
    process = getattr(server, "server_process", None)  # Prefect's attribute: not part of its API
    if process is not None and not in_own_session(process.pid):
        # Prefect started it some other way (an upgrade): say so, rather than hang on the next Ctrl-C
        warnings.warn("the temporary Prefect API shares this terminal's Ctrl-C, which will stop it before the "
                      "flow can record the interrupt; start a server (prefect server start) and set "
                      "PREFECT_API_URL to avoid that", NamelangWarning, stacklevel=4)


def in_own_session(pid: int) -> bool:
    """Whether process `pid` leads a session of its own, out of reach of the terminal's Ctrl-C (true
    where sessions do not exist)."""
    if not hasattr(os, "getsid"):
        return True
    try:
        return os.getsid(pid) == pid
    except ProcessLookupError:  # it has already exited: Prefect's start() would have failed
        return True
