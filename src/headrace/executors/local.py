"""The local executor: a pool of worker processes on this machine.

Each worker runs one call at a time. Timeouts and memory limits are enforced from outside by
killing the worker, so no user code can ignore them, and a fresh worker takes its place. Calls
of functions that finish in milliseconds are pipelined (a few queued per worker) so the pipe
round trip does not idle the workers; slow calls are never queued behind each other.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

from headrace.executors.base import Call, Outcome
from headrace.executors.calls import run_call

log = logging.getLogger("headrace.executors")

FAST_CALL_SECONDS = 0.01  # calls quicker than this on average may queue behind each other
MONITOR_INTERVAL = 0.05  # how often deadlines and memory are checked


def _worker_main(name: str, calls: Connection, outcomes: Connection) -> None:
    os.environ["HEADRACE_WORKER"] = name
    while True:
        try:
            call = calls.recv()
        except (EOFError, OSError):
            return
        if call is None:
            return
        outcome = run_call(call, worker=name)
        try:
            outcomes.send(outcome)
        except Exception as exc:  # the value could not be pickled: report that instead
            outcome.value = None
            outcome.status = "error"
            outcome.error = f"TypeError: the result of {call.target} cannot be sent back: {exc}"
            outcomes.send(outcome)


@dataclass
class _Worker:
    index: int
    process: mp.process.BaseProcess
    calls: Connection
    outcomes: Connection
    queue: deque[tuple[Call, float]] = field(default_factory=deque)  # (call, submitted_at)
    head_started: float = 0.0  # when the call at the head of the queue began running
    kill_reason: tuple[str, str] | None = None  # (status, error) when we stopped it

    @property
    def name(self) -> str:
        return f"local-{self.index}-{self.process.pid}"


class LocalExecutor:
    name = "local"

    def __init__(
        self, workers: int | None = None, *, max_depth: int = 4, preload: list[str] | None = None
    ) -> None:
        self.size = max(1, workers or os.cpu_count() or 1)
        self.max_depth = max(1, max_depth)
        self._ctx = mp.get_context("forkserver")
        self._ctx.set_forkserver_preload(["headrace.executors.calls", *(preload or [])])
        self._workers: list[_Worker] = []
        self._lock = threading.RLock()
        self._done: list[Outcome] = []
        self._notify: Callable[[], None] = lambda: None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._speed: dict[str, float] = {}  # tag -> moving average of call seconds
        self._spawned = 0

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, notify: Callable[[], None]) -> None:
        self._notify = notify
        with self._lock:
            self._workers = [self._spawn(i) for i in range(self.size)]
        self._thread = threading.Thread(
            target=self._watch, name="headrace-local-executor", daemon=True
        )
        self._thread.start()

    def _spawn(self, index: int) -> _Worker:
        calls_r, calls_w = self._ctx.Pipe(duplex=False)
        out_r, out_w = self._ctx.Pipe(duplex=False)
        self._spawned += 1
        process = self._ctx.Process(
            target=_worker_main,
            args=(f"local-{index}-{self._spawned}", calls_r, out_w),
            name=f"headrace-worker-{index}",
            daemon=True,
        )
        process.start()
        calls_r.close()
        out_w.close()
        return _Worker(index, process, calls_w, out_r)

    def shutdown(self, *, wait: bool = True, timeout: float | None = None) -> list[Outcome]:
        deadline = None if timeout is None else time.monotonic() + timeout
        if wait:
            while self.in_flight() and (deadline is None or time.monotonic() < deadline):
                time.sleep(0.02)
        self._stopping = True
        with self._lock:
            for w in self._workers:
                for call, _ in w.queue:
                    self._done.append(
                        Outcome(
                            call.id,
                            "crashed",
                            error="ExecutorShutdown: stopped before it finished",
                            worker=w.name,
                        )
                    )
                w.queue.clear()
                with contextlib.suppress(OSError):
                    w.calls.send(None)
        for w in self._workers:
            w.process.join(timeout=2)
            if w.process.is_alive():
                w.process.kill()
                w.process.join(timeout=2)
        if self._thread:
            self._thread.join(timeout=2)
        return self.collect()

    # -- submitting ---------------------------------------------------------------------------

    def _accepts(self, w: _Worker) -> bool:
        if not w.queue:
            return True
        if len(w.queue) >= self.max_depth:
            return False
        return all(self._speed.get(c.tag, 1.0) < FAST_CALL_SECONDS for c, _ in w.queue)

    def free_slots(self) -> int:
        with self._lock:
            free = 0
            for w in self._workers:
                if not w.queue:
                    free += self.max_depth if self._speed else 1
                elif self._accepts(w):
                    free += self.max_depth - len(w.queue)
            return free

    def in_flight(self) -> int:
        with self._lock:
            return sum(len(w.queue) for w in self._workers)

    def submit(self, call: Call) -> None:
        with self._lock:
            candidates = [w for w in self._workers if self._accepts(w)] or self._workers
            w = min(candidates, key=lambda x: len(x.queue))
            self._send(w, call)

    def _send(self, w: _Worker, call: Call) -> None:
        now = time.time()
        if not w.queue:
            w.head_started = now
        w.queue.append((call, now))
        # a dead worker fails the send; the watcher thread then re-routes its queue
        with contextlib.suppress(OSError, ValueError):
            w.calls.send(call)

    def collect(self) -> list[Outcome]:
        with self._lock:
            done, self._done = self._done, []
            return done

    # -- the watcher thread -------------------------------------------------------------------

    def _watch(self) -> None:
        next_check = 0.0
        while not self._stopping:
            with self._lock:
                handles = {}
                for w in self._workers:
                    handles[w.outcomes] = w
                    handles[w.process.sentinel] = w
            try:
                ready = wait(list(handles), timeout=MONITOR_INTERVAL)
            except OSError:
                ready = []
            got = False
            for handle in ready:
                w = handles[handle]
                if handle is w.outcomes:
                    got |= self._receive(w)
            for handle in ready:
                w = handles[handle]
                if handle is not w.outcomes and not w.process.is_alive():
                    got |= self._replace(w)
            now = time.time()
            if now >= next_check:
                next_check = now + MONITOR_INTERVAL
                self._enforce_limits(now)
            if got:
                self._notify()

    def _receive(self, w: _Worker) -> bool:
        got = False
        while True:
            try:
                if not w.outcomes.poll():
                    break
                outcome: Outcome = w.outcomes.recv()
            except (EOFError, OSError):
                break
            with self._lock:
                if not w.queue:
                    continue
                call, _ = w.queue.popleft()
                w.head_started = time.time()
                if outcome.started_at and outcome.finished_at:
                    took = outcome.finished_at - outcome.started_at
                    prev = self._speed.get(call.tag)
                    self._speed[call.tag] = took if prev is None else 0.8 * prev + 0.2 * took
                self._done.append(outcome)
                got = True
        return got

    def _replace(self, w: _Worker) -> bool:
        """A worker exited: report its running call, requeue the ones that never started."""
        self._receive(w)  # outcomes it managed to send before dying
        with self._lock:
            if w not in self._workers or self._stopping:
                return False
            code = w.process.exitcode
            queued = list(w.queue)
            w.queue.clear()
            got = False
            if queued:
                call, _ = queued[0]
                status, error = w.kill_reason or (
                    "crashed",
                    f"WorkerCrashed: the worker running {call.tag or call.target} exited "
                    f"with code {code}",
                )
                self._done.append(
                    Outcome(
                        call.id,
                        status,  # type: ignore[arg-type]
                        error=error,
                        started_at=w.head_started,
                        finished_at=time.time(),
                        worker=w.name,
                    )
                )
                got = True
            for stream in (w.calls, w.outcomes):
                with contextlib.suppress(OSError):
                    stream.close()
            fresh = self._spawn(w.index)
            self._workers[self._workers.index(w)] = fresh
            for call, _ in queued[1:]:
                self.submit(call)
            return got

    def _enforce_limits(self, now: float) -> None:
        with self._lock:
            for w in self._workers:
                if not w.queue or w.kill_reason:
                    continue
                call, _ = w.queue[0]
                if call.timeout and now - w.head_started > call.timeout:
                    w.kill_reason = (
                        "timeout",
                        f"InvocationTimeout: {call.tag or call.target} ran longer than its "
                        f"timeout of {call.timeout:g} s and its worker was stopped",
                    )
                    w.process.kill()
                elif call.memory_limit_mb:
                    rss = _rss_mb(w.process.pid)
                    if rss is not None and rss > call.memory_limit_mb:
                        w.kill_reason = (
                            "memory",
                            f"MemoryLimitExceeded: {call.tag or call.target} used {rss:.0f} MB, "
                            f"over its limit of {call.memory_limit_mb} MB; raise memory= or "
                            "process the input in smaller pieces",
                        )
                        w.process.kill()


def _rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        try:
            import psutil

            return psutil.Process(pid).memory_info().rss / (1024 * 1024)
        except Exception:
            return None
