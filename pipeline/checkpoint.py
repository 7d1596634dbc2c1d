"""Per-epoch training checkpoints: written atomically, on a background thread.

A checkpoint holds the weights, the optimizer's moments and the best weights so far (about
70 MB with the default n-gram table); serializing and syncing that took about 6% of a CPU
training run and would take a larger share of a fast GPU epoch. The writer copies the state
(a memory copy, milliseconds) and lets the next epoch train while the copy goes to disk.
At most one write is in flight, so files land in epoch order, and leaving the writer waits for
the last one: a run that returns, or fails, leaves its latest checkpoint complete on disk.
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from types import TracebackType

from pipeline.errors import NamelangError, typed_first_line
from pipeline.torch_files import load_torch_file, save_torch_file

CHECKPOINT_FORMAT = 1


def load_checkpoint(path: Path) -> dict:
    saved = load_torch_file(path, "checkpoint", "; delete it or train without --resume")
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        found = saved.get("format") if isinstance(saved, dict) else type(saved).__name__
        raise NamelangError(f"not a namelang checkpoint of format {CHECKPOINT_FORMAT} (found {found!r}); delete "
                            "it or train without --resume", path)
    return saved


class CheckpointWriter:
    """Writes checkpoints to one path in the background; use as a context manager. Without a path
    (checkpoints off), `save` writes nothing."""

    def __init__(self, path: Path | None):
        self.path = None if path is None else Path(path)
        self._written: threading.Event | None = None  # set when the write in flight has ended
        self._error: BaseException | None = None

    def save(self, state: dict, best_state: dict) -> None:
        """Write `state` plus `best_state` once the previous write is done.

        `state` is copied now (training goes on changing its tensors in place); `best_state` is
        not: the training loop replaces it with a new copy, never changes it.
        """
        self.wait()
        if self.path is None:
            return
        payload = {"format": CHECKPOINT_FORMAT, **copy.deepcopy(state), "best_state": best_state}
        written = threading.Event()
        # not a daemon: an interpreter that exits (after Ctrl-C, say) still finishes the file first
        thread = threading.Thread(target=self._write, args=(payload, written), name="namelang-checkpoint")
        try:
            self._written = written
            thread.start()
        except BaseException:  # a Ctrl-C: waited for only if the thread runs, else `wait` would wait for ever
            if thread.ident is None:
                self._written = None
            raise

    def _write(self, payload: dict, written: threading.Event) -> None:
        assert self.path is not None
        try:
            save_torch_file(payload, self.path)
        except BaseException as exc:  # noqa: BLE001 - handed to the training thread by `wait`
            self._error = exc
        finally:
            written.set()

    def wait(self) -> None:
        """Block until the write in flight is on disk; raise its error, if it failed.

        Waits on an event, not `Thread.join`: a join interrupted by Ctrl-C marks the thread as
        finished while it still writes, and the wait on the way out would then not wait."""
        if self._written is not None:
            self._written.wait()
            self._written = None
        if self._error is not None:
            error, self._error = self._error, None
            detail = error.problem if isinstance(error, NamelangError) else typed_first_line(error)
            raise NamelangError(f"could not write the checkpoint ({detail})", self.path) from error

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.wait()
        except NamelangError:
            if exc_type is None:
                raise  # otherwise the error already on its way out is the one to report
