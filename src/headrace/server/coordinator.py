"""The coordinator: watchers → events → rules → invocations → executor → ledger.

One loop does all ledger writes, batching whatever arrived since its last turn (new objects,
finished attempts, ready invocations) into one transaction; that is what makes thousands of
durable invocations per second possible on SQLite. Watchers and executors run in their own
threads and only hand things over and wake the loop. Stream pipelines, sources and schedules
(`headrace.server.streams`) commit their own checkpoint transactions from their threads and hand
the functions they queued work for to the loop.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError

from headrace.app import App
from headrace.config import Settings
from headrace.console import Console, ConsoleContext
from headrace.errors import ConfigError, is_deterministic
from headrace.events.s3 import object_created_envelope
from headrace.executors.base import Call, Executor, Outcome
from headrace.executors.lifetime import die_with_parent
from headrace.functions import runtime
from headrace.functions.context import scratch_owner, scratch_path
from headrace.functions.layers import ensure_layer
from headrace.functions.spec import FunctionSpec
from headrace.jobs.definition import with_default_cluster
from headrace.ledger import Claimed, Ledger, new_id
from headrace.s3api.rclone import S3Endpoint
from headrace.server.delivery import deliver
from headrace.server.http_routes import serve_token
from headrace.server.metrics import Metrics, serve_metrics
from headrace.server.s3_endpoint import check_s3_setting, start_s3_endpoint
from headrace.server.streams import StreamService
from headrace.server.triggers import idle_report
from headrace.storage import ChangeWatcher, ObjectInfo, ObjectStore
from headrace.storage.notifications import ChangeNotifier, open_notifier
from headrace.storage.temp_names import sweep_tree
from headrace.workflows.driver import WorkflowDriver

log = logging.getLogger("headrace.coordinator")

PENDING_POLL = 0.25  # seconds between looks for work queued by others (CLI, redrive, retries)
RECOVER_EVERY = 1.0  # seconds between looks for coordinators sharing the ledger that died


def make_executor(settings: Settings, preload: list[str] | None = None) -> Executor:
    kind = settings.executor
    if kind == "local":
        from headrace.executors.local import LocalExecutor

        return LocalExecutor(settings.workers, preload=preload)
    if kind == "ray" or kind == "auto" or kind.startswith("ray://"):
        from headrace.executors.ray_executor import RayExecutor

        address = None if kind == "ray" else kind
        return RayExecutor(address, num_cpus=settings.workers)
    from headrace.errors import ConfigError

    raise ConfigError(
        f"executor {kind!r}", "is not a known executor", "use local, ray, auto or ray://host:port"
    )


def storage_notifier(settings: Settings, store: ObjectStore) -> ChangeNotifier | None:
    """The store's change notifications (`storage_notifications`), or None: listing only."""
    if not settings.storage_notifications:
        return None
    if store.is_local:
        raise ConfigError(
            "setting 'storage_notifications'",
            f"storage {store.url!r} is a local folder, watched with inotify already",
            "leave storage_notifications empty, or set storage to the s3:// root it describes",
        )
    parent = os.getpid()
    # its process must not outlive the coordinator, even one killed with -9
    return open_notifier(
        settings.storage_notifications, store.root, child_setup=lambda: die_with_parent(parent)
    )


@dataclass
class _Running:
    claim: Claimed
    spec: FunctionSpec
    log_path: str
    submitted_at: float
    call_id: str  # the invocation id and its lease: outcomes of an older lease are stale


@dataclass
class Stats:
    started_at: float = field(default_factory=time.time)
    objects: int = 0
    succeeded: int = 0
    retried: int = 0
    dead: int = 0
    in_flight: int = 0
    recovered: int = 0
    last_error: str = ""


class Coordinator:
    def __init__(
        self,
        settings: Settings,
        app: App,
        *,
        executor: Executor | None = None,
        watch: bool = True,
    ) -> None:
        self.settings = settings
        self.app = app
        self.ledger = Ledger(settings.ledger_url, sync=settings.ledger_sync)
        self.store = ObjectStore(settings.storage_url)
        # a listener that would refuse its settings refuses before anything starts
        check_s3_setting(settings, self.store)
        self.notifier = storage_notifier(settings, self.store)
        if settings.serve and app.routes:
            serve_token(settings)
        preload = [settings.app.partition(":")[0]] if settings.app else []
        self.executor = executor or make_executor(settings, preload=[runtime.__name__, *preload])
        self.watch = watch
        self.metrics = Metrics()
        self.metrics_url = ""
        self._metrics_server: Any = None  # the metrics and console endpoint, stopped last
        self.s3_endpoint: S3Endpoint | None = None
        self._worker_env: dict[str, str] = {}  # what every handler gets: the S3 endpoint's
        self._layers: dict[str, str] = {}  # function name -> folder of its requirements
        self.console: Console | None = None  # served beside the metrics
        self.serve_url = ""  # where the app's HTTP routes answer, when it has any
        self._routes: Any = None
        self.stats = Stats()
        self.id = ""
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._force = threading.Event()
        self._objects: queue.SimpleQueue[ObjectInfo] = queue.SimpleQueue()
        self._running: dict[str, _Running] = {}
        self._running_per_fn: dict[str, int] = defaultdict(int)
        self._maybe_pending: set[str] = set()
        self._carry: list[Outcome] = []
        self._watcher: ChangeWatcher | None = None
        self.workflows = WorkflowDriver(
            self.ledger,
            app.functions,
            {
                "topics": app.topics,
                "home": str(settings.home),
                "storage": settings.storage_url,
                "definitions": {
                    n: with_default_cluster(
                        d, ray_address=settings.ray_address, spark_master=settings.spark_master
                    ).to_dict()
                    for n, d in app.job_definitions.items()
                },
            },
        )
        self._queued: queue.SimpleQueue[str] = queue.SimpleQueue()  # from the stream threads
        self.streams = StreamService(
            settings, app, self.ledger, self.store, self.metrics.streams, self._on_queued
        )
        self.bus = self.streams.bus  # one set of rules: object triggers are rules too
        self._logs_dir = settings.logs_dir
        self._tmp_root = settings.tmp_root
        self.ready = threading.Event()

    # -- lifecycle ----------------------------------------------------------------------------

    def stop(self, *, force: bool = False) -> None:
        """Ask the loop to drain: no new work, running attempts finish, then exit.

        `force` (a second Ctrl-C): stop the workers now; their attempts are recorded abandoned
        and run again by the next coordinator, without using up a retry."""
        if force:
            self._force.set()
        self._stop.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, drain_timeout: float | None = None) -> None:
        try:
            self._start()
            self._loop()
        finally:  # also after a failed start: its executor's workers must not outlive it
            self._drain(drain_timeout)

    def _start(self) -> None:
        self.app.check_state_machines()
        self.app.register_services()
        self.settings.home.mkdir(parents=True, exist_ok=True)
        for spec in self.app.functions.values():
            if spec.requirements:
                self._layers[spec.name] = ensure_layer(
                    self.settings.home, spec.name, spec.requirements
                )
        self._tmp_root.mkdir(parents=True, exist_ok=True)
        if self.settings.metrics:
            self.console = Console(
                ConsoleContext(
                    self.settings,
                    self.app,
                    self.ledger,
                    self.store,
                    lambda: self.id,
                    self._wake.set,
                    lambda: self._routes,
                )
            )
            self._metrics_server, self.metrics_url = serve_metrics(
                self.metrics, self.settings.metrics, self.console
            )
        self.s3_endpoint = start_s3_endpoint(self.settings, self.store)
        if self.s3_endpoint is not None:
            self._worker_env = self.s3_endpoint.client_environment()
        if self.settings.serve and self.app.routes:
            from headrace.server.http_routes import RouteServer

            self._routes = RouteServer(self.settings, self.app)
            self.serve_url = self._routes.start()
        self.id = self.ledger.register_coordinator(
            {
                "metrics": self.metrics_url,
                "serve": self.serve_url,
                "s3": self.s3_url,
                "executor": self.executor.name,
                "pid": os.getpid(),
            }
        )
        self.stats.recovered = self.ledger.recover_leases(self.id)
        self.workflows.start(self.id)  # executions are run under leases held by this id
        self._sweep_scratch()
        self.executor.start(self._wake.set)
        for bucket in self.app.buckets:
            self.store.bucket(bucket, create=True)
        if self.store.is_local:
            threading.Thread(target=self._sweep_temps, name="headrace-sweep", daemon=True).start()
        threading.Thread(target=self._report_idle, name="headrace-triggers", daemon=True).start()
        if self.watch and self.app.buckets:
            self._watcher = ChangeWatcher(
                self.store,
                self.app.buckets,
                poll_interval=self.settings.poll_interval,
                notifier=self.notifier,
            )
            self._watcher.start(self._on_object)
        self._maybe_pending.update(self.app.functions)
        if self.streams.active:
            self.streams.start()
        if self.app.topics:
            threading.Thread(target=self._redeliver, name="headrace-notify", daemon=True).start()
        self._write_info()  # last: its presence tells scripts the coordinator is ready
        self.ready.set()
        log.info("coordinator %s started (%s executor)", self.id, self.executor.name)

    @property
    def s3_url(self) -> str:
        return self.s3_endpoint.url if self.s3_endpoint is not None else ""

    def _sweep_scratch(self) -> None:
        """Remove the scratch folders of attempts no longer running (workers that crashed or were
        killed with their coordinator). Folders of attempts running under another live
        coordinator sharing this home are kept, and so are folders created after the look."""
        cutoff = time.time()
        running = self.ledger.running_attempts()
        try:
            entries = list(os.scandir(self._tmp_root))
        except OSError:
            return
        removed = 0
        for entry in entries:
            if scratch_owner(entry.name) in running:
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                    continue
            except OSError:
                continue
            _remove(entry.path)
            removed += 1
        if removed:
            log.info("removed %d scratch folders left by stopped workers", removed)

    def _sweep_temps(self) -> None:
        """Remove what writers killed midway (with a coordinator, by kill -9) left in buckets
        nobody watches; the watcher sweeps the watched ones as it scans them."""
        root = self.store.local_root()
        assert root is not None
        watched = set(self.app.buckets) if self.watch else set()
        removed = 0
        try:
            for bucket in self.store.list_buckets():
                if bucket not in watched:
                    removed += sweep_tree(root / bucket)
        except Exception:
            log.exception("sweeping temp files of dead writers failed")
        if removed:
            log.info("removed %d temp files left by writers that died", removed)

    def _report_idle(self) -> None:
        """Warn of buckets nothing watches and triggers matching nothing: typos stay silent."""
        try:
            for line in idle_report(self.app, self.store):
                log.warning("%s", line)
        except Exception:
            log.exception("checking triggers against the buckets failed")

    def _write_info(self) -> None:
        others = [c for c in self.ledger.live_coordinators(self.settings.lease_seconds)
                  if c["id"] != self.id]  # fmt: skip
        if others:
            log.warning(
                "%d other coordinator(s) use this ledger (%s): they share the work; "
                "`headrace status` lists them",
                len(others),
                ", ".join(f"pid {c['pid']} on {c['host']}" for c in others),
            )
        info = {
            "id": self.id,
            "pid": os.getpid(),
            "metrics": self.metrics_url,
            "serve": self.serve_url,
            "s3": self.s3_url,
            "s3_region": self.settings.s3_region if self.s3_endpoint else "",
        }
        path = self.settings.home / "coordinator.json"
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, path)

    def _remove_info(self) -> None:
        """If coordinator.json names this coordinator, point it at another one still running
        on this host with this ledger, or remove it: no file naming a stopped coordinator."""
        path = self.settings.home / "coordinator.json"
        try:
            text = path.read_text()
        except OSError:  # never written: the start failed
            return
        try:
            if json.loads(text).get("id") != self.id:
                return  # a coordinator started later owns it
            host = socket.gethostname()
            others = [
                c
                for c in self.ledger.live_coordinators(self.settings.lease_seconds)
                if c["id"] != self.id and c["host"] == host
            ]
            if not others:
                path.unlink()
                return
            other = others[-1]
            info = {"id": other["id"], "pid": other["pid"]}
            info["metrics"] = json.loads(other["info"] or "{}").get("metrics")
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(info))
            os.replace(tmp, path)
        except Exception:  # best effort on the way out: never block the stop
            log.warning("could not update %s", path, exc_info=True)

    def _on_queued(self, functions: set[str]) -> None:
        for name in functions:
            self._queued.put(name)
        self._wake.set()

    def _on_object(self, info: ObjectInfo) -> None:
        self._objects.put(info)
        self._wake.set()

    # -- the loop -----------------------------------------------------------------------------

    def _loop(self) -> None:
        next_heartbeat = 0.0
        next_poll = 0.0
        next_recovery = time.time() + RECOVER_EVERY
        while True:
            now = time.time()
            timer = self.workflows.next_timer() or next_poll
            timeout = max(0.0, min(next_heartbeat, next_poll, timer) - now)
            if self.workflows.has_work():
                timeout = 0.0  # executions that used up their share of the last turn
            self._wake.wait(timeout)
            self._wake.clear()
            stopping = self._stop.is_set()
            while not self._queued.empty():
                self._maybe_pending.add(self._queued.get_nowait())
            objects = self._drain_objects() if not stopping else []
            outcomes = self.executor.collect()
            now = time.time()
            heartbeat = now >= next_heartbeat
            poll = now >= next_poll and not stopping
            workflows = self.workflows.has_work() and not stopping
            if not (
                objects
                or outcomes
                or heartbeat
                or poll
                or workflows
                or (self._maybe_pending and not stopping)
            ):
                if stopping:
                    return
                continue
            try:
                claims = self._turn(objects, outcomes, heartbeat, poll, stopping)
            except Exception as exc:  # the ledger was busy or briefly unreachable: try again
                log.exception("coordinator turn failed; retrying")
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                self.workflows.reset()  # its memory may be ahead of the rolled-back ledger
                for info in objects:
                    self._objects.put(info)
                self._requeue_outcomes(outcomes)
                time.sleep(0.2)
                continue
            if heartbeat:
                next_heartbeat = now + self.settings.lease_seconds / 3
            if now >= next_recovery and not stopping:
                next_recovery = now + RECOVER_EVERY
                self._recover()
            if poll:
                next_poll = now + PENDING_POLL
            if claims:
                self.executor.submit_many([self._call(claim) for claim in claims])
            self.stats.in_flight = len(self._running)
            self.metrics.in_flight.set(len(self._running))
            if stopping:
                return

    def _recover(self) -> None:
        """Take back what coordinators sharing this ledger left running when they died: their
        invocations become pending again (their executions' and sources' leases free
        themselves, and the next turn takes them)."""
        try:
            recovered = self.ledger.recover_leases(self.id)
        except Exception:  # the ledger is busy: next time
            log.exception("recovering the work of stopped coordinators failed")
            return
        if recovered:
            log.info("%d invocations of a stopped coordinator are pending again", recovered)
            self.stats.recovered += recovered

    def _drain_objects(self) -> list[ObjectInfo]:
        out = []
        while True:
            try:
                out.append(self._objects.get_nowait())
            except queue.Empty:
                return out

    def _requeue_outcomes(self, outcomes: list[Outcome]) -> None:
        # Outcomes that could not be recorded are kept for the next turn, never dropped.
        self._carry.extend(outcomes)

    def _turn(
        self,
        objects: list[ObjectInfo],
        outcomes: list[Outcome],
        heartbeat: bool,
        poll: bool,
        stopping: bool,
    ) -> list[Claimed]:
        outcomes, self._carry = self._carry + outcomes, []
        updates: list[dict[str, Any]] = []
        with self.ledger.begin() as conn:
            if objects:
                self._ingest(conn, objects)
            if outcomes:
                updates = self._record(conn, outcomes)
            if heartbeat:
                self.ledger.heartbeat(self.id, self.settings.lease_seconds, conn)
            if poll:
                self._maybe_pending |= self.ledger.pending_functions(conn, time.time())
                self.workflows.refresh(conn)
                self.workflows.apply_callbacks(conn)
            if not stopping:
                tasks = self.workflows.advance(conn, time.time())
                if tasks:
                    self.ledger.enqueue(tasks, conn)
                    self._maybe_pending.update(t.function for t in tasks)
            claims = [] if stopping else self._claim(conn)
        self._after_commit(updates, outcomes)
        return claims

    # -- objects → events → invocations -------------------------------------------------------

    def _ingest(self, conn: Any, objects: list[ObjectInfo]) -> None:
        unique: dict[tuple[str, str, str], ObjectInfo] = {}
        for info in objects:
            unique.setdefault((info.bucket, info.key, info.version), info)
        seen = self.ledger.seen_versions(conn, list(unique))
        envelopes: list[dict[str, Any]] = []
        subjects: dict[str, str] = {}
        for ident, info in unique.items():
            if ident in seen:
                continue
            event_id = new_id()
            try:
                with conn.begin_nested():
                    self.ledger.record_object(
                        conn,
                        bucket=info.bucket,
                        key=info.key,
                        version=info.version,
                        size=info.size,
                        etag=info.etag,
                        event_id=event_id,
                    )
            except IntegrityError:  # another coordinator on this ledger recorded it first
                continue
            envelopes.append(
                object_created_envelope(
                    event_id=event_id,
                    bucket=info.bucket,
                    key=info.key,
                    size=info.size,
                    etag=info.etag,
                    sequencer=info.sequencer,
                    event_time=info.last_modified,
                )
            )
            subjects[event_id] = f"{info.bucket}/{info.key}"
            self.stats.objects += 1
            self.metrics.objects.labels(info.bucket).inc()
        if not envelopes:
            return
        routed = self.bus.deliveries(envelopes)
        for target, pairs in routed.items():
            if target.kind == "stream":  # before the commit: a crash re-appends, never loses
                refused = self.streams.append(target.name, [envelope for envelope, _ in pairs])
                for envelope, reason in refused:
                    log.warning("object event %s not appended: %s", envelope["id"], reason)
        delivered = deliver(
            self.ledger,
            conn,
            routed,
            functions=self.app.functions,
            state_machines=self.app.state_machines,
            invocation_source="object",
            subjects=subjects,
            record=envelopes,
        )
        self._maybe_pending |= delivered.functions
        if delivered.executions:
            self.workflows.refresh(conn)

    # -- dispatch -----------------------------------------------------------------------------

    def _claim(self, conn: Any) -> list[Claimed]:
        free = self.executor.free_slots()
        claims: list[Claimed] = []
        for name in sorted(self._maybe_pending):
            spec = self.app.functions.get(name)
            if spec is None:
                self._reject_unknown(conn, name)
                self._maybe_pending.discard(name)
                continue
            limit = free
            if spec.concurrency is not None:
                limit = min(limit, spec.concurrency - self._running_per_fn[name])
            if limit <= 0:
                continue
            got = self.ledger.claim(conn, name, limit, self.id, self._lease_for(spec))
            if len(got) < limit:
                self._maybe_pending.discard(name)
            free -= len(got)
            claims.extend(got)
            if free <= 0:
                break
        return claims

    def _lease_for(self, spec: FunctionSpec) -> float:
        return max(self.settings.lease_seconds, spec.timeout + self.settings.lease_seconds)

    def _reject_unknown(self, conn: Any, name: str) -> None:
        """Invocations of a function the app no longer has go to the dead-letter list at once."""
        while True:
            got = self.ledger.claim(conn, name, 500, self.id, self.settings.lease_seconds)
            if not got:
                return
            known = ", ".join(sorted(self.app.functions)) or "none"
            error = (
                f"AppError: function {name!r} is not registered in the app (known: {known}) "
                "(fix: register it, or invoke a registered function)"
            )
            self.ledger.finish(
                conn,
                self.id,
                [
                    {
                        "id": c.id,
                        "attempt": c.attempt,
                        "status": "dead",
                        "error": error,
                        "function": name,
                        "payload": c.payload,
                    }
                    for c in got
                ],
            )
            self.stats.dead += len(got)

    def _call(self, claim: Claimed) -> Call:
        spec = self.app.functions[claim.function]
        log_path, stream = runtime.log_location(
            self._logs_dir, claim.function, claim.id, claim.attempt
        )
        now = time.time()
        call_id = f"{claim.id}@{claim.attempt}:{claim.leased_at!r}"
        call = Call(
            id=call_id,
            target=runtime.TARGET,
            args={
                "invocation_id": claim.id,
                "attempt": claim.attempt,
                "function": spec.name,
                "handler": spec.handler,
                "payload": claim.payload,
                "version": spec.version,
                "arn": spec.arn,
                "memory": spec.memory,
                "tmp_size": spec.tmp_size,
                "deadline": now + spec.timeout,
                "log_path": log_path,
                "log_stream": stream,
                "tmp_root": str(self._tmp_root),
                "storage_url": self.store.url,
                "environment": {**self._worker_env, **spec.environment},
                "layer": self._layers.get(spec.name, ""),
            },
            timeout=min(spec.timeout, claim.timeout) if claim.timeout else spec.timeout,
            memory_limit_mb=spec.memory,
            sys_path=[str(self.settings.project_dir)],
            tag=spec.name,
            scratch_dir=str(scratch_path(self._tmp_root, claim.id, claim.attempt)),
            scratch_limit_mb=spec.tmp_size,
        )
        self._running[claim.id] = _Running(claim, spec, log_path, now, call_id)
        self._running_per_fn[claim.function] += 1
        return call

    # -- results ------------------------------------------------------------------------------

    def _record(self, conn: Any, outcomes: list[Outcome]) -> list[dict[str, Any]]:
        now = time.time()
        updates: list[dict[str, Any]] = []
        attempt_rows: list[dict[str, Any]] = []
        current = self._current(outcomes)
        leases = {r.claim.id: r.claim.leased_at for r in current.values()}
        held = self.ledger.held(conn, self.id, leases) if leases else set()  # type: ignore[arg-type]
        for outcome in outcomes:
            running = current.get(outcome.id)
            if running is None:
                continue
            claim, spec = running.claim, running.spec
            if claim.id not in held:
                # another coordinator took it over: the ledger has it abandoned, keep it so
                log.warning(
                    "attempt %d of %s (%s) finished after its lease was lost; result discarded",
                    claim.attempt,
                    claim.id,
                    claim.function,
                )
                self._lost(claim)
                continue
            started = outcome.started_at or running.submitted_at
            finished = outcome.finished_at or now
            if outcome.status != "ok" and (outcome.status != "error" or not outcome.traceback):
                # the worker was stopped or died: its log ends without the reason, add it;
                # its scratch folder was not removed by the runtime
                _append_log(running.log_path, f"[ERROR] {outcome.error}\n")
                _remove(scratch_path(self._tmp_root, claim.id, claim.attempt))
            lost = outcome.status == "lost"  # its node died: run again, as after a crash here
            attempt_rows.append(
                {
                    "invocation_id": claim.id,
                    "number": claim.attempt,
                    "function": claim.function,
                    "status": "abandoned" if lost else outcome.status,
                    "worker": outcome.worker,
                    "started_at": started,
                    "finished_at": finished,
                    "duration_ms": (finished - started) * 1000.0,
                    "max_rss_mb": outcome.max_rss_mb,
                    "error": outcome.error,
                    "traceback": outcome.traceback,
                    "log_path": running.log_path if os.path.exists(running.log_path) else None,
                }
            )
            update: dict[str, Any] = {
                "id": claim.id,
                "leased_at": claim.leased_at,
                "attempt": claim.attempt,
                "function": claim.function,
                "payload": claim.payload,
                "error": outcome.error,
                "traceback": outcome.traceback,
            }
            if outcome.status == "ok":
                update.update(status="succeeded", result=outcome.value)
            elif lost:
                update.update(status="pending", next_run_at=now, counted=False)
            elif claim.attempt < claim.max_attempts and not is_deterministic(outcome.error):
                update.update(status="pending", next_run_at=now + spec.retry_delay(claim.attempt))
            else:
                update["status"] = "dead"
            updates.append(update)
            if self.workflows.owns(claim.id) and update["status"] != "pending":
                update["dead_letter"] = False
                self.workflows.finished(
                    conn,
                    claim.id,
                    update["status"],
                    update.get("result"),
                    outcome.error,
                    outcome.traceback,
                )
        self.ledger.record_attempts(conn, attempt_rows)
        self.ledger.finish(conn, self.id, updates)
        return updates

    def _current(self, outcomes: list[Outcome]) -> dict[str, _Running]:
        """Outcome id → the running attempt it belongs to, for outcomes of the current lease."""
        out: dict[str, _Running] = {}
        for outcome in outcomes:
            running = self._running.get(outcome.id.partition("@")[0])
            if running is not None and running.call_id == outcome.id:
                out[outcome.id] = running
        return out

    def _lost(self, claim: Claimed) -> None:
        if self._running.pop(claim.id, None) is not None:
            self._running_per_fn[claim.function] -= 1
            self._maybe_pending.add(claim.function)

    def _after_commit(self, updates: list[dict[str, Any]], outcomes: list[Outcome]) -> None:
        functions = {}
        for update in updates:
            name = update["function"]
            running = self._running.pop(update["id"], None)
            if running is None:
                continue
            functions[update["id"]] = name
            self._running_per_fn[name] -= 1
            # a slot freed up: there may be more of this function waiting
            self._maybe_pending.add(name)
            status = update["status"]
            if status == "succeeded":
                self.stats.succeeded += 1
            elif status == "pending":
                self.stats.retried += 1
            else:
                self.stats.dead += 1
                self.metrics.dead.labels(name).inc()
            self.metrics.invocations.labels(name, status).inc()
        for outcome in outcomes:
            name = functions.get(outcome.id.partition("@")[0])
            if name and outcome.started_at and outcome.finished_at:
                self.metrics.duration.labels(name).observe(outcome.finished_at - outcome.started_at)

    def _redeliver(self, every: float = 5.0) -> None:
        """Retry notifications whose delivery failed, off the loop: it waits on the network."""
        from headrace.notify import Notifier, Topic
        from headrace.notify.subscriptions import subscription_from_dict

        topics = {
            name: Topic(name, [subscription_from_dict(s) for s in subs])
            for name, subs in self.app.topics.items()
        }
        notifier = Notifier(self.ledger, topics)
        while not self._stop.wait(every):
            try:
                notifier.deliver_pending()
            except Exception:  # a broken subscriber must not stop the coordinator
                log.exception("retrying notifications failed")

    # -- shutdown -----------------------------------------------------------------------------

    def _drain(self, timeout: float | None) -> None:
        if self._routes is not None:  # no new requests; those in flight are answered
            self._routes.stop(30.0 if timeout is None else timeout)
        if self._watcher is not None:
            self._watcher.stop()
        self.streams.stop()
        if timeout is None:
            timeout = max((s.timeout for s in self.app.functions.values()), default=30.0)
        deadline = time.time() + timeout
        while self._running and time.time() < deadline and not self._force.is_set():
            self._wake.wait(0.05)
            self._wake.clear()
            outcomes = self.executor.collect()
            if outcomes:
                with self.ledger.begin() as conn:
                    updates = self._record(conn, outcomes)
                self._after_commit(updates, outcomes)
        leftovers = self.executor.shutdown(wait=False)
        if self.s3_endpoint is not None:  # after the workers: a draining handler may use it
            self.s3_endpoint.stop()
        if leftovers and self._running:
            self.ledger.release_leases(self.id)
        for running in self._running.values():
            _remove(scratch_path(self._tmp_root, running.claim.id, running.claim.attempt))
        self.workflows.release()
        if self.id:
            self.ledger.mark_stopped(self.id)
        self._remove_info()
        if self._metrics_server is not None:  # its port is free again (a coordinator in a
            self._metrics_server.shutdown()  # thread, as tests and notebooks run one, kept it)
            self._metrics_server.server_close()
        self.ledger.close()
        # no id: it stopped before registering in the ledger (e.g. an unconfigured topic)
        log.info("coordinator %s stopped", self.id or "(not yet registered)")


def _append_log(path: str, text: str) -> None:
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
    except OSError:
        log.warning("could not write to log %s", path)


def _remove(path: str | os.PathLike[str]) -> None:
    shutil.rmtree(path, ignore_errors=True)
