"""What a function is: its handler and the limits and retry policy it runs under."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from headrace.errors import AppError
from headrace.retry import equal_jitter, exponential

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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
    # Lambda's environment variables: set for the handler while it runs
    environment: Mapping[str, str] = field(default_factory=dict, hash=False)
    # Python requirements (pip specifiers), installed into the function's own layer folder
    requirements: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise AppError(
                f"function {self.name!r}",
                "names may hold only letters, digits, '-' and '_' (at most 64)",
                "rename it",
            )
        self._check_environment()
        if isinstance(self.requirements, str) or not all(
            isinstance(r, str) and r.strip() and not r.strip().startswith("-")
            for r in self.requirements
        ):
            raise AppError(
                f"function {self.name!r}",
                f"requirements={self.requirements!r} is not a list of package specifiers",
                'write e.g. requirements=["boto3", "pandas>=2.2"] (no pip options)',
            )
        object.__setattr__(self, "requirements", tuple(r.strip() for r in self.requirements))
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

    def _check_environment(self) -> None:
        env = self.environment
        bad = (
            "is not a mapping"
            if not isinstance(env, Mapping)
            else next(
                (
                    f"has {k!r}={v!r}: names are letters, digits and _, values strings"
                    for k, v in env.items()
                    if not (isinstance(k, str) and _ENV_NAME.match(k) and isinstance(v, str))
                ),
                None,
            )
        )
        if bad:
            raise AppError(
                f"function {self.name!r}",
                f"environment {bad}",
                'write e.g. environment={"S3path": "s3://curated/out.parquet"}',
            )
        object.__setattr__(self, "environment", dict(env))

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
