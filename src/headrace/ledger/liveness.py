"""Whether the process that holds a lease or runs as a coordinator is still alive.

Shared by every lease table (`ledger.ownership`, `ledger.pipeline_leases`) and by the
coordinator registry in `Ledger`: a holder on this host is checked directly (a `kill -9` frees
its leases at once); one on another host cannot be checked from here, so the lease's expiry
decides.
"""

from __future__ import annotations

import os
import socket


def holder_alive(host: str, pid: int, stopped_at: float | None = None) -> bool:
    """False when the holder stopped (`stopped_at` set) or is a process of this host that no
    longer exists (or is a zombie); True otherwise, other hosts included."""
    if stopped_at is not None:
        return False
    if host != socket.gethostname():
        return True  # cannot tell from here; the lease expiry decides
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not reaped yet still answers kill(0)
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
