"""Tying a worker process's life to its parent's, and keeping group signals away from it.

Linux only for the parent-death signal (`PR_SET_PDEATHSIG`); elsewhere the worker still ends
when its call pipe closes, but a running call is not interrupted.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1
_LIBC = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError):
        _LIBC = ctypes.CDLL(None, use_errno=True)


def die_with_parent(expected_parent: int | None) -> None:
    """Have the kernel SIGKILL this process when its parent exits (`kill -9` included).

    `expected_parent` is the parent's pid when the process was forked: if the parent is already
    gone (it died between fork and here), nobody would signal us, so exit now."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(137)


def release_fork_server(keep: set[int] | None = None) -> None:
    """Let go of the fork server's `alive` pipe, which multiprocessing hands to every process it
    forks (so that they could use the same server). The server exits when every holder of that
    pipe has closed it: while a busy worker held it, the server outlived a `kill -9`ed
    coordinator and so did the worker. A handler that needs a fork server starts its own."""
    from multiprocessing import forkserver

    server = forkserver._forkserver
    fd = getattr(server, "_forkserver_alive_fd", None)
    if isinstance(fd, int) and fd not in (keep or set()):
        with contextlib.suppress(OSError):
            os.close(fd)
        server._forkserver_alive_fd = None


def _ignore(signum: int, frame: object) -> None:
    """SIGTERM/SIGINT for a worker: its coordinator decides when it stops (by draining it)."""


def shield_from_group_signals() -> None:
    """Own process group, and SIGTERM/SIGINT ignored.

    Own group: `kill -TERM -PGID`, `timeout` and Ctrl-C at the terminal signal the coordinator's
    group, not ours, and we can kill everything a handler started with one `killpg`. Ignored
    through a Python handler rather than SIG_IGN: programs a handler runs get the default
    dispositions back at exec, so they can still be terminated."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    signal.signal(signal.SIGTERM, _ignore)
    signal.signal(signal.SIGINT, _ignore)


def kill_group(pid: int | None) -> None:
    """SIGKILL a worker and everything in its process group (what its handler started)."""
    if not pid:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def fork_server_pid() -> int | None:
    """The fork server's pid: the parent of every worker (started if it is not running)."""
    from multiprocessing import forkserver

    server = forkserver._forkserver
    try:
        forkserver.ensure_running()
    except ChildProcessError:
        # the server's pid was reaped by someone else (a waitpid on all children, psutil's
        # wait_procs): multiprocessing cannot tell it is gone, so forget it and start anew
        with server._lock:
            if isinstance(server._forkserver_alive_fd, int):
                with contextlib.suppress(OSError):
                    os.close(server._forkserver_alive_fd)
            server._forkserver_alive_fd = None
            server._forkserver_address = None
            server._forkserver_pid = None
        forkserver.ensure_running()
    pid = getattr(server, "_forkserver_pid", None)
    return pid if isinstance(pid, int) else None
