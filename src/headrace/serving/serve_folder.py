"""The serve folder of a replica pool (replica configurations, request scratch): named after
the machine and the front's pid, so that a front started later removes the folders of fronts
killed with -9, as storage sweeps the temp files of dead writers."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from headrace.storage.temp_names import machine_tag

logger = logging.getLogger("headrace.serving")
PREFIX = "headrace-serve-"


def _owner_is_dead(name: str) -> bool:
    """True when `name` is a serve folder of this machine whose front is gone."""
    tag, _, rest = name[len(PREFIX) :].partition(".")
    pid = rest.partition("-")[0]
    if tag != machine_tag() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # EPERM: alive, another user's
    return False


def sweep_dead() -> int:
    """Remove the serve folders that fronts no longer running left behind; how many."""
    removed = 0
    with contextlib.suppress(OSError), os.scandir(tempfile.gettempdir()) as entries:
        for entry in entries:
            if entry.name.startswith(PREFIX) and _owner_is_dead(entry.name):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
    if removed:
        logger.info("removed %d serve folders left by stopped servers", removed)
    return removed


def make() -> Path:
    """A fresh serve folder for this process, once the dead ones are swept."""
    sweep_dead()
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{machine_tag()}.{os.getpid()}-"))
