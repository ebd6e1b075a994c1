"""`serving = "ray"`: the replicas are a Ray Serve deployment, on a local Ray or a cluster
(KubeRay's RayCluster or RayService); headrace's HTTP front stays in front of it.

The front hands requests over in batches: every request that arrives while the deployment
is busy with the batches already sent goes in the next handle call (at most `batches_per_replica`
calls per replica outstanding), so Ray's per-call cost — the router, the actor call, the object
transfer — is paid once per batch, not once per request. A replica answers a batch as a process
replica answers its frames (`Replica.answer_payloads`): the same handlers, events and micro-
batching. Ray Serve places, restarts and autoscales the replicas (`autoscaling_config` between
`min_replicas` and `max_replicas` on ongoing requests); Serve's own HTTP proxy is not started.

A roll-over to another model version is blue/green: a second application with the new version
is deployed beside the first, takes the traffic once Serve reports it running, and the old one
is deleted when its last batch is answered; a new version that does not start, or answers more
than `rollout_errors` of its first requests with a 5xx, is deleted and the old one serves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import tempfile
import threading
import time
from typing import Any

from headrace.errors import ExecutorError
from headrace.serving import protocol, serve_folder
from headrace.serving.pool import BAD_GATEWAY, TIMED_OUT, Callback, PoolOptions

logger = logging.getLogger("headrace.serving")

APP_PREFIX = "headrace-serve"


class ReplicaDeployment:
    """The class Ray Serve runs as each replica: the handlers imported once, as a process
    replica imports them."""

    def __init__(self, config: dict[str, Any]) -> None:
        import sys

        from headrace.serving.replica import Replica

        for name, value in config.get("environment", {}).items():
            os.environ[name] = value
        for path in reversed(config.get("sys_path", [])):
            if path not in sys.path:
                sys.path.insert(0, path)
        config = {**config, "scratch": tempfile.mkdtemp(prefix="headrace-ray-replica-")}
        self.replica = Replica(config)

    def answer(self, payloads: list[bytes]) -> list[bytes]:
        return self.replica.answer_payloads(payloads)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            shutil.rmtree(self.replica.tmp_root, ignore_errors=True)


class _App:
    """One deployed Serve application: its handle and the batches it has not answered."""

    def __init__(self, name: str, handle: Any, generation: dict[str, str]) -> None:
        self.name = name
        self.handle = handle
        self.generation = generation
        self.outstanding = 0  # batches sent, not answered
        self.answered = 0  # requests
        self.failed = 0  # 5xx answers


class RayPool:
    """The pool interface of `ReplicaPool` (`submit`, `ready`, `in_flight`, `roll_over`,
    `shutdown`) over a Ray Serve deployment."""

    def __init__(
        self,
        config: dict[str, Any],
        options: PoolOptions,
        *,
        address: str | None = None,
        num_cpus: int = 2,
        replica_cpus: float | None = None,
        batches_per_replica: int = 2,
        max_batch: int = 256,
    ) -> None:
        self.config = config
        self.options = options
        self.min = options.min_replicas or options.replicas
        self.max = max(options.max_replicas or options.replicas, self.min)
        self.address = address  # None: a local Ray of `num_cpus`
        self.num_cpus = num_cpus
        # on a local Ray every replica must fit when scaled to the maximum, twice over: a
        # roll-over starts the new version's replicas beside the old ones (Ray's CPUs are a
        # scheduling count, not a limit); a cluster's autoscaler adds nodes instead
        if replica_cpus is None:
            replica_cpus = min(1.0, num_cpus / (2 * self.max)) if address is None else 1.0
        self.replica_cpus = replica_cpus
        self.batches_per_replica = batches_per_replica
        self.max_batch = max_batch
        self.generation: dict[str, str] = {}
        self.app: _App | None = None
        self.ready: list[Any] = []  # one entry per running replica of the serving application
        self.in_flight = 0
        self.stopping = False
        self.replaced = 0  # batches lost with a replica (Ray Serve replaces the replica)
        self.failed_in_flight = 0
        self.abandon: asyncio.Event | None = None
        self.loop = asyncio.get_event_loop()
        self._ids = itertools.count(1)
        self._names = itertools.count(1)
        self._pending: list[tuple[int, bytes]] = []
        self._waiting: dict[int, tuple[Callback, asyncio.TimerHandle]] = {}
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ray: Any = None
        self._serve: Any = None
        self._owns_ray = False
        self._ray_processes: list[Any] = []
        # held around every call into Ray from a worker thread: once the pool has stopped Ray,
        # no late call may start another one (Ray starts a new local instance on first use)
        self._ray_lock = threading.Lock()
        self._closed = False
        self._tmp = serve_folder.make()

    # -- Ray and the deployment ------------------------------------------------------------------

    def _connect(self) -> None:
        from headrace.executors import ray_executor as rx

        if self.address is None:
            rx._loopback_only()
        elif self.address.startswith("ray://"):
            # Ray Client gives a head 5 + 10 + 15 s to answer its first ping, which a loaded
            # head starting the client's session misses; read when Ray is first imported
            os.environ.setdefault("RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S", "30")
        ray = rx._import_ray()
        try:
            from ray import serve
        except ImportError as exc:
            raise ExecutorError(
                'serving = "ray"',
                f"Ray Serve is not installed ({exc})",
                "pip install 'headrace[ray-serve]'",
            ) from exc
        self._ray, self._serve = ray, serve
        with self._ray_lock:
            if self._closed:
                raise RuntimeError("the server is stopping")
            if not ray.is_initialized():
                before = rx._children()
                kwargs: dict[str, Any] = {"log_to_driver": False}
                if self.address is None:
                    kwargs.update(num_cpus=self.num_cpus, include_dashboard=False)
                else:  # a cluster's workers get this headrace package
                    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
                    kwargs["runtime_env"] = {"py_modules": [package]}
                try:
                    self._init(ray, kwargs)
                except Exception as exc:
                    raise ExecutorError(
                        'serving = "ray"',
                        f"cannot start or reach {self.address or 'a local Ray'}: "
                        f"{rx._error_line(exc)}",
                        "check the address (auto with RAY_ADDRESS, or ray://HEAD:10001), "
                        "or start the cluster",
                    ) from exc
                self._owns_ray = True
                if self.address is None:
                    self._ray_processes = [p for p in rx._children() if p.pid not in before]
            # headrace's front is the HTTP entry: no Serve proxy
            serve.start(proxy_location="Disabled")

    def _init(self, ray: Any, kwargs: dict[str, Any]) -> None:
        """`ray.init`; through a Ray Client address, tried up to three times: the head starts a
        server process for each client, which can fail to come up in time on a loaded head
        ("Initialization failure from server"), and a new try gets a new one."""
        from headrace.executors import ray_executor as rx

        attempts = 3 if str(self.address or "").startswith("ray://") else 1
        for attempt in range(1, attempts + 1):
            try:
                with rx._keep_signal_handlers():
                    ray.init(address=self.address, **kwargs)
                return
            except ConnectionAbortedError as exc:
                if attempt == attempts:
                    raise
                logger.warning(
                    "Ray Client at %s: %s; trying again (%d of %d)",
                    self.address, rx._error_line(exc), attempt + 1, attempts,
                )  # fmt: skip
                time.sleep(2.0 * attempt)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call into Ray unless the pool has stopped it."""
        with self._ray_lock:
            if self._closed:
                raise RuntimeError("the server is stopping")
            return fn(*args, **kwargs)

    def _deploy(self, generation: dict[str, str]) -> _App:
        serve = self._serve
        name = f"{APP_PREFIX}-{os.getpid()}-{next(self._names)}"
        options: dict[str, Any] = {
            "name": "headrace-replica",
            "ray_actor_options": {"num_cpus": self.replica_cpus},
            "max_ongoing_requests": self.batches_per_replica * 2,
            "health_check_period_s": max(1.0, self.options.health_interval),
            "health_check_timeout_s": max(5.0, self.options.timeout),
            "graceful_shutdown_timeout_s": max(5.0, self.options.timeout),
        }
        if self.max > self.min:
            options["autoscaling_config"] = {
                "min_replicas": self.min,
                "max_replicas": self.max,
                "initial_replicas": self.options.replicas,
                # batches in flight per replica, as the front keeps them
                "target_ongoing_requests": self.batches_per_replica,
                "upscale_delay_s": 1.0,
                "downscale_delay_s": self.options.scale_down_after,
            }
        else:
            options["num_replicas"] = self.min
        deployment = serve.deployment(ReplicaDeployment).options(**options)
        config = {**self.config, "environment": generation}
        from ray.serve.api import _run

        # not serve.run: it waits (holding no timeout) until the replicas run; the loop below
        # waits instead, and gives up on --start-timeout, an abandoned roll-over or a stop
        handle = self._call(
            _run, deployment.bind(config), name=name, route_prefix=None, _blocking=False
        )
        deadline = time.monotonic() + self.options.start_timeout
        while True:  # serve.run returns once deployed; wait for the replicas to be RUNNING
            status = self._call(serve.status).applications.get(name)
            state = str(getattr(status, "status", ""))
            if state.endswith("RUNNING"):
                break
            failed = state.endswith("DEPLOY_FAILED") or time.monotonic() > deadline
            given_up = self.abandon is not None and self.abandon.is_set()
            if failed or given_up or self.stopping:
                with contextlib.suppress(Exception):
                    self._call(serve.delete, name, _blocking=False)
                if given_up:
                    raise RuntimeError("given up: the alias moved on while it started")
                if self.stopping:
                    raise RuntimeError("the server is stopping")
                message = getattr(status, "message", "") or "not running in --start-timeout"
                raise RuntimeError(f"Ray Serve application {name}: {message.strip()[:2000]}")
            time.sleep(0.2)
        return _App(name, handle.options(method_name="answer"), dict(generation))

    async def start(self, generation: dict[str, str] | None = None) -> None:
        self.generation = dict(generation or {})
        try:
            await asyncio.to_thread(self._connect)
            self.app = await asyncio.to_thread(self._deploy, self.generation)
        except BaseException:
            await asyncio.to_thread(self._stop_ray)
            raise
        self.ready = [self.app] * self.options.replicas
        self._background(self._status_loop())

    def _background(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _running_replicas(self, app: _App) -> int:
        status = self._call(self._serve.status).applications.get(app.name)
        if status is None:
            return 0
        count = 0
        for deployment in status.deployments.values():
            count += int(deployment.replica_states.get("RUNNING", 0))
        return count

    async def _status_loop(self) -> None:
        """`ready` holds one entry per running replica of the serving application, as Ray
        Serve reports them (the replicas gauge, the health answer and the batch window)."""
        while not self.stopping:
            await asyncio.sleep(self.options.health_interval)
            app = self.app
            if app is None:
                continue
            try:
                count = await asyncio.to_thread(self._running_replicas, app)
            except Exception as exc:  # the controller may be restarting; look again
                if not self.stopping:
                    logger.warning("cannot read Ray Serve's status: %s", exc)
                continue
            if app is self.app and not self.stopping:
                self.ready = [app] * count

    # -- requests ---------------------------------------------------------------------------

    def queued(self, route: int) -> int:
        """Requests of route `route` (this pool's index) not yet handed to Ray."""
        return sum(1 for _, payload in self._pending if protocol.request_route(payload) == route)

    def submit(self, payload: bytes, callback: Callback, timeout: float) -> bool:
        if self.app is None or not self.ready:
            return False
        request_id = next(self._ids)
        timer = self.loop.call_later(timeout, self._timed_out, request_id)
        self._waiting[request_id] = (callback, timer)
        self._pending.append((request_id, payload))
        self.in_flight += 1
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)
        return True

    def _capacity(self) -> int:
        return self.batches_per_replica * max(1, len(self.ready))

    def _flush(self) -> None:
        """Send what is pending, in batches of at most `max_batch`, while the application has
        room; the rest waits for a batch to come back."""
        self._flush_scheduled = False
        app = self.app
        if app is None:
            return
        while self._pending and app.outstanding < self._capacity():
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            app.outstanding += 1
            self._background(self._send(app, batch))

    async def _send(self, app: _App, batch: list[tuple[int, bytes]]) -> None:
        try:
            answers = await app.handle.remote([payload for _, payload in batch])
        except Exception as exc:  # a replica died or failed with the batch: each gets a 502
            logger.warning("a batch of %d failed in Ray Serve: %s", len(batch), exc)
            answers = None
        finally:
            app.outstanding -= 1
        if answers is None:
            self.replaced += 1
            for request_id, _ in batch:
                if self._answer(request_id, *BAD_GATEWAY):
                    self.failed_in_flight += 1
                    app.answered += 1
                    app.failed += 1
        else:
            for (request_id, _), data in zip(batch, answers, strict=True):
                status, headers, body = protocol.decode_response(data)
                if self._answer(request_id, status, headers, body):
                    app.answered += 1
                    if status >= 500:
                        app.failed += 1
        if self._pending:
            self._flush()

    def _answer(
        self, request_id: int, status: int, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> bool:
        entry = self._waiting.pop(request_id, None)
        if entry is None:
            return False  # timed out already
        self.in_flight -= 1
        entry[1].cancel()
        entry[0](status, headers, body)
        return True

    def _timed_out(self, request_id: int) -> None:
        entry = self._waiting.pop(request_id, None)
        if entry is not None:
            self.in_flight -= 1
            entry[0](*TIMED_OUT)

    # -- rolling over ---------------------------------------------------------------------------

    async def roll_over(self, generation: dict[str, str]) -> bool:
        old = self.app
        try:
            new = await asyncio.to_thread(self._deploy, generation)
        except Exception as exc:
            logger.error("roll-over to %s failed: %s", generation.get("HEADRACE_MODEL"), exc)
            return False
        before = list(self.ready)
        self.app = new
        self.ready = [new] * max(1, len(before))
        if not await self._looks_healthy(new):
            logger.error(
                "version %s answers with errors; rolling back", generation.get("HEADRACE_MODEL")
            )
            self.app = old
            self.ready = before
            if self._pending:
                self._flush()
            await self._retire(new)
            return False
        self.generation = dict(generation)
        if old is not None:
            await self._retire(old)
        return True

    async def _looks_healthy(self, app: _App) -> bool:
        watch = self.options.rollout_watch
        deadline = time.monotonic() + max(5.0, self.options.timeout)
        while app.answered < watch and time.monotonic() < deadline:
            if app.failed >= watch * self.options.rollout_errors:
                return False
            await asyncio.sleep(0.05)
        return not app.answered or app.failed / app.answered <= self.options.rollout_errors

    async def _retire(self, app: _App) -> None:
        while app.outstanding:
            await asyncio.sleep(0.02)
        with contextlib.suppress(RuntimeError):  # stopping: Ray goes whole
            await asyncio.to_thread(self._call, self._serve.delete, app.name)

    # -- stopping -----------------------------------------------------------------------------

    async def shutdown(self, drain_timeout: float) -> None:
        self.stopping = True
        deadline = time.monotonic() + drain_timeout
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self.ready = []
        for task in list(self._tasks):
            task.cancel()
        await asyncio.to_thread(self._stop_ray)
        self.remove_folder()

    def _stop_ray(self) -> None:
        from headrace.executors import ray_executor as rx

        with self._ray_lock:
            self._closed = True
        serve, ray = self._serve, self._ray
        # a local Ray of our own goes whole (its raylet stops the replicas; serve.shutdown()
        # would wait on a controller that may be gone already); on a cluster (joined by
        # address, `auto` or `ray://`) only our apps go: Serve applications outlive the driver
        # that deployed them, so disconnecting alone would leave them running
        shared = self.address is not None or not self._owns_ray
        if serve is not None and ray is not None and ray.is_initialized() and shared:
            for app in {self.app.name} if self.app else set():
                with contextlib.suppress(Exception):
                    serve.delete(app)
        if self._owns_ray and ray is not None:
            started = rx._with_descendants(self._ray_processes)
            ray.shutdown()
            self._owns_ray = False
            rx._reap(started, rx.RAY_EXIT_GRACE)

    def remove_folder(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)
