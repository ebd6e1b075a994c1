"""Retry timing: exponential backoff with a cap and jitter, in one place.

Every retry loop in headrace waits `exponential(attempt, base, rate, cap)` seconds before retry
number `attempt` (1-based): `base * rate ** (attempt - 1)`, capped at `cap`. A power too large
for a float counts as infinite, so the cap still applies after any number of failures.

Jitter spreads clients that failed together (AWS architecture blog, "Exponential Backoff And
Jitter"); each takes the random number in [0, 1) from the caller, so a caller that must replay
(a state machine's history) can pass a seeded one:

- `full_jitter`: uniform in [0, delay) — Step Functions' `JitterStrategy: FULL`, the stream
  sources and the coordinator's stream threads;
- `equal_jitter`: half fixed, half random — function retries, which must never retry at once.

`Backoff` keeps the state of one retried thing (consecutive failures, when it may try again) for
loops that poll rather than sleep. This module is a leaf: it imports nothing of headrace's.
"""

from __future__ import annotations

import math
import random
import time

__all__ = ["Backoff", "equal_jitter", "exponential", "full_jitter"]


def exponential(attempt: int, base: float, rate: float = 2.0, cap: float | None = None) -> float:
    """Seconds before retry number `attempt` (1-based; below 1 counts as 1):
    `base * rate ** (attempt - 1)`, at most `cap` when given."""
    try:
        delay = float(base) * float(rate) ** max(attempt - 1, 0)
    except OverflowError:  # a long outage: the cap (if any) still holds
        delay = math.inf
    if cap is not None:
        delay = min(delay, float(cap))
    return delay


def full_jitter(delay: float, rand: float) -> float:
    """`delay` scaled by `rand` in [0, 1): a uniform wait in [0, delay)."""
    return delay * rand


def equal_jitter(delay: float, rand: float) -> float:
    """Half of `delay` fixed, the other half scaled by `rand` in [0, 1)."""
    return delay / 2 + delay / 2 * rand


class Backoff:
    """Exponential backoff with full jitter for something retried by a polling loop.

    After the k-th consecutive failure, wait a uniform random time in
    [0, min(cap, base * 2**(k-1))], but never less than `floor` (a source's normal interval,
    so a failure never makes it poll faster) nor less than a server's Retry-After. Without
    `jitter` the wait is the ceiling itself. `until` is on the `time.monotonic()` clock.
    """

    def __init__(
        self,
        base: float,
        cap: float,
        floor: float = 0.0,
        rng: random.Random | None = None,
        *,
        jitter: bool = True,
    ) -> None:
        if base <= 0 or cap <= 0:
            raise ValueError(f"backoff base and cap must be > 0 seconds, got {base!r}, {cap!r}")
        self.base = base
        self.cap = cap
        self.floor = floor
        self.jitter = jitter
        self.consecutive = 0
        self.until = 0.0  # time.monotonic() before which no new attempt may start
        self._rng = rng or random.Random()

    def ceiling(self, consecutive: int | None = None) -> float:
        """The largest delay after `consecutive` failures (default: the current count)."""
        k = self.consecutive if consecutive is None else consecutive
        if k <= 0:
            return 0.0
        return exponential(k, self.base, cap=self.cap)

    def failure(self, retry_after: float | None = None, now: float | None = None) -> float:
        """Count a failure and return the delay before the next attempt (seconds)."""
        self.consecutive += 1
        ceiling = self.ceiling()
        delay = full_jitter(ceiling, self._rng.random()) if self.jitter else ceiling
        delay = max(self.floor, delay)
        if retry_after is not None:
            delay = max(delay, retry_after)
        self.until = (time.monotonic() if now is None else now) + delay
        return delay

    def success(self) -> None:
        self.consecutive = 0
        self.until = 0.0

    def active(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) < self.until

    def remaining(self, now: float | None = None) -> float:
        """Seconds until the next attempt may start (0 when it may start now)."""
        return max(0.0, self.until - (time.monotonic() if now is None else now))

    def until_wall(self) -> float | None:
        """`until` as unix seconds, for stats and checkpoints (monotonic time does not survive a
        restart); None when not backing off."""
        remaining = self.until - time.monotonic()
        return time.time() + remaining if remaining > 0 else None

    def restore_wall(self, until: float | None, consecutive: int = 0) -> None:
        self.consecutive = int(consecutive)
        remaining = (until or 0.0) - time.time()
        self.until = time.monotonic() + remaining if remaining > 0 else 0.0
