"""Names of writes in progress, and sweeping the ones whose writer died.

An atomic write goes to a hidden temp name beside its target (`.headrace-tmp-…`) and is
renamed into place when complete. A writer killed midway (kill -9, a lost machine) leaves the
temp behind; nothing reads it, but it would stay forever. So the name says who wrote it: a
tag for this machine and process namespace, and the writer's pid. Whoever later walks the
folder removes a temp only when its writer is provably gone: same machine tag (so the pid
means the same process table) and no process with that pid. A pid reused by another process
only delays the sweep; a temp of another machine, or of the old unnamed format, is left alone.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import pathlib
import shutil
import socket
import stat as _stat
import uuid

from headrace.storage.beneath import walk
from headrace.storage.keys import RESERVED_PREFIX

logger = logging.getLogger("headrace.storage")

TEMP_PREFIX = RESERVED_PREFIX + "-tmp-"
# Writes in progress of the S3 endpoint (rclone's `serve s3`), which reserves these prefixes
# and hides them from its own listings; `Bucket.list` hides them too. Hidden names, so the
# change watcher skips them like every dot-name. Lower case: compared with lowered names.
FOREIGN_TEMP_PREFIXES = (".rclone_temp_", ".rclone_multipart_upload_")
# NAME_MAX is 255 bytes; the prefix, tags and uuid take under 60 of them.
_TAIL_BYTES = 120


@functools.cache
def machine_tag() -> str:
    """8 hex digits naming this host, boot and pid namespace: where a pid means one process."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(pathlib.Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=4).hexdigest()


def temp_name(final_name: str = "") -> str:
    """A fresh temp name for a write of `final_name` by this process."""
    tail = final_name.encode("utf-8")[:_TAIL_BYTES].decode("utf-8", "ignore")
    name = f"{TEMP_PREFIX}{machine_tag()}.{os.getpid()}.{uuid.uuid4().hex[:16]}"
    return f"{name}-{tail}" if tail else name


def writer_pid(name: str) -> int | None:
    """The pid of the process on this machine that wrote temp `name`, if the name says."""
    if not name.startswith(TEMP_PREFIX):
        return None
    head = name[len(TEMP_PREFIX) :].split("-", 1)[0]
    parts = head.split(".")
    if len(parts) != 3 or parts[0] != machine_tag() or not parts[1].isdigit():
        return None
    return int(parts[1])


def writer_is_dead(name: str) -> bool:
    pid = writer_pid(name)
    if pid is None or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # EPERM: alive, someone else's
    return False


def remove_if_dead(folder_fd: int, name: str) -> bool:
    """Remove temp `name` (a file or a folder) in the open folder when its writer is dead."""
    if not writer_is_dead(name):
        return False
    try:
        st = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
        if _stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=folder_fd)
        else:
            os.unlink(name, dir_fd=folder_fd)
    except FileNotFoundError:
        return False
    except OSError as exc:
        logger.warning("cannot remove %s, left by a writer that died: %s", name, exc)
        return False
    logger.info("removed %s, left by a writer that died", name)
    return True


def sweep_folder(path: str | os.PathLike[str]) -> int:
    """Remove the temps of dead writers directly inside local folder `path`; how many."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return 0
    try:
        with os.scandir(fd) as entries:
            names = [e.name for e in entries if e.name.startswith(TEMP_PREFIX)]
        return sum(remove_if_dead(fd, name) for name in names)
    finally:
        os.close(fd)


def sweep_tree(root: str | os.PathLike[str]) -> int:
    """Remove the temps of dead writers anywhere under local folder `root`; how many."""
    removed = 0

    def skipped(folder: int, name: str) -> None:
        nonlocal removed
        if name.startswith(TEMP_PREFIX):
            removed += remove_if_dead(folder, name)

    for _ in walk(str(root), skip_name=lambda name: name.startswith("."), on_skipped=skipped):
        pass
    return removed
