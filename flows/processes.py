"""Process plumbing shared by the CLI's commands: children that die with namelang, stop signals
other than Ctrl-C handled like it, and a server's stop signals passed on to its whole group."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

_PR_SET_PDEATHSIG = 1


def stop_with_parent() -> Callable[[], object] | None:
    """Linux: a function for a child to call between fork and exec, so that it gets SIGTERM when
    namelang dies, even by SIGKILL (mlflow does the same for uvicorn); looked up here, in the
    parent, since loading a library in a forked child can deadlock. None elsewhere."""
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP (systemd, `kill`, a closed terminal), raised as Ctrl-C's KeyboardInterrupt is,
    so that the same clean-up runs: the flow run is marked Crashed, temp files are removed and the
    temporary Prefect API stops. Unhandled, either signal ends Python without any clean-up."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def ctrl_c_not_lost() -> Iterator[None]:
    """Within the block, Ctrl-C (and SIGTERM or SIGHUP where a handler raises `Stopped`) comes out as
    its KeyboardInterrupt even when a library turned it into an error of its own on the way up
    (pydantic's serialiser makes a PydanticSerializationError of it, with no cause): the stop
    signals' handlers note what they raise. Signals Python does not handle are left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[KeyboardInterrupt] = []

    def noting(previous: Callable[[int, object], object]) -> Callable[[int, object], None]:
        def handler(signum: int, frame: object) -> None:
            try:
                previous(signum, frame)
            except KeyboardInterrupt as exc:
                noted.append(exc)
                raise
        return handler

    stops = [s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None))
             if s is not None and callable(signal.getsignal(s))]
    previous = {s: signal.signal(s, noting(signal.getsignal(s))) for s in stops}
    try:
        yield
    except Exception:
        if noted:  # the error a stop became: the stop it was
            raise noted[0] from None
        raise
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler)


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """128 + the signal's number, as a shell reports a process a signal ended: 130 for Ctrl-C."""
    return 128 + getattr(interrupt, "signum", signal.SIGINT)


@contextlib.contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise `Stopped` (signal handlers can only be set from the
    main thread; elsewhere the block runs as it is)."""
    signals = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None]
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame) -> None:
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run_forwarding_signals(cmd: list[str], env: dict[str, str]) -> int:
    """Run a server in a process group of its own and pass SIGINT, SIGTERM and SIGHUP on to the whole
    group: `mlflow models serve` runs uvicorn as its child, which a signal to this process alone
    (systemd, docker stop, kill, a closed terminal) would leave serving. Exit code: 0 when a signal
    stopped it, else the server's (128 + signal number if a signal killed it)."""
    child: subprocess.Popen | None = None
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                # first SIGTERM, whatever came: uvicorn stops as gracefully on it, and mlflow's CLI, handed
                # a SIGINT, ends the log with click's "Aborted!"; then SIGINT, as a second Ctrl-C is
                # uvicorn's sign to stop waiting for requests in flight
                os.killpg(child.pid, signal.SIGTERM if len(received) == 1 else signal.SIGINT)

    previous = {sig: signal.signal(sig, forward) for sig in _STOP_SIGNALS}  # before the child exists: no gap
    try:
        child = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=stop_with_parent())
        if received:  # a signal came while it started
            os.killpg(child.pid, signal.SIGTERM)
        code = child.wait()
    finally:
        if not received:  # once stopping, a further Ctrl-C lands in `forward`, not in a traceback
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if child is not None:
            with contextlib.suppress(ProcessLookupError):  # whatever the server left behind in its group
                os.killpg(child.pid, signal.SIGTERM)
    if received:
        return 0
    return 128 - code if code < 0 else code
