"""Small functions the executor and coordinator tests run in worker processes."""

from __future__ import annotations

import os
import time


def add(a: int, b: int) -> int:
    return a + b


def fail(message: str) -> None:
    raise ValueError(message)


def sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


def hog(mb: int) -> int:
    block = bytearray(mb * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(5)
    return len(block)


def exit_hard(code: int) -> None:
    os._exit(code)


def pid() -> int:
    return os.getpid()
