"""Whether each part of the coordinator's stream side works: sources and the threads that run
them and the pipelines.

A component is "ok" or "failing" (with the consecutive failures and the last error); threads
also count their restarts, sources the records they sent to their error stream. The board is
what `headrace up` shows, it sets `headrace_stream_component_up`, and it writes a component's
row to the ledger (`stream_health`) when something about it changes, which is what
`headrace streams stats` reads from another process.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from headrace.ledger import Ledger
from headrace.ledger.checkpoints import record_health
from headrace.server.metrics import StreamMetrics

log = logging.getLogger("headrace.streams")


@dataclass
class ComponentHealth:
    component: str  # "source:NAME", "thread:sources", "thread:pipelines"
    status: str = "ok"  # ok | failing
    failures: int = 0  # consecutive
    restarts: int = 0
    rejected: int = 0
    last_error: str | None = None
    since: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class HealthBoard:
    def __init__(self, ledger: Ledger, metrics: StreamMetrics) -> None:
        self.ledger = ledger
        self.metrics = metrics
        self._lock = threading.Lock()
        self._components: dict[str, ComponentHealth] = {}

    def snapshot(self) -> list[ComponentHealth]:
        with self._lock:
            return [ComponentHealth(**asdict(c)) for c in self._components.values()]

    def get(self, component: str) -> ComponentHealth | None:
        with self._lock:
            found = self._components.get(component)
            return ComponentHealth(**asdict(found)) if found else None

    def register(self, *components: str) -> None:
        """Start components afresh as ok (a new coordinator run)."""
        with self._lock:
            for name in components:
                self._components[name] = ComponentHealth(name)
        self._save(list(components))

    def failed(self, component: str, error: str, *, restarted: bool = False) -> None:
        now = time.time()
        with self._lock:
            health = self._components.setdefault(component, ComponentHealth(component))
            if health.ok:
                health.since = now
            health.status = "failing"
            health.failures += 1
            health.restarts += int(restarted)
            health.last_error = error
            health.updated_at = now
        self._save([component])

    def succeeded(self, component: str) -> None:
        """The component worked; a write happens only when it was failing."""
        with self._lock:
            health = self._components.setdefault(component, ComponentHealth(component))
            if health.ok:
                return
            now = time.time()
            health.status, health.failures, health.since, health.updated_at = "ok", 0, now, now
        self._save([component])

    def rejected(self, component: str, records: int, error: str) -> None:
        """`records` went to the component's error stream (the component itself still works)."""
        with self._lock:
            health = self._components.setdefault(component, ComponentHealth(component))
            health.rejected += records
            health.last_error = error
            health.updated_at = time.time()
        self._save([component])

    def _save(self, components: list[str]) -> None:
        with self._lock:
            rows: list[dict[str, Any]] = [asdict(self._components[c]) for c in components]
        for row in rows:
            self.metrics.component_up.labels(row["component"]).set(row["status"] == "ok")
        try:
            with self.ledger.begin() as conn:
                record_health(conn, rows)
        except Exception:  # the ledger is failing too: the log and the metric still tell
            log.exception("recording the health of %s", ", ".join(components))
