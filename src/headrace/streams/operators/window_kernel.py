"""The fixed windows' per-window sums as one compiled loop (numba, the `fast` extra), for the
numpy path in `windows.py`: grouping a batch's records (or the open windows and the pending
partials) by window start and summing their columns cost a dozen numpy calls, more than the
arithmetic of a thousand records.

Sums are taken in the rows' order, as `np.bincount` with weights and `np.add.at` take them, so
float sums are the same to the last bit as the numpy path's.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np

from headrace.streams.operators.compiled_loops import compile_loops


def group_sums(
    starts: np.ndarray, hop: int, floats: np.ndarray, ints: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct window starts in ascending order and, per start, the sums of each row of
    `floats` (k x n) and `ints` (m x n) over the records with that start. Starts are
    `align + j * hop`. No starts back (and nothing summed) when they are too sparse for
    counting: the caller sorts instead."""
    n = len(starts)
    low = starts[0]
    high = starts[0]
    for i in range(1, n):
        if starts[i] < low:
            low = starts[i]
        elif starts[i] > high:
            high = starts[i]
    top = (high - low) // hop
    if top > 4 * n + 64:
        empty = np.empty(0, np.int64)
        return empty, np.empty((len(floats), 0)), np.empty((len(ints), 0), np.int64)
    number = np.full(top + 1, -1, np.int64)
    for i in range(n):
        number[(starts[i] - low) // hop] = 0
    count = 0
    for j in range(top + 1):
        if number[j] == 0:
            number[j] = count
            count += 1
    ws = np.empty(count, np.int64)
    for j in range(top + 1):
        if number[j] >= 0:
            ws[number[j]] = low + hop * j
    fsums = np.zeros((len(floats), count))
    isums = np.zeros((len(ints), count), np.int64)
    for i in range(n):
        g = number[(starts[i] - low) // hop]
        for c in range(len(floats)):
            fsums[c, g] += floats[c, i]
        for c in range(len(ints)):
            isums[c, g] += ints[c, i]
    return ws, fsums, isums


@cache
def compiled() -> Callable[..., Any] | None:
    """`group_sums` compiled, or None without numba (the numpy calls are used instead)."""
    loops = compile_loops(group_sums)
    return None if loops is None else loops[0]
