"""The front's replicas: started, chosen by least outstanding requests, health-checked,
replaced when they crash or hang, rolled over to another model version, scaled between a
minimum and a maximum, and drained.

Everything here runs on the front's event loop; a replica is a process with a Unix socket
(see `protocol`), started with `python -m headrace.serving.replica`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headrace.serving import protocol, serve_folder

logger = logging.getLogger("headrace.serving")

#: callback(status, headers, body) of one request
Callback = Callable[[int, list[tuple[bytes, bytes]], bytes], None]

_JSON = [(b"content-type", b"application/json")]
BAD_GATEWAY = (502, _JSON, b'{"message": "Internal server error"}')
TIMED_OUT = (504, _JSON, b'{"message": "Endpoint request timed out"}')
NO_REPLICA = (
    503,
    [*_JSON, (b"retry-after", b"1")],
    b'{"message": "Service Unavailable: no replica is ready (replacements are starting)"}',
)


@dataclass(slots=True, eq=False)
class Outstanding:
    """A request sent to a replica and not yet answered."""

    callback: Callback
    timer: asyncio.TimerHandle
    payload: bytes  # kept to send it to another replica if this one goes before starting it
    timeout: float  # seconds it may take on a replica
    started: bool = False  # the replica said it runs it (a START frame)


@dataclass
class PoolOptions:
    replicas: int = 2
    min_replicas: int | None = None  # autoscaling bounds; both default to `replicas`
    max_replicas: int | None = None
    timeout: float = 30.0  # the longest request timeout: a health check waits as long
    start_timeout: float = 120.0  # a replica's import and model load
    health_interval: float = 1.0
    scale_up_at: float = 8.0  # outstanding requests per replica that add one
    scale_down_after: float = 30.0  # seconds under one request per replica that remove one
    rollout_errors: float = 0.5  # a new version's 5xx share that rolls it back
    rollout_watch: int = 20  # requests a new version answers before it counts as good
    spares: int = 0  # warm replicas kept started, not serving: one takes a lost replica's place
    label: str = ""  # the pool's name in logs when a server has several ("shared", a route)


@dataclass(eq=False)
class Replica:
    number: int
    generation: dict[str, str]  # the environment it started with: its model version
    proc: subprocess.Popen[bytes]
    state: str = "starting"  # starting, spare, ready, draining, dead
    transport: asyncio.Transport | None = None
    outstanding: dict[int, Outstanding] = field(default_factory=dict)
    ready: asyncio.Future[dict[str, Any]] | None = None
    ping_sent: float = 0.0
    answered: int = 0
    failed: int = 0  # 5xx answers, for a rollout's error rate

    @property
    def pid(self) -> int:
        return self.proc.pid


class _ReplicaProtocol(asyncio.Protocol):
    def __init__(self, pool: ReplicaPool, replica: Replica) -> None:
        self.pool = pool
        self.replica = replica
        self.buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.replica.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        pos = 0
        size_h = protocol.HEADER_SIZE
        unpack = protocol.HEADER.unpack_from
        on_frame = self.pool.on_frame
        while len(buf) - pos >= size_h:
            size, request_id, kind = unpack(buf, pos)
            end = pos + size_h + size
            if len(buf) < end:
                break
            on_frame(self.replica, request_id, kind, bytes(buf[pos + size_h : end]))
            pos = end
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.on_lost(self.replica)


class ReplicaPool:
    def __init__(
        self,
        config: dict[str, Any],
        options: PoolOptions,
        *,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config  # what every replica gets: routes, sys_path, storage
        self.options = options
        self.min = options.min_replicas or options.replicas
        self.max = max(options.max_replicas or options.replicas, self.min)
        self.replicas: list[Replica] = []
        self.ready: list[Replica] = []  # the ones requests go to
        self.generation: dict[str, str] = {}  # the model environment new replicas start with
        self.in_flight = 0
        self.stopping = False
        self.replaced = 0  # replicas that crashed or hung and were replaced
        self.failed_in_flight = 0  # requests lost with a replica
        self.on_change = on_change
        self._ids = itertools.count(1)
        self._numbers = itertools.count(1)
        self._tmp = serve_folder.make()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._low_since: float | None = None
        self._spares_starting = 0
        # set to give up a roll-over whose new replica is still starting (its alias moved on)
        self.abandon: asyncio.Event | None = None
        self.loop = asyncio.get_event_loop()
        # each pool numbers its replicas from 1: the logs say which pool a number belongs to
        self.where = f" (pool {options.label})" if options.label else ""

    # -- starting and stopping replicas ---------------------------------------------------------

    async def start(self, generation: dict[str, str] | None = None) -> None:
        self.generation = dict(generation or {})
        started = await asyncio.gather(
            *(self.spawn(self.generation) for _ in range(self.options.replicas)),
            return_exceptions=True,
        )
        errors = [r for r in started if isinstance(r, BaseException)]
        if errors:
            await self.shutdown(0)
            raise errors[0]
        self._background(self._health_loop())
        self._background(self._keep_spares())

    async def _keep_spares(self) -> None:
        """Start spares until `options.spares` of the current generation wait, warm."""
        while not self.stopping and self._spares() + self._spares_starting < self.options.spares:
            self._spares_starting += 1
            try:
                replica = await self.spawn(self.generation, serve=False)
            except RuntimeError as exc:
                logger.error("a spare replica did not start%s: %s", self.where, exc)
                await asyncio.sleep(1.0)
                continue
            finally:
                self._spares_starting -= 1
            if replica.generation != self.generation or self.stopping:  # rolled over meanwhile
                self.retire(replica)
                continue
            replica.state = "spare"
            logger.info("replica %d is a spare%s", replica.number, self.where)

    def _spares(self) -> int:
        return sum(
            1 for r in self.replicas if r.state == "spare" and r.generation == self.generation
        )

    def _background(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def spawn(self, generation: dict[str, str], *, serve: bool = True) -> Replica:
        """Start one replica and wait until it has imported its handlers; with `serve`, it
        then takes requests. Raises RuntimeError when it exits or stalls first."""
        number = next(self._numbers)
        config = {
            **self.config,
            "parent": os.getpid(),
            "environment": generation,
            "scratch": str(self._tmp / f"scratch-{number}"),
        }
        path = self._tmp / f"replica-{number}.json"
        path.write_text(json.dumps(config))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for s in (ours, theirs):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        cmd = [sys.executable, "-m", "headrace.serving.replica", str(path), str(theirs.fileno())]
        proc = subprocess.Popen(cmd, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        theirs.close()
        replica = Replica(number, dict(generation), proc, ready=self.loop.create_future())
        self.replicas.append(replica)
        await self.loop.create_unix_connection(lambda: _ReplicaProtocol(self, replica), sock=ours)
        try:
            assert replica.ready is not None
            info = await self._wait_ready(replica, generation)
        except (TimeoutError, RuntimeError) as exc:
            reason = str(exc) or f"not ready after --start-timeout {self.options.start_timeout:g} s"
            if reason.startswith("it exited"):  # its code, once the kernel has it
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await asyncio.to_thread(proc.wait, 5)
                reason = f"it exited (code {proc.returncode})"
                with contextlib.suppress(OSError):  # what stopped it, if it could say
                    reason += ": " + Path(f"{path}.error").read_text()
            self._kill(replica)
            raise RuntimeError(f"replica {number}{self.where} did not start ({reason})") from None
        model = generation.get("HEADRACE_MODEL")
        logger.info(
            "replica %d ready (pid %s)%s%s",
            number,
            info.get("pid"),
            self.where,
            f", model {model}" if model else "",
        )
        if serve:
            self._serve(replica)
        return replica

    async def _wait_ready(self, replica: Replica, generation: dict[str, str]) -> Any:
        assert replica.ready is not None
        abandon = self.abandon
        if abandon is None or generation == self.generation:
            return await asyncio.wait_for(replica.ready, self.options.start_timeout)
        waiter = asyncio.ensure_future(abandon.wait())
        try:
            done, _ = await asyncio.wait(
                {replica.ready, waiter},
                timeout=self.options.start_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            waiter.cancel()
        if replica.ready in done:
            return replica.ready.result()
        if waiter in done:
            raise RuntimeError("given up: the alias moved on while it started")
        raise TimeoutError

    def _serve(self, replica: Replica) -> None:
        replica.state = "ready"
        self.ready.append(replica)
        self.on_change()

    def _kill(self, replica: Replica) -> None:
        with contextlib.suppress(ProcessLookupError):
            if replica.proc.returncode is None:  # a reaped pid may be another process's now
                os.kill(replica.pid, signal.SIGKILL)
        if replica.transport is not None:
            replica.transport.close()

    def retire(self, replica: Replica) -> None:
        """Take no new requests; close once those it has are answered."""
        if replica in self.ready:
            self.ready.remove(replica)
        replica.state = "draining"
        self.on_change()
        if not replica.outstanding and replica.transport is not None:
            replica.transport.close()

    # -- requests ---------------------------------------------------------------------------------

    def submit(self, payload: bytes, callback: Callback, timeout: float) -> bool:
        """Send a request to the replica with the fewest outstanding; False when none is
        ready. Past `timeout` seconds the client gets a 504 and the replica is replaced."""
        ready = self.ready
        if not ready:
            return False
        replica = ready[0]
        if len(ready) > 1:
            best = len(replica.outstanding)
            for other in ready:
                n = len(other.outstanding)
                if n < best:
                    replica, best = other, n
        request_id = next(self._ids) & 0xFFFFFFFF
        timer = self.loop.call_later(timeout, self._timed_out, replica, request_id)
        replica.outstanding[request_id] = Outstanding(callback, timer, payload, timeout)
        self.in_flight += 1
        assert replica.transport is not None
        replica.transport.write(protocol.frame(protocol.REQUEST, request_id, payload))
        return True

    def queued(self, route: int) -> int:
        """Requests of route `route` (this pool's index) sent to a replica that has not
        started them yet: waiting behind others."""
        return sum(
            1
            for replica in self.replicas
            for entry in replica.outstanding.values()
            if not entry.started and protocol.request_route(entry.payload) == route
        )

    def on_frame(self, replica: Replica, request_id: int, kind: int, payload: bytes) -> None:
        if kind == protocol.RESPONSE:
            entry = replica.outstanding.pop(request_id, None)
            if entry is None:
                return  # answered after its timeout
            self.in_flight -= 1
            entry.timer.cancel()
            status, headers, body = protocol.decode_response(payload)
            replica.answered += 1
            if status >= 500:
                replica.failed += 1
            entry.callback(status, headers, body)
            if replica.state == "draining" and not replica.outstanding:
                assert replica.transport is not None
                replica.transport.close()
        elif kind == protocol.START:
            started = replica.outstanding.get(request_id)
            if started is not None:
                started.started = True
        elif kind == protocol.PONG:
            replica.ping_sent = 0.0
        elif kind == protocol.READY and replica.ready is not None and not replica.ready.done():
            replica.ready.set_result(json.loads(payload))

    def _timed_out(self, replica: Replica, request_id: int) -> None:
        entry = replica.outstanding.pop(request_id, None)
        if entry is None:
            return
        self.in_flight -= 1
        entry.callback(*TIMED_OUT)
        if not entry.started:
            return  # it waited behind a slower request, which may yet end in its own time
        # its one thread is stuck in a handler: replace it (what waited behind goes elsewhere)
        logger.warning(
            "replica %d%s: a request ran past its timeout; replacing it",
            replica.number,
            self.where,
        )
        self._kill(replica)

    def on_lost(self, replica: Replica) -> None:
        was = replica.state
        replica.state = "dead"
        if replica in self.ready:
            self.ready.remove(replica)
        if replica in self.replicas:
            self.replicas.remove(replica)
        waiting = list(replica.outstanding.values())
        replica.outstanding.clear()
        self.in_flight -= len(waiting)
        # only what the replica had started is lost; what waited behind it is sent again
        lost = [entry for entry in waiting if entry.started or self.stopping]
        for entry in waiting:
            entry.timer.cancel()
            if entry in lost:
                entry.callback(*BAD_GATEWAY)
        resent = self._resend([entry for entry in waiting if entry not in lost])
        if replica.ready is not None and not replica.ready.done():
            replica.ready.set_exception(RuntimeError(f"it exited (code {replica.proc.poll()})"))
        self._background(self._reap(replica))
        self.on_change()
        if was == "spare" and not self.stopping:
            self._background(self._keep_spares())
        if was == "ready" and not self.stopping:
            self.failed_in_flight += len(lost)
            self.replaced += 1
            logger.warning(
                "replica %d (pid %d)%s is gone with %d requests in flight "
                "(%d not yet started sent to other replicas); starting another",
                replica.number,
                replica.pid,
                self.where,
                len(lost),
                resent,
            )
            self._background(self._replace())

    def _resend(self, entries: list[Outstanding]) -> int:
        """Send requests a lost replica had not started to the others (their timeout counts
        afresh, as a function's timeout counts its run, not its wait); how many were sent."""
        sent = 0
        for entry in entries:
            if self.submit(entry.payload, entry.callback, entry.timeout):
                sent += 1
            else:
                entry.callback(*NO_REPLICA)
        return sent

    async def _reap(self, replica: Replica) -> None:
        for _ in range(50):
            if replica.proc.poll() is not None:
                return
            await asyncio.sleep(0.1)
        self._kill(replica)
        await asyncio.to_thread(replica.proc.wait)

    async def _replace(self) -> None:
        spare = next(
            (r for r in self.replicas if r.state == "spare" and r.generation == self.generation),
            None,
        )
        if spare is not None and len(self.ready) < self.min:
            logger.info("spare replica %d takes the lost one's place%s", spare.number, self.where)
            self._serve(spare)
            self._background(self._keep_spares())
            return
        delay = 0.5
        while not self.stopping and len(self.ready) < self.min:
            try:
                await self.spawn(self.generation)
                return
            except RuntimeError as exc:
                logger.error("%s; trying again in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    # -- health and scale -------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        opts = self.options
        while not self.stopping:
            await asyncio.sleep(opts.health_interval)
            now = time.monotonic()
            for replica in list(self.ready):
                if replica.proc.poll() is not None:
                    self._kill(replica)
                elif replica.ping_sent and now - replica.ping_sent > max(opts.timeout, 5.0):
                    logger.warning(
                        "replica %d%s does not answer its health check", replica.number, self.where
                    )
                    self._kill(replica)
                elif not replica.ping_sent and replica.transport is not None:
                    replica.ping_sent = now
                    replica.transport.write(protocol.frame(protocol.PING, 0))
            self._autoscale(now)

    def _autoscale(self, now: float) -> None:
        if self.max == self.min or self.stopping:
            return
        count = len(self.ready)
        per_replica = self.in_flight / max(count, 1)
        starting = sum(1 for r in self.replicas if r.state == "starting")
        if per_replica >= self.options.scale_up_at and count + starting < self.max:
            logger.info(
                "scaling up%s: %.1f requests per replica; starting one more",
                self.where,
                per_replica,
            )
            self._background(self.spawn(self.generation))
            self._low_since = None
        elif per_replica < 1 and count > self.min:
            self._low_since = self._low_since or now
            if now - self._low_since >= self.options.scale_down_after:
                idle = min(self.ready, key=lambda r: len(r.outstanding))
                logger.info(
                    "scaling down%s: replica %d retires (under one request per replica for "
                    "%gs; %d left)",
                    self.where,
                    idle.number,
                    self.options.scale_down_after,
                    count - 1,
                )
                self.retire(idle)
                self._low_since = None
        else:
            self._low_since = None

    # -- rolling over to another model version ---------------------------------------------

    async def roll_over(self, generation: dict[str, str]) -> bool:
        """Replace the replicas one by one with ones started on `generation`; the old ones keep
        serving until each new one is ready, then drain. False, with the old generation back,
        when a new replica fails to start or answers more than `rollout_errors` of its first
        `rollout_watch` requests with a 5xx."""
        old_generation = self.generation
        old = [r for r in self.ready if r.generation == old_generation]
        new: list[Replica] = []
        try:
            for previous in old or [None]:
                replica = await self.spawn(generation)
                new.append(replica)
                # old and new serve side by side until the new one proves itself
                if not await self._looks_healthy(replica):
                    raise RuntimeError(f"replica {replica.number} answers with errors")
                if previous is not None:
                    self.retire(previous)
        except RuntimeError as exc:
            logger.error("roll-over to %s failed: %s; rolling back", generation, exc)
            for replica in new:
                self.retire(replica)
            while len([r for r in self.ready if r.generation == old_generation]) < len(old):
                await self.spawn(old_generation)
            return False
        self.generation = dict(generation)
        for replica in [r for r in self.replicas if r.state == "spare"]:
            self.retire(replica)  # the old version's
        if self.options.spares:
            self._background(self._keep_spares())
        return True

    async def _looks_healthy(self, replica: Replica) -> bool:
        watch = self.options.rollout_watch
        deadline = time.monotonic() + max(5.0, self.options.timeout)
        while replica.answered < watch and time.monotonic() < deadline:
            if replica.state == "dead":
                return False
            if replica.failed >= watch * self.options.rollout_errors:
                return False
            await asyncio.sleep(0.05)
        if replica.state == "dead":
            return False
        return (
            not replica.answered or replica.failed / replica.answered <= self.options.rollout_errors
        )

    # -- stopping ----------------------------------------------------------------------------

    async def shutdown(self, drain_timeout: float) -> None:
        """Let outstanding requests finish (up to `drain_timeout`), then stop every replica."""
        self.stopping = True
        deadline = time.monotonic() + drain_timeout
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for task in list(self._tasks):
            task.cancel()
        for replica in list(self.replicas):
            if replica.transport is not None:
                replica.transport.close()  # the replica exits when its socket closes
        end = time.monotonic() + 5.0
        for replica in list(self.replicas):
            while replica.proc.poll() is None and time.monotonic() < end:
                await asyncio.sleep(0.02)
            if replica.proc.poll() is None:
                self._kill(replica)
                await asyncio.to_thread(replica.proc.wait)
        self.remove_folder()

    def remove_folder(self) -> None:
        """The serve folder: replica configurations and their scratch folders."""
        shutil.rmtree(self._tmp, ignore_errors=True)

    def snapshot(self) -> dict[str, Any]:
        return {
            "replicas": [
                {
                    "number": r.number,
                    "pid": r.pid,
                    "state": r.state,
                    "outstanding": len(r.outstanding),
                    "model": r.generation.get("HEADRACE_MODEL"),
                }
                for r in self.replicas
            ],
            "in_flight": self.in_flight,
            "replaced": self.replaced,
        }
