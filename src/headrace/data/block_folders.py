"""The folder that holds a driver's blocks in shared memory: there only while its stages run.

Blocks pass between a driver and its workers as files in one folder per driver process
(`headrace.data.transport`). A block is unlinked when it is read, but the folder stayed for
good, and with it the blocks nobody read: those of a stage stopped midway, or written by a
worker finishing a task its driver had given up. /dev/shm is RAM, kept until reboot.

So the first stage of a driver to need the folder makes it and the last to finish removes it;
at exit it goes too (a stage whose iterator was never closed). The removal renames the folder
first, so a worker still writing afterwards fails instead of leaving a block behind. A driver
that could not clean up (`kill -9`, SIGTERM) leaves its folder; the next driver on the machine
sweeps it. The name says whose it is, as `headrace.storage.temp_names` names temps: the
machine tag (so that the pid means one process table), the pid, and the process's start time,
so that a pid reused by another process does not keep a dead driver's folder. A live driver's
folder is never swept; one of another machine sharing the folder is left alone.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
import uuid

from headrace.storage.temp_names import machine_tag

logger = logging.getLogger("headrace.data")

PREFIX = "headrace-data-"
_SHM = "/dev/shm"


def root() -> str:
    """Where block folders go: shared memory, or the temp folder where there is none."""
    if os.path.isdir(_SHM) and os.access(_SHM, os.W_OK):
        return _SHM
    return tempfile.gettempdir()


def start_time(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot ("0" where there is no
    /proc to tell); None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except FileNotFoundError:
        return None if os.path.isdir("/proc/self") else "0"
    except OSError:
        return "0"
    # the command name (field 2) may hold spaces and parentheses: count from its closing one
    return stat[stat.rindex(b")") + 2 :].split()[19].decode()


def folder_name(pid: int | None = None) -> str:
    """The name of the block folder of process `pid` (this one by default)."""
    pid = os.getpid() if pid is None else pid
    return f"{PREFIX}{machine_tag()}.{pid}.{start_time(pid) or '0'}"


def owner(name: str) -> tuple[int, str | None] | None:
    """(pid, start time) of the driver whose block folder is `name`, when the name says so
    and names this machine. The folders of older versions, `headrace-data-PID`, have no start
    time (None)."""
    if not name.startswith(PREFIX):
        return None
    rest = name[len(PREFIX) :]
    if rest.isdigit():
        return int(rest), None
    parts = rest.split(".")
    # a fourth part: the folder renamed for removal (`_remove`)
    if len(parts) not in (3, 4) or parts[0] != machine_tag():
        return None
    if not (parts[1].isdigit() and parts[2].isdigit()):
        return None
    return int(parts[1]), parts[2]


def owner_is_dead(name: str) -> bool:
    """Whether the driver of block folder `name` is provably gone (never for this process)."""
    found = owner(name)
    if found is None or found[0] == os.getpid():
        return False
    pid, started = found
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        pass  # EPERM: a live process of another user; its start time still tells
    if started is None or started == "0":
        return False
    now = start_time(pid)
    return now is not None and now != "0" and now != started


def sweep(folder: str | None = None) -> int:
    """Remove the block folders of dead drivers in `folder` (the root); how many."""
    folder = folder or root()
    try:
        with os.scandir(folder) as entries:
            names = [e.name for e in entries if e.name.startswith(PREFIX) and e.is_dir()]
    except OSError:
        return 0
    removed = 0
    for name in names:
        if owner_is_dead(name):
            shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
            if not os.path.lexists(os.path.join(folder, name)):
                removed += 1
                logger.info("removed %s, the block folder of a driver that died", name)
    return removed


def _remove(path: str) -> None:
    doomed = f"{path}.{uuid.uuid4().hex[:8]}"
    try:
        os.rename(path, doomed)
    except FileNotFoundError:
        return
    except OSError as exc:
        logger.warning("cannot remove block folder %s: %s", path, exc)
        return
    shutil.rmtree(doomed, ignore_errors=True)


class _Holder:
    """This process's block folder and how many stages use it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.path: str | None = None
        self.swept = False

    def acquire(self) -> str:
        with self.lock:
            if not self.swept:
                self.swept = True
                sweep()
            if self.users == 0:
                self.path = os.path.join(root(), folder_name())
                os.makedirs(self.path, exist_ok=True)
            self.users += 1
            assert self.path is not None
            return self.path

    def release(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users == 0 and self.path is not None:
                _remove(self.path)
                self.path = None

    def remove_at_exit(self) -> None:
        # no lock: a thread that held it at exit will not give it back
        if self.path is not None:
            _remove(self.path)
            self.path = None


_holder = _Holder()


def acquire() -> str:
    """This process's block folder, made if needed; `release` it when the stage is done."""
    return _holder.acquire()


def release() -> None:
    """The calling stage is done with the folder; the last one out removes it."""
    _holder.release()


def _forked() -> None:
    # a forked child has its own pid, so its own folder; the parent's stages are not its own
    global _holder
    _holder = _Holder()


os.register_at_fork(after_in_child=_forked)
atexit.register(lambda: _holder.remove_at_exit())
