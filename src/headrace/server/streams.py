"""The coordinator's stream side: sources → bus → targets, pipelines, schedules, retention.

Two daemon threads, so a slow HTTP poll never holds up a pipeline: one polls the sources and
delivers what the bus routes (stream appends, invocations, executions); one steps every pipeline
partition through its checkpointed micro-batches and fires due schedules. Neither may take the
coordinator down: a failing source or batch is recorded, counted and retried with backoff.

Nothing a source polls is lost without a trace. A record that cannot become a bus event (an
empty id, over 256 KiB), does not fit its table, or is refused by its target goes to the
source's error stream (`SOURCE-errors`, see `headrace.streams.dead_letters`) with the reason,
and the records beside it are delivered. A thread that dies anyway is restarted with backoff.
Sources and threads report to the `HealthBoard`: `headrace up`, `headrace streams stats` and
`headrace_stream_component_up` show what is failing.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from headrace.app import App
from headrace.config import Settings
from headrace.errors import HeadraceError, MalformedEvent
from headrace.events.bus import Bus
from headrace.events.envelope import PRECISE_TIME, make_envelope, without_precise_time
from headrace.ledger import Ledger, NewInvocation, new_id, ownership, source_positions
from headrace.ledger.checkpoints import record_failure
from headrace.ledger.db import to_json
from headrace.ledger.pipeline_leases import (
    acquire,
    ensure_tables,
    finish_flush,
    new_owner,
    pending_flushes,
    release,
)
from headrace.retry import Backoff
from headrace.server.delivery import deliver
from headrace.server.metrics import StreamMetrics
from headrace.server.stream_health import HealthBoard
from headrace.storage import ObjectStore
from headrace.streams.dead_letters import error_records
from headrace.streams.event_time import (
    EVENT_TIME,
    event_time_column,
    nanosecond_columns_as_text,
    parse_event_time,
)
from headrace.streams.log import decode_batch, encode_batch
from headrace.streams.runner import PartitionRunner
from headrace.streams.sinks import SinkContext
from headrace.streams.sources import RecordsDoNotFit, records_to_table
from headrace.streams.specs import SourceSpec

log = logging.getLogger("headrace.streams")
_RECORD_PLACE = re.compile(r"^record \d+ ")

IDLE_WAIT = 0.05  # how often an idle pipeline looks at its log
RETENTION_EVERY = 60.0
BATCH_RETRY_BASE, BATCH_RETRY_CAP = 0.5, 30.0  # a failed micro-batch is retried after
RESTART_BASE, RESTART_CAP = 1.0, 60.0  # a stream thread that died is restarted after
SOURCE_RETRY_CAP = 60.0  # a source whose poll raised is polled again after at most
LEASE_TTL_MIN = 60.0  # a pipeline lease not renewed for this long is free (holders elsewhere)
LEASE_RETRY = 1.0  # how often a pipeline whose lease another process holds is asked for again
FLUSH_POLL = 0.5  # how often the ledger is asked for flushes of the pipelines held
ERRORS_REMEMBERED = 10_000  # per source: bad records written lately, not written again
_REJECTED_KINDS = {"records", "schema"}  # source failures that are records set aside


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
        self._batch_backoff: dict[int, Backoff] = {}  # runner index -> its failed batch's retry
        self._source_backoff: dict[str, Backoff] = {}  # source name -> when poll() raised
        self._restart_backoff: dict[str, Backoff] = {}  # thread -> its restarts
        self._schemas: dict[str, pa.Schema] = {}  # stream -> what the bus appended to it
        self._positions: dict[str, _SourcePosition] = {}  # source -> where it is (ledger)
        self._errors_seen: dict[str, collections.OrderedDict[str, None]] = {}  # source -> digests
        self.health = HealthBoard(ledger, metrics)
        self._fired: dict[str, int] = {}  # schedule -> last period known to be in the ledger
        # pipelines are stepped only under their lease (headrace.ledger.pipeline_leases)
        self.owner = new_owner()
        self.purpose = "coordinator"
        self._wanted: set[str] = set()  # pipelines whose lease this service asks for
        self._held: set[str] = set()  # ... and holds
        self._lease_ttl = max(LEASE_TTL_MIN, 4 * settings.lease_seconds)
        self._next_renewal = 0.0
        self._next_flush_poll = 0.0
        self._sources_held: set[str] = set()  # sources whose lease this service holds
        self._next_source_claim = 0.0

    @property
    def active(self) -> bool:
        return bool(self.app.streams or self.app.sources or self.app.schedules)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self.app.pipelines:
            ensure_tables(self.ledger)
            self.want(self.app.pipelines, purpose="coordinator")
            self.claim_leases()  # before the runners load their checkpoints
        self.open()
        self._spawn_threads()

    def open(self, pipelines: Iterable[str] | None = None) -> None:
        """Open the stream logs, the feature store and a runner for every partition of
        `pipelines` (default: all), without starting a thread."""
        self.app.check_streams()
        for name, spec in self.app.streams.items():
            self.logs[name] = spec.open(self.settings.streams_url)
        if self.app.feature_groups:
            from headrace.features.store import open_app_store  # deltalake, duckdb: when used

            self.features = open_app_store(self.settings, self.app, self.store)
        chosen = self.app.pipelines if pipelines is None else set(pipelines)
        for pipe in self.app.pipelines.values():
            if pipe.name not in chosen:
                continue
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

    def _spawn_threads(self) -> None:
        threads = []
        if self.app.sources:
            threads.append(("sources", self._sources_loop))
        if self.runners or self.app.schedules or self.logs:
            threads.append(("pipelines", self._pipelines_loop))
        self.health.register(
            *(f"source:{name}" for name in self.app.sources),
            *(f"thread:{name}" for name, _ in threads),
        )
        for name, loop in threads:
            self._spawn(name, loop)

    def _spawn(self, name: str, loop: Callable[[], None]) -> None:
        thread = threading.Thread(
            target=self._supervise, args=(name, loop), name=f"headrace-{name}", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def _supervise(self, name: str, loop: Callable[[], None]) -> None:
        """Run `loop` until stopped; when it dies, report it and restart it with backoff."""
        backoff = self._restart_backoff[name] = Backoff(RESTART_BASE, RESTART_CAP)
        while not self._stop.is_set():
            try:
                loop()
                return  # the loop returns when the service stops
            except Exception as exc:
                delay = backoff.failure()
                log.exception("stream thread %s died; restarting it in %.1fs", name, delay)
                self.metrics.thread_restarts.labels(name).inc()
                self.health.failed(
                    f"thread:{name}",
                    f"{type(exc).__name__}: {exc} (restarting in {delay:.1f}s)",
                    restarted=True,
                )
                self._stop.wait(delay)

    def _turn_done(self, name: str) -> None:
        """A loop finished a whole turn: a thread restarted after dying works again."""
        backoff = self._restart_backoff.get(name)
        if backoff is not None and backoff.consecutive:
            backoff.success()
            self.health.succeeded(f"thread:{name}")

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        stopped = not any(t.is_alive() for t in self._threads)
        for runner in self.runners if stopped else ():  # archive buffers out; windows stay open
            if runner.pipeline.name not in self._held:
                continue  # another process runs it now
            try:
                runner.drain()
            except Exception:
                log.exception("draining pipeline %s failed", runner.pipeline.name)
        if stopped:
            self.release_leases()
            self._release_sources()
        self.close()

    def close(self) -> None:
        """Close the sources and stream logs (no drain: `stop` drains first)."""
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
            held = self._claim_sources()
            for name, spec in self.app.sources.items():
                if name not in held:
                    due[name] = min(due[name], time.monotonic() + LEASE_RETRY)
                    continue  # another coordinator on this ledger polls it
                if time.monotonic() >= due[name]:
                    due[name] = self._poll_due(spec)
            self._turn_done("sources")
            wait = max(0.0, min(due.values()) - time.monotonic())
            self._stop.wait(min(wait, 1.0))

    def _claim_sources(self) -> set[str]:
        """The sources this process polls: one coordinator at a time polls each, under its
        lease (`headrace.ledger.ownership`). One taken over from another coordinator starts
        from the position that one wrote down last."""
        now = time.time()
        if now < self._next_source_claim:
            return self._sources_held
        try:
            ownership.ensure_tables(self.ledger)
            with self.ledger.begin() as conn:
                held = ownership.take(
                    conn, "source", self.app.sources, self.owner, ttl=self._lease_ttl
                )
        except Exception:
            log.exception("taking the source leases failed")
            self._next_source_claim = now + LEASE_RETRY
            return set()  # not sure it still holds them: poll none until it is
        for name in held - self._sources_held:
            self._positions.pop(name, None)  # the ledger's position, not this memory's
        self._sources_held = held
        every = self._lease_ttl / 4 if held == set(self.app.sources) else LEASE_RETRY
        self._next_source_claim = now + every
        return held

    def _release_sources(self) -> None:
        if not self._sources_held:
            return
        try:
            with self.ledger.begin() as conn:
                ownership.release(conn, self.owner, "source")
        except Exception:  # the lease expires or this process's end frees it anyway
            log.exception("releasing the source leases failed")
        self._sources_held = set()

    def _poll_due(self, spec: SourceSpec) -> float:
        """Poll one source; when its next poll is due. A source that raises (from poll() or
        next_poll_at: a bug in it) is failing and is retried with backoff; the others go on."""
        backoff = self._source_backoff.setdefault(
            spec.name, Backoff(max(0.1, _interval(spec.source)), SOURCE_RETRY_CAP)
        )
        try:
            self.poll_source(spec)
            due = _next_poll(spec.source, time.monotonic())
        except Exception as exc:
            delay = backoff.failure()
            self.metrics.source_failures.labels(spec.name).inc()
            log.exception("source %s failed; polling it again in %.1fs", spec.name, delay)
            self.health.failed(f"source:{spec.name}", f"{type(exc).__name__}: {exc}")
            return time.monotonic() + delay
        backoff.success()
        return due

    def poll_source(self, spec: SourceSpec) -> int:
        """Poll once and deliver what the bus routes; returns the records polled. Records the
        source set aside, and records that cannot become events, go to its error stream.

        A poll that returned records is written to the ledger with the source's state after it
        before any record is delivered, and its appends are idempotent under its sequence
        (`headrace.ledger.source_positions`): one interrupted by a crash or a failing delivery
        is delivered again, first thing, and the source never reads its records twice."""
        source = spec.source
        position = self._position(spec)
        if position.pending is not None:
            self._deliver_poll(spec, position)
        failures_before = _failures(source)
        table = source.poll()
        failed = _failures(source) - failures_before
        if failed > 0:
            self.metrics.source_failures.labels(spec.name).inc(failed)
        polled = self._deliver_polled(spec, position, table)
        # told once the poll is delivered: one that raises (in _poll_due) counts as failing too,
        # so consecutive failing polls are counted as such
        component = f"source:{spec.name}"
        if _poll_failed(source, failed):
            self.health.failed(component, str(source.stats.get("last_error") or "failing"))
        elif not _backing_off(source):
            self.health.succeeded(component)
        return polled

    def _deliver_polled(
        self, spec: SourceSpec, position: _SourcePosition, table: pa.Table | None
    ) -> int:
        """Write the poll down with the source's state after it, then deliver it."""
        source = spec.source
        take_rejected = getattr(source, "take_rejected", None)
        rejected = [(r.record, r.reason) for r in take_rejected()] if take_rejected else []
        if table is not None and table.num_rows == 0:
            table = None
        state = _source_state(source)
        if table is None and not rejected:
            if state != position.state:
                with self.ledger.begin() as conn:
                    source_positions.save(conn, spec.name, state)
                position.state = state
            return 0
        pending = source_positions.PendingPoll(
            position.sequence, None if table is None else encode_batch(table), rejected
        )
        try:
            with self.ledger.begin() as conn:
                source_positions.begin_poll(
                    conn, spec.name, pending.sequence, state, pending.records, rejected
                )
        except Exception:  # not written down: the source reads these records again next time
            _restore(source, position.state)
            raise
        position.sequence, position.state, position.pending = pending.sequence + 1, state, pending
        self._deliver_poll(spec, position)
        return 0 if table is None else table.num_rows

    def _position(self, spec: SourceSpec) -> _SourcePosition:
        """The source's position, restored from the ledger on first use."""
        found = self._positions.get(spec.name)
        if found is None:
            source_positions.ensure_tables(self.ledger)
            with self.ledger.begin() as conn:
                saved = source_positions.load(conn, spec.name)
            if saved.state is not None:
                _restore(spec.source, saved.state)
            found = _SourcePosition(saved.producer, saved.sequence, saved.state, saved.pending)
            self._positions[spec.name] = found
        return found

    def _deliver_poll(self, spec: SourceSpec, position: _SourcePosition) -> None:
        """Deliver the records of the poll written down last, under its sequence, and clear it."""
        pending = position.pending
        assert pending is not None
        producer, sequence = position.producer, pending.sequence
        if pending.rejected:
            self.reject(spec, "records", pending.rejected, producer=producer, sequence=sequence)
        if pending.records is not None:
            table = decode_batch(pending.records)
            self.metrics.source_records.labels(spec.name).inc(table.num_rows)
            envelopes, refused = _envelopes(spec, table, _poll_ids(producer, sequence))
            if refused:
                self.reject(spec, "envelope", refused, producer=producer, sequence=sequence)
            self.publish(envelopes, origin=spec, producer=producer, sequence=sequence)
        with self.ledger.begin() as conn:
            source_positions.finish_poll(conn, spec.name, sequence)
        position.pending = None

    def reject(
        self,
        spec: SourceSpec,
        stage: str,
        items: list[tuple[Any, str]],
        *,
        producer: str | None = None,
        sequence: int | None = None,
    ) -> None:
        """Write records a source could not deliver to its error stream, with the reasons;
        under (`producer`, `sequence`) the append is idempotent, once per stage. A record the
        source's error stream got lately with the same reason is not written again (an HTTP
        API serves a bad record on every poll)."""
        seen = self._errors_seen.setdefault(spec.name, collections.OrderedDict())
        digests = [_error_digest(stage, record, reason) for record, reason in items]
        fresh = [i for i, digest in enumerate(digests) if digest not in seen]
        if not fresh:
            return
        if len(fresh) < len(items):
            items, digests = [items[i] for i in fresh], [digests[i] for i in fresh]
        log.warning(
            "source %s: %d records to %s (%s): %s",
            spec.name,
            len(items),
            spec.errors_stream,
            stage,
            items[0][1],
        )
        self.metrics.source_rejected.labels(spec.name).inc(len(items))
        self.health.rejected(f"source:{spec.name}", len(items), items[0][1])
        try:
            self.logs[spec.errors_stream].append(
                error_records(spec.name, stage, items),
                producer=None if producer is None else f"{producer}:{stage}",
                sequence=sequence,
            )
            for digest in digests:
                seen[digest] = None
            while len(seen) > ERRORS_REMEMBERED:
                seen.popitem(last=False)
        except Exception:  # the error stream itself fails: the log line is all that is left
            log.exception(
                "source %s: writing %d records to %s failed; the records were: %s",
                spec.name,
                len(items),
                spec.errors_stream,
                [record for record, _ in items],
            )
        self._wake.set()

    def publish(
        self,
        envelopes: list[dict[str, Any]],
        origin: SourceSpec | None = None,
        *,
        producer: str | None = None,
        sequence: int | None = None,
    ) -> None:
        """Route envelopes to their targets: the bus's PutEvents. Events a target refuses go
        to the error stream of `origin`, the source they came from. Under (`producer`,
        `sequence`) the stream appends are idempotent: publishing the same poll again writes
        nothing twice."""
        routed = self.bus.deliveries(envelopes)
        set_aside: list[tuple[dict, str]] = []
        try:
            self._publish(routed, envelopes, set_aside, producer, sequence)
        finally:
            self._set_aside(origin, set_aside, producer, sequence)

    def _publish(
        self,
        routed: dict[Any, Any],
        envelopes: list[dict[str, Any]],
        set_aside: list[tuple[dict, str]],
        producer: str | None,
        sequence: int | None,
    ) -> None:
        for target, pairs in routed.items():
            if target.kind != "stream":
                continue
            events = [envelope for envelope, _ in pairs]
            try:
                refused = self.append(target.name, events, producer=producer, sequence=sequence)
            except Exception as exc:
                log.exception("delivering %d events to %s failed", len(events), target)
                reason = f"delivering to {target} failed: {type(exc).__name__}: {exc}"
                refused = [(event, reason) for event in events]
            set_aside.extend(refused)
            if len(events) > len(refused):
                self.metrics.bus_events.labels(str(target)).inc(len(events) - len(refused))
        others = {t: pairs for t, pairs in routed.items() if t.kind != "stream"}
        if not others:
            return
        try:
            with self.ledger.begin() as conn:
                delivered = deliver(
                    self.ledger,
                    conn,
                    others,
                    functions=self.app.functions,
                    state_machines=self.app.state_machines,
                )
        except Exception as exc:  # the ledger refused the batch: each event goes aside
            log.exception("delivering %d events failed", len(envelopes))
            reason = f"delivering failed: {type(exc).__name__}: {exc}"
            unique = {e["id"]: e for pairs in others.values() for e, _ in pairs}
            set_aside.extend((e, reason) for e in unique.values())
            return
        set_aside.extend(delivered.refused)
        for target, pairs in others.items():
            self.metrics.bus_events.labels(str(target)).inc(len(pairs))
        if delivered.functions:
            self.on_invocations(delivered.functions)

    def _set_aside(
        self,
        origin: SourceSpec | None,
        refused: list[tuple[dict, str]],
        producer: str | None = None,
        sequence: int | None = None,
    ) -> None:
        if not refused:
            return
        if origin is None:  # not from a source (an object created): its log is the record
            for event, reason in refused:
                log.warning("event %s was not delivered: %s", event.get("id"), reason)
            return
        details = [(without_precise_time(e), reason) for e, reason in refused]
        self.reject(origin, "deliver", details, producer=producer, sequence=sequence)

    def append(
        self,
        stream_name: str,
        events: list[dict[str, Any]],
        *,
        producer: str | None = None,
        sequence: int | None = None,
    ) -> list[tuple[dict, str]]:
        """Append envelopes to a declared stream's log (its records are their details);
        returns the envelopes it refused, with the reason. With `producer` and `sequence` the
        append is idempotent (`StreamLog.append`)."""
        stream = self.app.streams[stream_name]
        table, refused = _stream_records(events)
        refused_rows = {row for row, _ in refused}
        kept = [i for i in range(len(events)) if i not in refused_rows]
        table, unfit = self._conform(stream_name, table)
        refused += [(kept[row], reason) for row, reason in unfit]
        if table.num_rows:
            self.logs[stream_name].append(
                table, key=stream.key, producer=producer, sequence=sequence
            )
            self._wake.set()
        return [(events[i], f"stream {stream_name!r}: {why}") for i, why in sorted(refused)]

    def _conform(self, name: str, table: pa.Table) -> tuple[pa.Table, list[tuple[int, str]]]:
        """Keep each column of a stream one type across appends: the log's reads widen batches
        (int to double, structs gain fields) but cannot put text and numbers in one column.
        A value of another kind is cast to the stream's type where that is exact (the text
        "12" into an int64 column); a row whose value cannot be is left out and returned
        (row, reason)."""
        known = self._schemas.get(name)
        if known is None:
            known = self._stored_schema(name)
        unfit: dict[int, str] = {}
        for position, field in enumerate(table.schema):
            if known is None or field.name not in known.names:
                continue
            want = known.field(field.name)
            if field.type == want.type or _widens(want, field):
                continue
            values = table.column(position).to_pylist()
            for row, value in enumerate(values):
                if value is None or row in unfit:
                    continue
                try:
                    pa.array([value], type=field.type).cast(want.type)  # exact casts only
                except (pa.ArrowException, TypeError, ValueError, OverflowError):
                    unfit[row] = (
                        f"field '{field.name}' is {field.type} here, but the stream holds "
                        f"{want.type} there ({_short(value)})"
                    )
            kept = pa.array(
                [None if row in unfit else v for row, v in enumerate(values)], field.type
            )
            table = table.set_column(position, want.name, kept.cast(want.type))
        if unfit:
            table = table.filter(pa.array([row not in unfit for row in range(table.num_rows)]))
        schemas = [table.schema] if known is None else [known, table.schema]
        self._schemas[name] = pa.unify_schemas(schemas, promote_options="permissive")
        return table, sorted(unfit.items())

    def _stored_schema(self, name: str) -> pa.Schema | None:
        """The schema of the newest record in each partition of a stream, unified (None when
        empty): what the log held before this process appended to it."""
        try:
            return self.logs[name].stored_schema()
        except Exception:  # an unreadable tail: appends are typed by what comes next
            log.exception("reading the schema of stream %s", name)
            return None

    # -- pipelines and schedules ----------------------------------------------------------------

    def _pipelines_loop(self) -> None:
        next_retention = time.time() + RETENTION_EVERY
        while not self._stop.is_set():
            busy = False
            self._renew_leases()
            self._run_flush_requests()
            for index, runner in enumerate(self.runners):
                if self._stop.is_set():
                    break
                if runner.pipeline.name in self._held:
                    busy |= self._step(index, runner)
            self._fire_schedules()
            if time.time() >= next_retention:
                self._retention()
                next_retention = time.time() + RETENTION_EVERY
            self._turn_done("pipelines")
            if not busy:
                self._wake.wait(IDLE_WAIT)
                self._wake.clear()

    def _step(self, index: int, runner: PartitionRunner) -> bool:
        backoff = self._batch_backoff.setdefault(
            index, Backoff(BATCH_RETRY_BASE, BATCH_RETRY_CAP, jitter=False)
        )
        if backoff.active():
            return False
        try:
            n = runner.step()
        except Exception as exc:
            backoff.failure()
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
            with contextlib.suppress(Exception):  # stuck behind records: the lag says how many
                end = runner.log.end_offset(runner.partition)
                self.metrics.lag.labels(runner.pipeline.name, str(runner.partition)).set(
                    max(0, end - runner.status.offset)
                )
            return False
        backoff.success()
        if n:
            runner.status.last_error = None
        status = runner.status
        labels = (runner.pipeline.name, str(runner.partition))
        self.metrics.lag.labels(*labels).set(status.lag)
        if status.watermark is not None:
            self.metrics.watermark.labels(*labels).set(status.watermark)
        return n > 0

    # -- leases and flushes ----------------------------------------------------------------------

    def want(self, pipelines: Iterable[str], *, purpose: str) -> None:
        """Run only `pipelines`, under leases taken for `purpose` ("coordinator", "flush")."""
        self._wanted = set(pipelines)
        self.purpose = purpose

    def claim_leases(self) -> set[str]:
        """Take or renew the leases of the wanted pipelines; returns those newly taken."""
        taken: set[str] = set()
        with self.ledger.begin() as conn:
            for name in sorted(self._wanted):
                holder = acquire(conn, name, self.owner, ttl=self._lease_ttl, purpose=self.purpose)
                if holder is None:
                    if name not in self._held:
                        taken.add(name)
                    self._held.add(name)
                else:
                    if name in self._held:
                        log.warning("pipeline %s: its lease went to %s", name, holder.describe())
                    self._held.discard(name)
        self._next_renewal = time.time() + (
            self._lease_ttl / 4 if self._held == self._wanted else LEASE_RETRY
        )
        return taken

    def release_leases(self) -> None:
        if not self._held:
            return
        try:
            with self.ledger.begin() as conn:
                release(conn, self._held, self.owner)
        except Exception:  # the lease expires or its holder's death frees it anyway
            log.exception("releasing the pipeline leases failed")
        self._held.clear()

    def _renew_leases(self) -> None:
        if not self._wanted or time.time() < self._next_renewal:
            return
        try:
            taken = self.claim_leases()
        except Exception:
            log.exception("renewing the pipeline leases failed")
            self._next_renewal = time.time() + LEASE_RETRY
            return
        for runner in self.runners:  # another process ran it meanwhile: reload its checkpoint
            if runner.pipeline.name in taken:
                runner.reset()

    def _run_flush_requests(self) -> None:
        if not self._held or time.time() < self._next_flush_poll:
            return
        self._next_flush_poll = time.time() + FLUSH_POLL
        try:
            with self.ledger.reader.connect() as conn:
                requests = pending_flushes(conn, self._held)
        except Exception:  # the pipelines go on; the asker waits for the next look
            log.exception("reading the flushes asked for failed")
            return
        for ident, name in requests:
            try:
                result, error = self.flush(name), None
            except Exception as exc:
                log.exception("flushing pipeline %s failed", name)
                result, error = None, f"{type(exc).__name__}: {exc}"
            with self.ledger.begin() as conn:
                finish_flush(conn, ident, result=result, error=error)

    def flush(self, pipeline: str) -> dict[str, Any]:
        """End of input for `pipeline`: process every record its stream holds now, then close
        every open window and write every buffer, partition by partition (the caller holds the
        pipeline's lease). Returns what it did: records read, windows closed, late records."""
        windows = {s.name for s in self.app.pipelines[pipeline].stages if s.late is not None}
        parts = []
        for runner in self.runners:
            if runner.pipeline.name != pipeline:
                continue
            runner.open()  # from the ledger: whoever ran it last committed there
            records, late = runner.status.records, runner.status.late
            last: list[Any] = []

            def capture(r: PartitionRunner, counts: list[Any], last: list[Any] = last) -> None:
                self._on_batch(r, counts)
                last[:] = counts

            runner.on_batch = capture
            try:
                runner.flush()
            except Exception:
                runner.reset()
                raise
            finally:
                runner.on_batch = self._on_batch
            parts.append(
                {
                    "partition": runner.partition,
                    "offset": runner.status.offset,
                    "records": runner.status.records - records,
                    "windows": sum(c.records_out for c in last if c.stage in windows),
                    "late": runner.status.late - late,
                }
            )
        return {
            "pipeline": pipeline,
            "records": sum(p["records"] for p in parts),
            "windows": sum(p["windows"] for p in parts),
            "late": sum(p["late"] for p in parts),
            "partitions": parts,
        }

    def _on_batch(self, runner: PartitionRunner, counts: list[Any]) -> None:
        self._renew_leases()  # a long flush or catch-up keeps its lease
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


def _poll_failed(source: Any, failed: int) -> bool:
    """The poll recorded a failure of its own (not only records set aside, which the error
    stream and the rejected count show while the source works)."""
    if failed <= 0:
        return False
    recent = list(getattr(source, "failures", None) or [])[-failed:]
    if not recent:
        return True
    return any(f.get("kind") not in _REJECTED_KINDS for f in recent if isinstance(f, dict))


def _error_digest(stage: str, record: Any, reason: str) -> str:
    # "record 3 field 'x': ..." names the record's place in its poll, which moves between polls
    why = _RECORD_PLACE.sub("", reason, count=1)
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(f"{stage}\0{why}\0{text}".encode()).hexdigest()


def _backing_off(source: Any) -> bool:
    """The source's last poll failed and it waits before the next (SourceHealth's stats)."""
    stats = getattr(source, "stats", None)
    return isinstance(stats, dict) and bool(stats.get("consecutive_failures"))


def _interval(source: Any) -> float:
    try:
        return float(getattr(source, "interval", 1.0) or 1.0)
    except (TypeError, ValueError):
        return 1.0


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


@dataclass
class _SourcePosition:
    producer: str  # of the source's idempotent appends
    sequence: int  # of its next poll
    state: dict[str, Any] | None  # as the ledger holds it
    pending: source_positions.PendingPoll | None  # written down, not yet delivered


def _source_state(source: Any) -> dict[str, Any]:
    state = getattr(source, "state", None)
    # a round trip through JSON: what the ledger will give back, to compare with
    return json.loads(to_json(state())) if callable(state) else {}


def _restore(source: Any, state: dict[str, Any] | None) -> None:
    restore = getattr(source, "restore", None)
    if callable(restore) and state is not None:
        restore(state)


def _poll_ids(producer: str, sequence: int) -> Callable[[int], str]:
    """Event ids for the records of a source without `id_field`: the same when the poll is
    delivered again, so a function target is not invoked twice for one record."""
    return lambda row: str(uuid.uuid5(uuid.NAMESPACE_URL, f"{producer}:{sequence}:{row}"))


def _envelopes(
    spec: SourceSpec, table: pa.Table, ids: Callable[[int], str] | None = None
) -> tuple[list[dict[str, Any]], list[tuple[Any, str]]]:
    """An envelope per record, and the records that cannot be one (record, reason). `ids`
    names the event of a record (by its row) when the source has no `id_field`."""
    out, refused = [], []
    for row, raw in enumerate(_rows(nanosecond_columns_as_text(table), refused)):
        try:
            out.append(_envelope(spec, raw, ids(row) if ids else None))
        except (HeadraceError, TypeError, ValueError, RecursionError) as exc:
            refused.append((raw, str(exc)))
        except Exception as exc:  # whatever else one record raises costs that record only
            refused.append((raw, f"{type(exc).__name__}: {exc}"))
    # A poll's records arrive together; the order an API lists them in (newest first) is not
    # an arrival order. In event-time order, windows judge none of them late for a later
    # record of the same poll.
    out.sort(key=lambda envelope: envelope[PRECISE_TIME])
    return out, refused


def _rows(table: pa.Table, refused: list[tuple[Any, str]]) -> list[dict[str, Any]]:
    """The table's rows as dicts; a row Python cannot hold (a timestamp past year 9999) goes to
    `refused` as its columns' text, and the rows beside it are kept."""
    try:
        return table.to_pylist()
    except Exception:  # find the rows that fail, one by one: the rest must not be lost
        pass
    rows = []
    for index in range(table.num_rows):
        row = table.slice(index, 1)
        try:
            rows.extend(row.to_pylist())
        except Exception as exc:
            reason = (
                f"record {index} cannot be read: {type(exc).__name__}: {exc} (a time must fall "
                "in years 1 to 9999 in UTC)"
            )
            refused.append((_row_text(row), reason))
    return rows


def _row_text(row: pa.Table) -> dict[str, Any]:
    """A one-row table's values as Arrow writes them as text (Arrow holds dates Python cannot)."""
    text: dict[str, Any] = {}
    for name, column in zip(row.column_names, row.columns, strict=True):
        try:
            text[name] = column.cast(pa.string())[0].as_py()
        except Exception:  # a type with no text form: its type says what it was
            text[name] = f"<{column.type}>"
    return text


def _envelope(spec: SourceSpec, raw: dict[str, Any], fallback_id: str | None) -> dict[str, Any]:
    when = parse_event_time(raw.get(spec.time_field), spec.time_field) if spec.time_field else None
    # detail must be JSON: timestamps, decimals and bytes become their text
    record = json.loads(json.dumps(raw, default=_as_text))
    ident = record.get(spec.id_field) if spec.id_field else None
    if ident is not None and not str(ident).strip():
        raise MalformedEvent(
            f"record of source {spec.name!r}",
            f"its id field {spec.id_field!r} is {ident!r}; an event needs a non-empty id",
            "fix the upstream record, or give the source another id_field",
        )
    envelope = make_envelope(
        spec.event_source,
        spec.detail_type,
        record,
        time=when,
        id=str(ident) if ident is not None else fallback_id or new_id(),
        resources=[],
    )
    # keep sub-second event time for windows; the envelope's own `time` has seconds like AWS
    envelope[PRECISE_TIME] = when or datetime.now(UTC)
    return envelope


def _widens(stored: pa.Field, new: pa.Field) -> bool:
    """Whether the log's reads unify the two types (promote_options="permissive")."""
    try:
        pa.unify_schemas([pa.schema([stored]), pa.schema([new])], promote_options="permissive")
    except (pa.ArrowException, TypeError, ValueError):
        return False
    return True


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _stream_records(events: list[dict[str, Any]]) -> tuple[pa.Table, list[tuple[int, str]]]:
    """The events' details as one table with `_event_time` and `_event_id`, typed over all of
    them; the events whose detail does not fit the others are left out (index, reason)."""
    try:
        table, rejected = records_to_table([e["detail"] for e in events])
    except RecordsDoNotFit as exc:
        return pa.table({}), [(i, str(exc)) for i in range(len(events))]
    refused = [(r.index, r.reason) for r in rejected]
    skip = {i for i, _ in refused}
    kept = [e for i, e in enumerate(events) if i not in skip]
    times = [e.get(PRECISE_TIME) or parse_event_time(e.get("time")) for e in kept]
    table = table.append_column(EVENT_TIME, event_time_column(times))
    table = table.append_column("_event_id", pa.array([e["id"] for e in kept], pa.string()))
    return table, refused
