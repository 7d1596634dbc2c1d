"""Process plumbing shared by the CLI's commands: children that die with namelang, and stop
signals other than Ctrl-C handled like it."""

from __future__ import annotations

import contextlib
import ctypes
import signal
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
