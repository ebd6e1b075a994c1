"""Small functions the Ray executor tests run inside Ray workers.

Imported by the workers through `Call.sys_path` (this folder), not as part of a package.
"""

from __future__ import annotations

import os
import time


def add(a: int, b: int) -> int:
    return a + b


def fail(message: str) -> None:
    raise ValueError(message)


def nap(seconds: float, value: object = None) -> object:
    time.sleep(seconds)
    return value


def hog(chunk_mb: int = 16, chunks: int = 128, pause: float = 0.02) -> int:
    """Grow resident memory step by step, so a sampling watcher sees it cross a limit."""
    kept = []
    for _ in range(chunks):
        kept.append(b"\x01" * (chunk_mb * 1024 * 1024))  # touched pages, unlike bytearray(n)
        time.sleep(pause)
    return len(kept)


def exit_hard(code: int) -> None:
    os._exit(code)


def terminate_a_child() -> int:
    """Start a program and stop it with SIGTERM, as handlers that run tools do."""
    import subprocess

    child = subprocess.Popen(["sleep", "30"])
    child.terminate()
    return child.wait(timeout=5)
