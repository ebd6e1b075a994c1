"""The executor contract: run serialisable calls in workers and report outcomes.

An executor knows nothing about functions, events or the ledger. It receives a `Call` (a
`module:attr` target plus JSON-like arguments and limits), runs `target(**args)` in a worker, and
reports an `Outcome`. Timeouts and memory limits are enforced by stopping the worker, so user code
cannot ignore them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

# "lost": the machine running the call went away (a Ray node died); not the call's doing, so
# the coordinator runs it again without using up a retry, as after its own crash
OutcomeStatus = Literal["ok", "error", "timeout", "memory", "crashed", "lost"]


@dataclass(slots=True)
class Call:
    id: str
    target: str  # "package.module:function"
    args: dict[str, Any]
    timeout: float | None = None  # seconds of wall time before the worker is stopped
    memory_limit_mb: int | None = None  # resident memory before the worker is stopped
    sys_path: list[str] = field(default_factory=list)  # prepended in the worker (project folder)
    tag: str = ""  # groups calls of one kind (the function name) for scheduling statistics
    scratch_dir: str | None = None  # a folder the call writes to, measured while it runs
    scratch_limit_mb: int | None = None  # its size before the worker is stopped


@dataclass(slots=True)
class Outcome:
    id: str
    status: OutcomeStatus
    value: Any = None  # what the target returned, when status == "ok"
    error: str | None = None  # one line: "ExceptionType: message"
    traceback: str | None = None
    started_at: float | None = None  # epoch seconds, measured in the worker when known
    finished_at: float | None = None
    worker: str = ""
    max_rss_mb: float | None = None


class Executor(Protocol):
    """What the coordinator needs from a compute backend."""

    name: str

    def start(self, notify: Callable[[], None]) -> None:
        """Start workers. `notify` is called (from any thread) whenever outcomes are ready."""

    def free_slots(self) -> int:
        """How many more calls can be submitted now without queueing behind busy workers."""

    def submit(self, call: Call) -> None:
        """Start a call. Never blocks on the call's own work."""

    def submit_many(self, calls: list[Call]) -> None:
        """Start several calls; executors that can batch the hand-over do so."""

    def collect(self) -> list[Outcome]:
        """Outcomes that arrived since the last collect. Never blocks."""

    def in_flight(self) -> int:
        """Calls submitted and not yet collected."""

    def shutdown(self, *, wait: bool = True, timeout: float | None = None) -> list[Outcome]:
        """Stop. With `wait`, let running calls finish (up to `timeout`) and return their outcomes;
        calls still running after that are stopped and reported as `crashed`."""
