"""The coordinator's stream side: sources → bus → targets, pipelines, schedules, retention.

Two daemon threads, so a slow HTTP poll never holds up a pipeline: one polls the sources and
delivers what the bus routes (stream appends, invocations, executions); one steps every pipeline
partition through its checkpointed micro-batches and fires due schedules. Neither may take the
coordinator down: a failing source or batch is recorded, counted and retried with backoff.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from headrace.app import App
from headrace.config import Settings
from headrace.errors import HeadraceError
from headrace.events.bus import Bus, Target
from headrace.events.envelope import PRECISE_TIME, make_envelope
from headrace.ledger import Ledger, NewInvocation, new_id
from headrace.ledger.checkpoints import record_failure
from headrace.server.metrics import StreamMetrics
from headrace.storage import ObjectStore
from headrace.streams.runner import PartitionRunner
from headrace.streams.sinks import SinkContext
from headrace.streams.specs import SourceSpec

log = logging.getLogger("headrace.streams")

IDLE_WAIT = 0.05  # how often an idle pipeline looks at its log
RETENTION_EVERY = 60.0
MAX_BACKOFF = 30.0


class StreamService:
    def __init__(
        self,
        settings: Settings,
        app: App,
        ledger: Ledger,
        store: ObjectStore,
        metrics: StreamMetrics,
        on_invocations: Callable[[set[str]], None],
    ) -> None:
        self.settings = settings
        self.app = app
        self.ledger = ledger
        self.store = store
        self.metrics = metrics
        self.on_invocations = on_invocations
        self.bus = Bus(app.rules)
        self.logs: dict[str, Any] = {}
        self.features: Any = None
        self.runners: list[PartitionRunner] = []
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._backoff: dict[int, tuple[float, float]] = {}  # runner index -> (until, delay)
        self._fired: dict[str, int] = {}  # schedule -> last period known to be in the ledger

    @property
    def active(self) -> bool:
        return bool(self.app.streams or self.app.sources or self.app.schedules)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.app.check_streams()
        for name, spec in self.app.streams.items():
            self.logs[name] = spec.open(self.settings.streams_url)
        if self.app.feature_groups:
            from headrace.features.store import open_app_store  # deltalake, duckdb: when used

            self.features = open_app_store(self.settings, self.app, self.store)
        for pipe in self.app.pipelines.values():
            stream = self.logs[pipe.stream]
            for partition in range(stream.partitions):
                context = SinkContext(
                    pipeline=pipe.name,
                    partition=partition,
                    store=self.store,
                    features=self.features,
                    ledger=self.ledger,
                    open_log=self.logs.__getitem__,
                    function_attempts=lambda n: self.app.functions[n].max_attempts,
                )
                runner = PartitionRunner(
                    pipe, partition, log=stream, ledger=self.ledger, context=context
                )
                runner.on_batch = self._on_batch
                runner.open()
                self.runners.append(runner)
        if self.app.sources:
            self._spawn("headrace-sources", self._sources_loop)
        if self.runners or self.app.schedules or self.logs:
            self._spawn("headrace-pipelines", self._pipelines_loop)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        stopped = not any(t.is_alive() for t in self._threads)
        for runner in self.runners if stopped else ():  # archive buffers out; windows stay open
            try:
                runner.drain()
            except Exception:
                log.exception("draining pipeline %s failed", runner.pipeline.name)
        for spec in self.app.sources.values():
            close = getattr(spec.source, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
        for stream in self.logs.values():
            try:
                stream.close()
            except Exception:  # closing is best effort at shutdown
                log.exception("closing a stream log failed")

    # -- sources and the bus --------------------------------------------------------------------

    def _sources_loop(self) -> None:
        # sources schedule themselves on the monotonic clock (Source.next_poll_at)
        due = {name: 0.0 for name in self.app.sources}
        while not self._stop.is_set():
            for name, spec in self.app.sources.items():
                if time.monotonic() >= due[name]:
                    self.poll_source(spec)
                    due[name] = _next_poll(spec.source, time.monotonic())
            wait = max(0.0, min(due.values()) - time.monotonic())
            self._stop.wait(min(wait, 1.0))

    def poll_source(self, spec: SourceSpec) -> int:
        """Poll once and deliver what the bus routes; returns the records polled."""
        source = spec.source
        failures_before = _failures(source)
        try:
            table = source.poll()
        except Exception as exc:  # a source must never stop the others
            self.metrics.source_failures.labels(spec.name).inc()
            log.warning("source %s failed: %s", spec.name, exc)
            return 0
        failed = _failures(source) - failures_before
        if failed > 0:
            self.metrics.source_failures.labels(spec.name).inc(failed)
        if table is None or table.num_rows == 0:
            return 0
        self.metrics.source_records.labels(spec.name).inc(table.num_rows)
        envelopes = _envelopes(spec, table)
        self.publish(envelopes)
        return table.num_rows

    def publish(self, envelopes: list[dict[str, Any]]) -> None:
        """Route envelopes to their targets: the bus's PutEvents."""
        routed = self.bus.route(envelopes)
        functions: set[str] = set()
        for target, events in routed.items():
            try:
                self._deliver(target, events, functions)
            except Exception:
                log.exception("delivering %d events to %s failed", len(events), target)
                continue
            self.metrics.bus_events.labels(str(target)).inc(len(events))
        if functions:
            self.on_invocations(functions)

    def _deliver(self, target: Target, events: list[dict[str, Any]], functions: set[str]) -> None:
        if target.kind == "stream":
            stream = self.app.streams[target.name]
            self.logs[target.name].append(_stream_records(events), key=stream.key)
            self._wake.set()
            return
        events = [{k: v for k, v in e.items() if k != PRECISE_TIME} for e in events]
        if target.kind == "function":
            spec = self.app.functions[target.name]
            with self.ledger.begin() as conn:
                keys = [f"{event['id']}:{spec.name}" for event in events]
                known = self.ledger.invocations_by_key(conn, keys)
                events = [e for e, k in zip(events, keys, strict=True) if k not in known]
                if not events:
                    return  # every envelope was delivered before: a redelivery
                recorded = self.ledger.known_events(conn, [e["id"] for e in events])
                for event in events:
                    if event["id"] in recorded:  # another rule's target recorded it already
                        continue
                    self.ledger.record_event(
                        conn,
                        event_id=event["id"],
                        source=event["source"],
                        detail_type=event["detail-type"],
                        subject=None,
                        payload=event,
                        routed=1,
                    )
                self.ledger.enqueue(
                    [
                        NewInvocation(
                            function=spec.name,
                            payload=event,
                            max_attempts=spec.max_attempts,
                            source="bus",
                            event_id=event["id"],
                            idempotency_key=f"{event['id']}:{spec.name}",
                        )
                        for event in events
                    ],
                    conn,
                )
            functions.add(spec.name)
        else:
            from headrace.workflows.api import ExecutionError, start_execution
            from headrace.workflows.names import name_for

            for event in events:
                # an event id is the sender's: any characters, so the name may be its hash
                name = name_for("event-", str(event["id"]))
                with contextlib.suppress(ExecutionError):  # this event started it already
                    start_execution(self.ledger, self.app, target.name, event, name=name)

    # -- pipelines and schedules ----------------------------------------------------------------

    def _pipelines_loop(self) -> None:
        next_retention = time.time() + RETENTION_EVERY
        while not self._stop.is_set():
            busy = False
            for index, runner in enumerate(self.runners):
                if self._stop.is_set():
                    break
                busy |= self._step(index, runner)
            self._fire_schedules()
            if time.time() >= next_retention:
                self._retention()
                next_retention = time.time() + RETENTION_EVERY
            if not busy:
                self._wake.wait(IDLE_WAIT)
                self._wake.clear()

    def _step(self, index: int, runner: PartitionRunner) -> bool:
        until, delay = self._backoff.get(index, (0.0, 0.0))
        if time.time() < until:
            return False
        try:
            n = runner.step()
        except Exception as exc:
            delay = min(MAX_BACKOFF, max(0.5, delay * 2))
            self._backoff[index] = (time.time() + delay, delay)
            runner.status.last_error = f"{type(exc).__name__}: {exc}"
            self.metrics.errors.labels(runner.pipeline.name).inc()
            try:
                with self.ledger.begin() as conn:
                    record_failure(
                        conn, runner.pipeline.name, runner.partition, runner.status.last_error
                    )
            except Exception:  # the ledger itself is failing: the log line below still tells
                log.exception("recording the failure of pipeline %s", runner.pipeline.name)
            if not isinstance(exc, HeadraceError):
                log.exception("pipeline %s batch failed", runner.pipeline.name)
            else:
                log.warning("pipeline %s: %s", runner.pipeline.name, exc)
            runner.reset()
            return False
        self._backoff.pop(index, None)
        if n:
            runner.status.last_error = None
        status = runner.status
        labels = (runner.pipeline.name, str(runner.partition))
        self.metrics.lag.labels(*labels).set(status.lag)
        if status.watermark is not None:
            self.metrics.watermark.labels(*labels).set(status.watermark)
        return n > 0

    def _on_batch(self, runner: PartitionRunner, counts: list[Any]) -> None:
        name = runner.pipeline.name
        for count in counts:
            for direction, records, size in (
                ("in", count.records_in, count.bytes_in),
                ("out", count.records_out, count.bytes_out),
            ):
                if records:
                    self.metrics.records.labels(name, count.stage, direction).inc(records)
                    self.metrics.bytes.labels(name, count.stage, direction).inc(size)
            if count.late:
                self.metrics.late.labels(name, count.stage).inc(count.late)

    def _fire_schedules(self) -> None:
        if not self.app.schedules:
            return
        now = time.time()
        items, due = [], {}
        for spec in self.app.schedules.values():
            period = int(now // spec.every)
            if self._fired.get(spec.name) == period:
                continue  # this period is in the ledger already: no transaction to find out
            payload = {
                **spec.payload,
                "schedule": spec.name,
                "period": period,
                "time": datetime.fromtimestamp(period * spec.every, UTC).isoformat(),
                "features": self.settings.features_url,
                "online_store": self.settings.online_store,
            }
            items.append(
                NewInvocation(
                    function=spec.function,
                    payload=payload,
                    max_attempts=self.app.functions[spec.function].max_attempts,
                    source="schedule",
                    idempotency_key=f"schedule:{spec.name}:{period}",
                )
            )
            due[spec.name] = period
        if not items:
            return
        with self.ledger.begin() as conn:
            known = self.ledger.invocations_by_key(conn, [i.idempotency_key for i in items])
            fresh = [i for i in items if i.idempotency_key not in known]
            if fresh:
                self.ledger.enqueue(fresh, conn)
        self._fired.update(due)
        if fresh:
            self.on_invocations({i.function for i in fresh})

    def _retention(self) -> None:
        for name, stream in self.logs.items():
            try:
                removed = stream.enforce_retention()
            except Exception:
                log.exception("retention of stream %s failed", name)
                continue
            if removed:
                log.info("stream %s: retention removed %d records", name, removed)


def _failures(source: Any) -> int:
    stats = getattr(source, "stats", None)
    if isinstance(stats, dict):
        return int(stats.get("failures", 0) or 0)
    return 0


def _next_poll(source: Any, now: float) -> float:
    at = getattr(source, "next_poll_at", None)
    if isinstance(at, int | float) and at > now:
        return float(at)
    return now + float(getattr(source, "interval", 1.0) or 1.0)


def _event_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _envelopes(spec: SourceSpec, table: pa.Table) -> list[dict[str, Any]]:
    out = []
    for raw in table.to_pylist():
        when = _event_time(raw.get(spec.time_field)) if spec.time_field else None
        # detail must be JSON: timestamps, decimals and bytes become their text
        record = json.loads(json.dumps(raw, default=_as_text))
        ident = record.get(spec.id_field) if spec.id_field else None
        envelope = make_envelope(
            spec.event_source,
            spec.detail_type,
            record,
            time=when,
            id=str(ident) if ident is not None else new_id(),
            resources=[],
        )
        # keep sub-second event time for windows; the envelope's own `time` has seconds like AWS
        envelope[PRECISE_TIME] = when or datetime.now(UTC)
        out.append(envelope)
    return out


def _as_text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _stream_records(events: list[dict[str, Any]]) -> pa.Table:
    table = pa.Table.from_pylist([e["detail"] for e in events])
    times = [e.get(PRECISE_TIME) or _event_time(e.get("time")) for e in events]
    table = table.append_column("_event_time", pa.array(times, pa.timestamp("ms", tz="UTC")))
    table = table.append_column("_event_id", pa.array([e["id"] for e in events], pa.string()))
    return table
