"""What the multi-node Ray test runs inside Ray workers (imported through `Call.sys_path`)."""

from __future__ import annotations

import time


def where(seconds: float, n: int) -> dict:
    """Sleep, then say which Ray node ran this."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    time.sleep(seconds)
    return {"n": n, "node": node}
