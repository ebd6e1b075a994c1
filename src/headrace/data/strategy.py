"""How a map_batches runs: stateless tasks, or an autoscaling pool of stateful workers (actors).

`ActorPoolStrategy(2, 4)` is accepted positionally as older Ray releases did, besides
`ActorPoolStrategy(min_size=2, max_size=4)` and `ActorPoolStrategy(size=3)`; `concurrency=`
on map_batches maps onto the same two classes (an int or `(min, max)`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from headrace.data.errors import DatasetError


@dataclass(frozen=True)
class TaskPoolStrategy:
    """Stateless tasks on the shared worker processes; `size` caps how many run at once."""

    size: int | None = None


class ActorPoolStrategy:
    """A pool of long-lived worker processes, each holding one instance of the callable class,
    grown from `min_size` towards `max_size` while batches wait, shrunk back when idle."""

    def __init__(
        self,
        min_size: int | None = None,
        max_size: int | None = None,
        *,
        size: int | None = None,
        initial_size: int | None = None,
        max_tasks_in_flight_per_actor: int | None = None,
        **_ignored: object,
    ) -> None:
        if size is not None:
            if min_size is not None or max_size is not None:
                raise DatasetError(
                    "ActorPoolStrategy",
                    "both size and min_size/max_size were given",
                    "give size=N for a fixed pool, or min_size and max_size",
                )
            min_size = max_size = size
        min_size = 1 if min_size is None else min_size
        max_size = max(min_size, os.cpu_count() or 1) if max_size is None else max_size
        if min_size < 1 or max_size < min_size:
            raise DatasetError(
                "ActorPoolStrategy",
                f"min_size={min_size}, max_size={max_size}",
                "use 1 <= min_size <= max_size",
            )
        self.min_size = min_size
        self.max_size = max_size
        self.initial_size = max(min_size, min(initial_size or min_size, max_size))
        self.max_tasks_in_flight_per_actor = max_tasks_in_flight_per_actor or 2

    def __repr__(self) -> str:
        return f"ActorPoolStrategy(min_size={self.min_size}, max_size={self.max_size})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorPoolStrategy) and (self.min_size, self.max_size) == (
            other.min_size,
            other.max_size,
        )

    def __hash__(self) -> int:
        return hash((self.min_size, self.max_size))


def compute_strategy(
    fn: object,
    compute: object,
    concurrency: int | tuple[int, ...] | None,
    operation: str,
) -> TaskPoolStrategy | ActorPoolStrategy:
    """The strategy a map_batches call asks for, as Ray reads `compute` and `concurrency`."""
    is_class = isinstance(fn, type)
    if isinstance(compute, str):
        compute = {"tasks": TaskPoolStrategy(), "actors": ActorPoolStrategy()}.get(compute, compute)
    if compute is not None and not isinstance(compute, TaskPoolStrategy | ActorPoolStrategy):
        raise DatasetError(
            operation,
            f"compute={compute!r} is not a strategy",
            "pass ActorPoolStrategy(min, max), TaskPoolStrategy() or concurrency=",
        )
    if compute is None and concurrency is not None:
        if isinstance(concurrency, int):
            compute = (
                ActorPoolStrategy(size=concurrency)
                if is_class
                else TaskPoolStrategy(size=concurrency)
            )
        elif isinstance(concurrency, tuple) and len(concurrency) in (2, 3):
            low, high = concurrency[0], concurrency[-1]
            initial = concurrency[1] if len(concurrency) == 3 else None
            compute = (
                ActorPoolStrategy(low, high, initial_size=initial)
                if is_class
                else TaskPoolStrategy(size=high)
            )
        else:
            raise DatasetError(
                operation,
                f"concurrency={concurrency!r} is neither an int nor (min, max)",
                "pass concurrency=n or concurrency=(min, max)",
            )
    if compute is None:
        compute = ActorPoolStrategy() if is_class else TaskPoolStrategy()
    if is_class and not isinstance(compute, ActorPoolStrategy):
        raise DatasetError(
            operation,
            f"the callable class {fn.__name__} needs an actor pool",  # type: ignore[union-attr]
            "pass compute=ActorPoolStrategy(min, max) or concurrency=(min, max)",
        )
    if not is_class and isinstance(compute, ActorPoolStrategy):
        raise DatasetError(
            operation,
            "an actor pool runs callable classes, and a plain function was given",
            "pass a class whose __call__ takes a batch, or drop compute=/concurrency=(min, max)",
        )
    return compute
