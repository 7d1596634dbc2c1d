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
import subprocess
from collections.abc import Iterator

from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL


@contextlib.contextmanager
def prefect_api() -> Iterator[None]:
    """The configured API if there is one; else a temporary server that a Ctrl-C does not reach."""
    if PREFECT_API_URL.value():
        yield
        return
    server = SubprocessASGIServer()
    popen = subprocess.Popen
    # Prefect offers no option for the child's session; it calls subprocess.Popen once, here
    subprocess.Popen = functools.partial(popen, start_new_session=True)
    try:
        server.start()  # registers its own stop with atexit: after Prefect's log workers have drained
    finally:
        subprocess.Popen = popen
    yield
