"""Loops compiled with numba (the `fast` extra) for the stream operators, and what to do when
numba is missing, switched off or its cache is unusable: the operators then take their numpy
paths, which give the same answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("headrace.streams")


def compile_loops(*funcs: Callable[..., Any]) -> list[Callable[..., Any]] | None:
    """The functions compiled (lazily, on first call; cached beside their module), or None
    without numba or with its JIT switched off (`NUMBA_DISABLE_JIT`: the loops would run as
    Python, slower than the numpy paths)."""
    try:
        import numba
    except ImportError:
        return None
    if numba.config.DISABLE_JIT:
        return None
    try:
        return [CachedLoop(numba.njit, func) for func in funcs]
    except RuntimeError:  # no writable place for the cache (a read-only install): compile each run
        return [numba.njit(nogil=True)(func) for func in funcs]


class CachedLoop:
    """A loop compiled with numba's cache, compiled again without it if a call fails: numba
    raises on a cache file it cannot read (a truncated or corrupt one, numba issue 10434)
    rather than compiling again, which would fail every batch until someone deleted it. The
    loops raise nothing of their own, so a failing call failed before it ran."""

    def __init__(self, jit: Any, func: Callable[..., Any]) -> None:
        self._func = func
        self._call = jit(cache=True, nogil=True)(func)  # RuntimeError: nowhere to cache
        self._cached = True

    def __call__(self, *args: Any) -> Any:
        try:
            return self._call(*args)
        except Exception as exc:
            if not self._cached:
                raise
            log.warning(
                "numba's cache of %s failed (%r): compiled without it (delete the cache files, "
                "%s.%s-*.nbi and .nbc, to cache it again)", self._func.__name__, exc,
                self._func.__module__.rpartition(".")[2], self._func.__name__,
            )  # fmt: skip
            from numba import njit

            self._call, self._cached = njit(nogil=True)(self._func), False
            return self._call(*args)

    def __deepcopy__(self, memo: dict) -> CachedLoop:  # operators are copied from a template
        return self
