"""Dedup's rule as one compiled loop over a batch, in arrival order (numba, the `fast` extra).

The vectorised numpy path in `dedup.py` needs a sort and a dozen array passes per batch to apply
the rule record by record; a loop compiled with numba applies it literally, one record after the
other, on the same open-addressing table (the same arrays, the same free mark, linear probing).
Both give the same decisions and the same held keys; the runner uses this one when numba is
installed. Compiled code is cached beside this module, so only the first process on a machine
pays the compile (about a second); where the cache cannot be written (a read-only install) or
read (a corrupt file), each process compiles the loops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np

from headrace.streams.operators.compiled_loops import compile_loops


def decide_in_order(
    table_h1: np.ndarray,
    table_h2: np.ndarray,
    expiry: np.ndarray,
    wide: bool,
    free: np.uint64,
    h1: np.ndarray,
    h2: np.ndarray,
    times: np.ndarray,
    clock: int,
    ttl: int,
    keep: np.ndarray,
) -> int:
    """Decide each record in arrival order: find its key's slot (claiming a free one, expiry
    left as not held), keep it when the key is not held at its time (expiry at or before its
    time, or at or before its clock, the newest time before it), and then set the key's expiry
    to time + ttl. Returns how many slots were claimed."""
    mask = len(table_h1) - 1
    claimed = 0
    for i in range(len(h1)):
        a = h1[i]
        b = h2[i]
        at = np.int64(a & np.uint64(mask))
        while True:
            there = table_h1[at]
            if there == free:
                table_h1[at] = a
                if wide:
                    table_h2[at] = b
                claimed += 1
                break
            if there == a and (not wide or table_h2[at] == b):
                break
            at = (at + 1) & mask
        t = times[i]
        held = expiry[at]
        if t >= held or held <= clock:
            keep[i] = True
            expiry[at] = t + ttl
        if t > clock:
            clock = t
    return claimed


def insert_keys(
    table_h1: np.ndarray,
    table_h2: np.ndarray,
    expiry: np.ndarray,
    wide: bool,
    free: np.uint64,
    h1: np.ndarray,
    h2: np.ndarray,
    expires: np.ndarray,
) -> None:
    """Put keys that are not in the table (and differ from each other) in with their expiry:
    a rebuild without the expired keys."""
    mask = len(table_h1) - 1
    for i in range(len(h1)):
        at = np.int64(h1[i] & np.uint64(mask))
        while table_h1[at] != free:
            at = (at + 1) & mask
        table_h1[at] = h1[i]
        if wide:
            table_h2[at] = h2[i]
        expiry[at] = expires[i]


@dataclass(frozen=True)
class Kernels:
    decide: Callable[..., int]
    insert: Callable[..., None]


@cache
def compiled() -> Kernels | None:
    """The loops compiled, or None without numba (the numpy path is used instead)."""
    loops = compile_loops(decide_in_order, insert_keys)
    return None if loops is None else Kernels(*loops)
