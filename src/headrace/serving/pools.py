"""The replica pools of one server: a shared pool for the routes without replica counts of
their own, and one pool per route that sets `replicas`, `min_replicas` or `max_replicas`
(its own processes, or its own Ray Serve application, scaled within its own bounds).

Requests go to their route's pool; what the front asks of "the replicas" as a whole (requests
in flight against the concurrency limit, health, metrics, drain) is asked of every pool.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

from headrace.serving.pool import PoolOptions
from headrace.serving.routes import RouteSpec


@dataclasses.dataclass
class PoolPlan:
    """One pool to start: its options, the routes it serves (indices into the server's
    ordered routes) and whether they bind the model (then it rolls over with the alias)."""

    options: PoolOptions
    routes: list[int]
    binds_model: bool
    label: str  # "shared" or the route's key, for logs and metrics


def plan_pools(routes: Sequence[RouteSpec], shared: PoolOptions) -> list[PoolPlan]:
    """The shared pool first (when some route uses it), then one per route with its own."""
    plans: list[PoolPlan] = []
    common = [i for i, r in enumerate(routes) if r.own_replicas is None]
    several = any(r.own_replicas is not None for r in routes)
    if common:
        binds = any(routes[i].model for i in common)
        options = dataclasses.replace(shared, label="shared") if several else shared
        plans.append(PoolPlan(options, common, binds, "shared"))
    for i, route in enumerate(routes):
        own = route.own_replicas
        if own is None:
            continue
        start, low, high = own
        options = dataclasses.replace(
            shared, replicas=start, min_replicas=low, max_replicas=high, label=route.key
        )
        plans.append(PoolPlan(options, [i], bool(route.model), route.key))
    return plans


class PoolSet:
    """The pools, by route: `for_route[i]` serves route i, as route `local[i]` of its pool."""

    def __init__(self, plans: list[PoolPlan], make: Callable[[PoolPlan], Any]) -> None:
        self.plans = plans
        self.pools = [make(plan) for plan in plans]
        size = max((i for plan in plans for i in plan.routes), default=-1) + 1
        self.for_route: list[Any] = [None] * size
        self.local: list[int] = [0] * size
        for plan, pool in zip(plans, self.pools, strict=True):
            for position, index in enumerate(plan.routes):
                self.for_route[index] = pool
                self.local[index] = position

    # -- what the front and the metrics read ----------------------------------------------------

    @property
    def in_flight(self) -> int:
        return sum(p.in_flight for p in self.pools)

    @property
    def ready(self) -> list[Any]:
        """Every pool's serving replicas."""
        return [r for p in self.pools for r in p.ready]

    @property
    def serving(self) -> bool:
        """Every route has a replica to go to."""
        return all(p.ready for p in self.pools)

    @property
    def replaced(self) -> int:
        return sum(p.replaced for p in self.pools)

    @property
    def stopping(self) -> bool:
        return all(p.stopping for p in self.pools)

    def model_pools(self) -> list[Any]:
        return [p for plan, p in zip(self.plans, self.pools, strict=True) if plan.binds_model]

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, generation: dict[str, str]) -> None:
        """One pool after the other (a pool's replicas start together): the first Ray pool is
        the one that starts a local Ray, and it must stop last. A pool whose routes bind no
        model starts without the model's environment."""
        for plan, pool in zip(self.plans, self.pools, strict=True):
            await pool.start(generation if plan.binds_model else {})

    async def roll_over(self, generation: dict[str, str]) -> bool:
        """Roll every model-bound pool over; when one fails, those already rolled go back, so
        that all routes serve one version."""
        done: list[tuple[Any, dict[str, str]]] = []
        for pool in self.model_pools():
            before = dict(pool.generation)
            if not await pool.roll_over(generation):
                for rolled, previous in reversed(done):
                    await rolled.roll_over(previous)
                return False
            done.append((pool, before))
        return True

    def set_abandon(self, event: Any) -> None:
        for pool in self.pools:
            pool.abandon = event

    async def shutdown(self, drain_timeout: float) -> None:
        """The pools drain together (the front takes no new requests), then stop one by one."""
        deadline = time.monotonic() + drain_timeout
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for pool in reversed(self.pools):  # the first pool may own a local Ray: last
            if not pool.stopping:
                await pool.shutdown(max(0.0, deadline - time.monotonic()))

    def remove_folder(self) -> None:
        for pool in self.pools:
            pool.remove_folder()
