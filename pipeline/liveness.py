"""Is the process that started a run still alive? A run killed so hard that it could say nothing
(SIGKILL, the out-of-memory killer) leaves its records open; a later process tells from these tags
whether the one that wrote them is gone.

A pid alone is not enough: pids are reused, and a container or another machine has pids of its
own. So a process is named by its host, its machine, its boot, its pid namespace, its pid and its
start time, and judged only where host, machine and pid namespace match ours (two machines may share
a name, "localhost" say, and every Linux machine's first pid namespace has the same number); then a
boot of its own means it is gone, else its pid and start time tell. Otherwise nothing can be known here.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

HOST_TAG, PID_TAG = "namelang.host", "namelang.pid"
BOOT_TAG, PID_NAMESPACE_TAG = "namelang.boot_id", "namelang.pid_namespace"
MACHINE_TAG = "namelang.machine_id"
# seconds after boot, not a wall-clock time: psutil's create_time adds the boot time, which moves
# when the clock is stepped (NTP, a resumed VM), so a live process would seem to have started later
STARTED_TAG = "namelang.process_started_s_after_boot"
SAME_START_S = 0.1  # the kernel counts start times in ticks (10 ms); a reused pid starts far later


def this_process() -> dict[str, str]:
    """Tags naming this process."""
    import psutil  # here, not at the top: pipeline.atomic, which every logged model carries, uses this module

    return {HOST_TAG: socket.gethostname(), MACHINE_TAG: machine_id(), BOOT_TAG: _boot_id(),
            PID_NAMESPACE_TAG: pid_namespace(), PID_TAG: str(os.getpid()),
            STARTED_TAG: repr(_started_after_boot(psutil.Process()))}


def process_gone(tags: dict[str, str]) -> bool:
    """True only when the process the tags name is known to be dead: it ran here (same host, and on
    Linux the same machine and pid namespace) and, since this boot, no living process has its pid and
    start time; a zombie (killed, not yet reaped) is dead. Anywhere else, or without the tags, False."""
    import psutil

    machine = machine_id()
    try:
        pid, started = int(tags[PID_TAG]), float(tags[STARTED_TAG])
        here = (tags[HOST_TAG], tags[PID_NAMESPACE_TAG]) == (socket.gethostname(), pid_namespace())
        boot = tags[BOOT_TAG]
    except (KeyError, ValueError):
        return False
    # a run recorded before the machine was (namelang before 2026-12-02): as then, by host and namespace
    if not here or tags.get(MACHINE_TAG, machine) != machine:
        return False
    now = _boot_id()
    if boot and now and boot != now:
        # this machine rebooted since: every process of then is gone; without a machine id to tell, the boot
        # may be another machine's of this name (a run recorded before the tag: judged as then, a reboot)
        return bool(machine) or MACHINE_TAG not in tags
    try:
        process = psutil.Process(pid)
        return abs(_started_after_boot(process) - started) > SAME_START_S or process.status() == psutil.STATUS_ZOMBIE
    except psutil.ZombieProcess:
        return True
    except psutil.NoSuchProcess:
        return not _signalable(pid)  # /proc mounted hidepid hides other users' living processes
    except psutil.AccessDenied:  # another user's process: alive
        return False


def _started_after_boot(process) -> float:
    """Seconds from boot to the start of `process` (a psutil.Process)."""
    import psutil

    return process.create_time() - psutil.boot_time()


def _signalable(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and belongs to someone else
        return True
    return True


def _boot_id() -> str:
    """Linux's id of this boot; "" where there is none."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def machine_id() -> str:
    """systemd's id of this installation (two machines of one name differ in it, unless cloned from one
    image that kept it); "" where there is none (no file, an empty one, systemd's `uninitialized`)."""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            found = Path(path).read_text().strip()
        except OSError:
            continue
        if found and found != "uninitialized":
            return found
    return ""


def pid_namespace() -> str:
    """Which pid namespace this process sees (a container has its own, even with the host's name); "" off Linux."""
    try:
        ns = os.stat("/proc/self/ns/pid")
    except OSError:
        return ""
    return f"{ns.st_dev}:{ns.st_ino}"
