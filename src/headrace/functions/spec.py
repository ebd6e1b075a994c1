"""What a function is: its handler and the limits and retry policy it runs under."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from headrace.errors import AppError
from headrace.retry import equal_jitter, exponential

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    handler: str  # "package.module:attr" or Lambda-style "package.module.handler"
    timeout: float = 60.0  # seconds; the worker is stopped after this
    memory: int = 1024  # MB of resident memory before the worker is stopped
    tmp_size: int = 512  # MB allowed in the per-invocation scratch folder
    retries: int = 2  # extra attempts after the first failure (Lambda's async default)
    backoff: float = 1.0  # seconds before the first retry; doubles each retry
    max_backoff: float = 300.0
    concurrency: int | None = None  # reserved concurrency: at most this many at once
    version: str = "$LATEST"

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise AppError(
                f"function {self.name!r}",
                "names may hold only letters, digits, '-' and '_' (at most 64)",
                "rename it",
            )
        checks = [
            ("timeout", self.timeout > 0, "a positive number of seconds"),
            ("memory", self.memory >= 16, "at least 16 (MB)"),
            ("tmp_size", self.tmp_size >= 1, "at least 1 (MB)"),
            ("retries", 0 <= self.retries <= 100, "between 0 and 100"),
            ("backoff", self.backoff >= 0, "zero or more seconds"),
            ("concurrency", self.concurrency is None or self.concurrency >= 1, "1 or more"),
        ]
        for field_name, ok, expected in checks:
            if not ok:
                raise AppError(
                    f"function {self.name!r}",
                    f"{field_name}={getattr(self, field_name)!r} is not allowed",
                    f"set {field_name} to {expected}",
                )

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based).

        Exponential backoff with "equal jitter": half the delay is fixed, half random, so
        retries of many invocations that failed together spread out instead of stampeding.
        """
        delay = exponential(attempt, self.backoff, cap=self.max_backoff)
        return equal_jitter(delay, random.random())

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:local:000000000000:function:{self.name}"
