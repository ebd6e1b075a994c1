"""The engine interface: what runs a Dataset's logical plan.

An engine turns a plan (`headrace.data.plan`) into Arrow blocks, in the dataset's order, and
writes plans out. The local engine (`engine_local`) is the default; another engine (Ray Data
on a cluster) is one more module beside it implementing the same three methods.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from headrace.data.plan import Node
from headrace.data.progress import Progress
from headrace.data.sinks import WriteTarget


@dataclass
class StageStats:
    name: str
    tasks: int = 0
    rows: int = 0
    seconds: float = 0.0
    workers: int = 0
    total: int | None = None  # tasks the stage will run, when known (a read: its fragments)


@dataclass
class ExecutionStats:
    """What the last execution of a dataset did, stage by stage (`Dataset.stats()`)."""

    engine: str
    stages: list[StageStats] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0
    progress: Progress = field(default_factory=lambda: Progress(False), repr=False)
    rows_out: int | None = None  # rows delivered to the caller so far, or written by a write

    def stage(self, name: str, total: int | None = None) -> StageStats:
        stats = StageStats(name, total=total)
        self.stages.append(stats)
        return stats

    def __str__(self) -> str:
        lines = [f"Execution on the {self.engine} engine: {self.seconds:.3f} s"]
        for s in self.stages:
            extra = f", {s.workers} workers" if s.workers else ""
            lines.append(
                f"  {s.name}: {s.tasks} tasks, {s.rows:,} rows out, {s.seconds:.3f} s{extra}"
            )
        return "\n".join(lines)


class Engine(ABC):
    name = "engine"

    @abstractmethod
    def execute(self, plan: Node, stats: ExecutionStats) -> Iterator[pa.Table]:
        """The plan's output blocks in order; nothing runs before the first is asked for, and
        closing the iterator stops the work."""

    @abstractmethod
    def count(self, plan: Node, stats: ExecutionStats) -> int:
        """The number of rows the plan yields (from metadata when no user code runs)."""

    @abstractmethod
    def write(self, plan: Node, target: WriteTarget, stats: ExecutionStats) -> list[str]:
        """Write the plan's rows to `target`, all files or none; the paths written."""
