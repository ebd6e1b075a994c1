"""headrace.retry: the one backoff formula, and the call sites that keep their timing."""

from __future__ import annotations

import math
import random

import pytest

from headrace.functions.spec import FunctionSpec
from headrace.retry import Backoff, equal_jitter, exponential, full_jitter
from headrace.workflows.errors import retry_delay


def test_exponential_doubles_from_base_up_to_the_cap():
    assert [exponential(n, 0.5, cap=30) for n in range(1, 9)] == [
        0.5, 1, 2, 4, 8, 16, 30, 30,
    ]  # fmt: skip
    assert exponential(0, 3.0) == 3.0  # below 1 counts as the first retry
    assert exponential(4, 2, rate=1.5) == pytest.approx(6.75)


def test_a_long_outage_never_overflows_past_the_cap():
    assert exponential(100_000, 1.0, rate=10, cap=7) == 7
    assert exponential(100_000, 1.0, rate=10) == math.inf


def test_jitters_stay_in_their_ranges():
    assert full_jitter(8.0, 0.0) == 0 and full_jitter(8.0, 0.5) == 4
    assert equal_jitter(8.0, 0.0) == 4 and equal_jitter(8.0, 0.999) < 8


def test_function_retries_keep_equal_jitter():
    spec = FunctionSpec("f", "m:f", backoff=2.0, max_backoff=10.0)
    for attempt, ceiling in ((1, 2.0), (2, 4.0), (3, 8.0), (4, 10.0), (60, 10.0)):
        delays = [spec.retry_delay(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)


def test_step_functions_retrier_semantics_are_unchanged():
    r = {"IntervalSeconds": 3, "BackoffRate": 1.5, "MaxDelaySeconds": 5}
    assert retry_delay(r, 1, 0.7) == 3
    assert retry_delay(r, 10, 0.9) == 5
    assert retry_delay({**r, "JitterStrategy": "FULL"}, 10, 0.5) == 2.5
    assert retry_delay({"BackoffRate": 10, "MaxDelaySeconds": 7}, 100000, 0.3) == 7


def test_backoff_full_jitter_floor_and_retry_after():
    backoff = Backoff(base=1.0, cap=4.0, floor=0.5, rng=random.Random(7))
    delays = [backoff.failure(now=0.0) for _ in range(6)]
    assert all(0.5 <= d <= 4.0 for d in delays)
    assert backoff.ceiling() == 4.0 and backoff.active(now=0.0)
    assert backoff.failure(retry_after=20.0, now=0.0) == 20.0
    backoff.success()
    assert backoff.consecutive == 0 and not backoff.active(now=0.0)
    fixed = Backoff(base=0.5, cap=30.0, jitter=False)
    assert [fixed.failure(now=0.0) for _ in range(3)] == [0.5, 1.0, 2.0]


def test_backoff_rejects_non_positive_settings():
    with pytest.raises(ValueError, match="must be > 0"):
        Backoff(base=0, cap=1)
