"""What the multi-node Ray test runs inside Ray workers (imported through `Call.sys_path`)."""

from __future__ import annotations

import time
from pathlib import Path


def where(seconds: float, n: int, marks: str | None = None) -> dict:
    """Say which Ray node runs this (in `marks` at the start, and in the result at the end)."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    if marks is not None:
        Path(marks, f"{n}-{node}").touch()
    time.sleep(seconds)
    return {"n": n, "node": node}
