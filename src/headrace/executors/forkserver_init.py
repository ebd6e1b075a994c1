"""Imported by multiprocessing's fork server as a preload: shield it from its caller's signals.

The local executor's workers are forked by the fork server, so they die (PR_SET_PDEATHSIG) when
it does, and it dies with the coordinator: the kernel SIGKILLs it too (PR_SET_PDEATHSIG), so no
handler runs a moment longer, and multiprocessing's own `alive` pipe reaching EOF is the backstop
(the coordinator may have died before the fork server set its signal up). A signal
meant for the coordinator's process group — Ctrl-C, `kill -TERM -PGID`, `timeout`, systemd —
must not reach it, or it would take every worker and their running calls down at once; the
coordinator drains them instead. So the fork server starts its own session (also away from the
terminal) and ignores SIGTERM (SIGINT it already ignores).

Importing this module anywhere but inside the fork server does nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from multiprocessing import forkserver

from headrace.executors import lifetime


def _inside_fork_server() -> bool:
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is forkserver.main.__code__:
            return True
        frame = frame.f_back
    return False


if _inside_fork_server():
    lifetime.die_with_parent(None)
    with contextlib.suppress(OSError):  # already a session leader
        os.setsid()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # started with both blocked (LocalExecutor.start); pending ones are discarded, now ignored
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
