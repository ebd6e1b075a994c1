"""The local executor: a pool of worker processes on this machine.

Each worker runs one call at a time. Timeouts and memory limits are enforced from outside by
killing the worker, so no user code can ignore them, and a fresh worker takes its place. Calls
of functions that finish in milliseconds are pipelined (about 20 ms of work queued per worker)
so the pipe round trip does not idle the workers. A function whose calls take up to half a
second gets one call prefetched per busy worker: between two calls a worker would otherwise
wait ~4 ms for the coordinator to record the first and hand it the next (8% of a 50 ms GRIB
conversion). Longer calls are never queued behind each other. Only busy workers get a second
call (calls go to the least-loaded worker first), and a queued call's timeout starts when the
call before it ends.

Workers never outlive the coordinator: they are forked by multiprocessing's fork server, which
exits when the coordinator's process does (even after `kill -9`), and each worker asks the kernel
to SIGKILL it when the fork server exits. The fork server and the workers are out of the
coordinator's process group and ignore SIGTERM/SIGINT, so a signal to the whole group (systemd,
`timeout`, Ctrl-C) reaches only the coordinator, which drains them. A worker's stderr (native
libraries write there directly) goes through a pipe to the coordinator's stderr; its last lines
are kept and attached to the error of a call whose worker died.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

from headrace.errors import TmpSpaceExceeded
from headrace.executors import lifetime
from headrace.executors.base import Call, Outcome
from headrace.executors.calls import run_call

log = logging.getLogger("headrace.executors")

QUEUED_WORK_SECONDS = 0.02  # how much expected work may wait in a worker's queue
PREFETCH_SECONDS = 0.5  # calls expected to take at most this long may wait behind one other
MAX_DEPTH = 64
MONITOR_INTERVAL = 0.05  # how often deadlines and memory are checked
FLUSH_SECONDS = 0.005  # a worker running a batch reports at least this often
SCRATCH_INTERVAL = 0.1  # how often a running call's scratch folder is measured
STDERR_LINES = 20  # the last lines of a worker's stderr kept for the error of a call it dies in


def _worker_main(
    name: str,
    calls: Connection,
    outcomes: Connection,
    stderr: Connection,
    parent: int | None,
) -> None:
    lifetime.die_with_parent(parent)
    lifetime.release_fork_server(keep={calls.fileno(), outcomes.fileno(), stderr.fileno()})
    lifetime.shield_from_group_signals()
    # fd 2 itself, so that what native code writes (abort messages, ecCodes) is captured too
    os.dup2(stderr.fileno(), 2)
    stderr.close()
    name = f"{name}-{os.getpid()}"
    os.environ["HEADRACE_WORKER"] = name
    while True:
        try:
            batch = calls.recv()
        except (EOFError, OSError):
            return
        if batch is None:
            return
        done: list[Outcome] = []
        flushed = time.monotonic()
        for call in batch:
            done.append(run_call(call, worker=name))
            if time.monotonic() - flushed > FLUSH_SECONDS:
                _send(outcomes, done)
                done, flushed = [], time.monotonic()
        if done:
            _send(outcomes, done)


def _send(outcomes: Connection, done: list[Outcome]) -> None:
    try:
        outcomes.send(done)
    except Exception:  # some value could not be pickled: find it and report that instead
        for outcome in done:
            try:
                outcomes.send([outcome])
            except Exception as exc:
                outcome.value = None
                outcome.status = "error"
                outcome.error = f"TypeError: the result cannot be sent back: {exc}"
                outcomes.send([outcome])


@dataclass
class _Worker:
    index: int
    process: mp.process.BaseProcess
    calls: Connection
    outcomes: Connection
    queue: deque[tuple[Call, float]] = field(default_factory=deque)  # (call, submitted_at)
    head_started: float = 0.0  # when the call at the head of the queue began running
    kill_reason: tuple[str, str] | None = None  # (status, error) when we stopped it
    stderr: Connection | None = None  # the read end of the worker's fd 2
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_LINES))
    stderr_partial: bytes = b""
    scratch_checked: float = 0.0

    name: str = ""  # what the worker calls itself in the outcomes it sends


class LocalExecutor:
    name = "local"

    def __init__(
        self,
        workers: int | None = None,
        *,
        max_depth: int = MAX_DEPTH,
        preload: list[str] | None = None,
    ) -> None:
        self.size = max(1, workers or os.cpu_count() or 1)
        self.max_depth = max(1, max_depth)
        self._ctx = mp.get_context("forkserver")
        self._ctx.set_forkserver_preload(
            ["headrace.executors.forkserver_init", "headrace.executors.calls", *(preload or [])]
        )
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
        # The first spawn starts the fork server, in our process group until it calls setsid: a
        # Ctrl-C meanwhile would kill it mid-import (a traceback, then EOFError here). It
        # inherits this thread's signal mask, so hold SIGINT/SIGTERM back while it starts;
        # forkserver_init discards them once it ignores them. This process still gets them.
        # The resource tracker starts first: its own start unblocks both when it is done.
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()
        held = {signal.SIGINT, signal.SIGTERM}
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            with self._lock:
                self._workers = [self._spawn(i) for i in range(self.size)]
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        self._thread = threading.Thread(
            target=self._watch, name="headrace-local-executor", daemon=True
        )
        self._thread.start()

    def _spawn(self, index: int) -> _Worker:
        calls_r, calls_w = self._ctx.Pipe(duplex=False)
        out_r, out_w = self._ctx.Pipe(duplex=False)
        err_r, err_w = self._ctx.Pipe(duplex=False)
        self._spawned += 1
        name = f"local-{index}-{self._spawned}"
        process = self._ctx.Process(
            target=_worker_main,
            args=(name, calls_r, out_w, err_w, lifetime.fork_server_pid()),
            name=f"headrace-worker-{index}",
            daemon=True,
        )
        process.start()
        calls_r.close()
        out_w.close()
        err_w.close()
        os.set_blocking(err_r.fileno(), False)
        return _Worker(index, process, calls_w, out_r, stderr=err_r, name=f"{name}-{process.pid}")

    def shutdown(self, *, wait: bool = True, timeout: float | None = None) -> list[Outcome]:
        deadline = None if timeout is None else time.monotonic() + timeout
        if wait:
            while self.in_flight() and (deadline is None or time.monotonic() < deadline):
                time.sleep(0.02)
        self._stopping = True
        with self._lock:
            for w in self._workers:
                if w.queue and not wait:
                    lifetime.kill_group(w.process.pid)  # stopping now: do not wait for its call
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
                    w.calls.send(None)  # a worker's loop ends on None
        for w in self._workers:
            w.process.join(timeout=2)
            if w.process.is_alive():
                lifetime.kill_group(w.process.pid)
                w.process.join(timeout=2)
        if self._thread:
            self._thread.join(timeout=2)
        for w in self._workers:
            self._read_stderr(w)
            if w.stderr is not None:
                w.stderr.close()
        return self.collect()

    # -- submitting ---------------------------------------------------------------------------

    def _depth(self, tag: str) -> int:
        """How many calls of this kind one worker may hold: ~20 ms of work, at least two when
        a call is expected to take at most PREFETCH_SECONDS, one when slower or unknown."""
        seconds = self._speed.get(tag)
        if seconds is None:
            return 1  # unknown: never queue it behind anything
        pipelined = min(self.max_depth, int(QUEUED_WORK_SECONDS / max(seconds, 1e-5)))
        prefetch = 2 if seconds <= PREFETCH_SECONDS and self.max_depth > 1 else 1
        return max(prefetch, pipelined)

    def _room(self, w: _Worker, tag: str | None = None) -> int:
        tags = {c.tag for c, _ in w.queue}
        if tag is not None:
            tags.add(tag)
        if not tags:
            return max((self._depth(t) for t in self._speed), default=1)
        return min(self._depth(t) for t in tags) - len(w.queue)

    def free_slots(self) -> int:
        with self._lock:
            return sum(max(0, self._room(w)) for w in self._workers)

    def in_flight(self) -> int:
        with self._lock:
            return sum(len(w.queue) for w in self._workers)

    def submit(self, call: Call) -> None:
        self.submit_many([call])

    def submit_many(self, calls: list[Call]) -> None:
        """Hand calls to workers, one message per worker, least-loaded first."""
        batches: dict[int, list[Call]] = {}
        with self._lock:
            now = time.time()
            for call in calls:
                fits = [w for w in self._workers if self._room(w, call.tag) > 0]
                w = min(fits or self._workers, key=lambda x: len(x.queue))
                if not w.queue:
                    w.head_started = now
                w.queue.append((call, now))
                batches.setdefault(w.index, []).append(call)
            for w in self._workers:
                batch = batches.get(w.index)
                # a dead worker fails the send; the watcher thread then re-routes its queue
                if batch:
                    with contextlib.suppress(OSError, ValueError):
                        w.calls.send(batch)

    def collect(self) -> list[Outcome]:
        with self._lock:
            # read the pipes here too: the watcher thread may be waiting for the GIL
            for w in self._workers:
                self._receive(w)
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
                    if w.stderr is not None:
                        handles[w.stderr] = w
            try:
                ready = wait(list(handles), timeout=MONITOR_INTERVAL)
            except OSError:
                ready = []
            got = False
            for handle in ready:
                w = handles[handle]
                if handle is w.stderr:
                    self._read_stderr(w)
            for handle in ready:
                w = handles[handle]
                if handle is w.outcomes:
                    got |= self._receive(w)
            for handle in ready:
                w = handles[handle]
                if handle is w.process.sentinel and not w.process.is_alive():
                    got |= self._replace(w)
            now = time.time()
            if now >= next_check:
                next_check = now + MONITOR_INTERVAL
                self._enforce_limits(now)
            if got:
                self._notify()

    def _receive(self, w: _Worker) -> bool:
        """Take every outcome the worker has sent so far (either thread may call this)."""
        got = False
        with self._lock:
            while True:
                try:
                    if not w.outcomes.poll():
                        break
                    batch: list[Outcome] = w.outcomes.recv()
                except (EOFError, OSError):
                    break
                for outcome in batch:
                    if not w.queue:
                        break
                    call, _ = w.queue.popleft()
                    w.head_started = outcome.finished_at or time.time()
                    if outcome.started_at and outcome.finished_at:
                        took = outcome.finished_at - outcome.started_at
                        prev = self._speed.get(call.tag)
                        self._speed[call.tag] = took if prev is None else 0.8 * prev + 0.2 * took
                    self._done.append(outcome)
                    w.stderr_tail.clear()  # what follows belongs to the next call
                    got = True
        return got

    def _read_stderr(self, w: _Worker) -> None:
        """Pass what the worker wrote to fd 2 on to ours, keeping its last lines."""
        if w.stderr is None:
            return
        fd = w.stderr.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                w.stderr.close()
                w.stderr = None
                if w.stderr_partial:
                    w.stderr_tail.append(_line(w.stderr_partial))
                    w.stderr_partial = b""
                return
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
                os.write(sys.stderr.fileno(), data)
            *lines, w.stderr_partial = (w.stderr_partial + data).split(b"\n")
            w.stderr_tail.extend(_line(x) for x in lines if x.strip())
            if len(w.stderr_partial) > 4096:
                w.stderr_tail.append(_line(w.stderr_partial))
                w.stderr_partial = b""

    def _replace(self, w: _Worker) -> bool:
        """A worker exited: report its running call, requeue the ones that never started."""
        self._receive(w)  # outcomes it managed to send before dying
        self._read_stderr(w)  # its last words, up to EOF (or what is there, if a child holds it)
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
                    f"WorkerCrashed: the worker running {call.tag or call.target} "
                    f"{_exit_description(code)}",
                )
                tail = [line for line in w.stderr_tail if line.strip()]
                if tail and not w.kill_reason:
                    error += f"; its last stderr lines: {' | '.join(tail[-5:])}"
                self._done.append(
                    Outcome(
                        call.id,
                        status,  # type: ignore[arg-type]
                        error=error,
                        traceback="\n".join(tail) + "\n" if tail else None,
                        started_at=w.head_started,
                        finished_at=time.time(),
                        worker=w.name,
                    )
                )
                got = True
            for stream in (w.calls, w.outcomes, w.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            lifetime.kill_group(w.process.pid)  # what its handler started dies with it
            fresh = self._spawn(w.index)
            self._workers[self._workers.index(w)] = fresh
            self.submit_many([call for call, _ in queued[1:]])
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
                    lifetime.kill_group(w.process.pid)
                    continue
                if self._scratch_over(w, call, now):
                    continue
                if call.memory_limit_mb:
                    rss = _rss_mb(w.process.pid)
                    if rss is not None and rss > call.memory_limit_mb:
                        w.kill_reason = (
                            "memory",
                            f"MemoryLimitExceeded: {call.tag or call.target} used {rss:.0f} MB, "
                            f"over its limit of {call.memory_limit_mb} MB; raise memory= or "
                            "process the input in smaller pieces",
                        )
                        lifetime.kill_group(w.process.pid)

    def _scratch_over(self, w: _Worker, call: Call, now: float) -> bool:
        """Measure the running call's scratch folder; stop the worker when it is over the limit
        (while it writes: a 2 GiB write would otherwise only be noticed when it finished)."""
        if not call.scratch_dir or call.scratch_limit_mb is None:
            return False
        if now - w.scratch_checked < SCRATCH_INTERVAL:
            return False
        w.scratch_checked = now
        used = _folder_bytes(call.scratch_dir)
        if used <= call.scratch_limit_mb * 2**20:
            return False
        exc = TmpSpaceExceeded(
            f"function {call.tag or call.target!r} invocation {call.id.partition('@')[0]}",
            f"wrote {used / 2**20:.1f} MB to its scratch folder, over its "
            f"{call.scratch_limit_mb} MB limit, and its worker was stopped",
            "raise tmp_size= in @app.function, or clean up files it no longer needs",
        )
        w.kill_reason = ("error", f"TmpSpaceExceeded: {exc}")
        lifetime.kill_group(w.process.pid)
        return True


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


def _exit_description(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name} (exit code {code})"
    return f"exited with code {code}"


def _line(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").rstrip("\r")[:500]


def _folder_bytes(path: str) -> int:
    """Bytes in the files under `path` (0 when it does not exist yet)."""
    total = 0
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total
