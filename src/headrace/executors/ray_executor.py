"""The Ray executor: every call is a Ray task, on a local Ray or on a cluster.

The task runs `run_call` inside the Ray worker, so a function behaves as it does in the local
executor. Limits are enforced by stopping the worker: a timeout from the driver with
`ray.cancel(force=True)`, a memory limit from a thread inside the task that ends the worker
process. A killed worker only surfaces in Ray as a generic `WorkerCrashedError`, so before it
exits the memory watcher records the event in a small actor; that record is what turns a crash
into a `memory` outcome instead of a guess.

`ray` is imported lazily so this module imports without the optional dependency.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from headrace.errors import ExecutorError
from headrace.executors.base import Call, Outcome
from headrace.executors.calls import run_call

log = logging.getLogger("headrace.executors")

MiB = 1024 * 1024
POLL_INTERVAL = 0.1  # longest a new submit waits before the waiter thread includes it
MEMORY_SAMPLE_INTERVAL = 0.05
MEMORY_RECORD_TIMEOUT = 3.0  # how long a worker over its limit waits to record that, then dies
MEMORY_EXIT_CODE = 86  # only shows up in Ray's worker logs, which helps someone reading them
RECORDER_TIMEOUT = 5.0
# Ray's switch for a loopback-only node (its default on macOS and Windows): every server of the
# local Ray we start (GCS, raylet, agents, workers) then listens on 127.0.0.1 only; otherwise
# they listen on all interfaces, which HEADRACE_TOKEN does not cover.
RAY_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
RAY_EXIT_GRACE = 5.0  # how long Ray's own processes get to exit after ray.shutdown()
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ExecutorError(
            "ray executor",
            f"the ray package is not installed ({exc})",
            "pip install 'headrace[ray]'",
        ) from exc
    return ray


# -- inside the Ray worker ----------------------------------------------------------------------


class _LimitRecorder:
    """Actor that remembers which task attempts a memory watcher stopped.

    An actor rather than a file because the worker may be on another node, and Ray reports a
    worker that exits on purpose the same way as one that segfaults.
    """

    def __init__(self) -> None:
        self._events: dict[str, dict[str, Any]] = {}

    def ping(self) -> bool:
        return True

    def record(self, token: str, info: dict[str, Any]) -> None:
        self._events[token] = info

    def pop(self, token: str) -> dict[str, Any] | None:
        return self._events.pop(token, None)


class _MemoryWatch:
    """Samples this worker's RSS while a call runs and ends the process when it is over the limit.

    The limit applies to what the call adds above the worker's RSS when the call starts: an idle
    Ray worker already holds ~80-130 MB, which would make small limits unusable.
    """

    def __init__(self, call: Call, token: str, recorder: Any, worker: str) -> None:
        import psutil

        self._process = psutil.Process()
        self._baseline = self._process.memory_info().rss
        self._limit = (call.memory_limit_mb or 0) * MiB
        self._token = token
        self._recorder = recorder
        self._worker = worker
        self._finished = False
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        if recorder is not None:
            # resolve the actor's address now, so recording later is one quick round trip
            recorder.ping.remote()
        self._thread = threading.Thread(target=self._run, name="headrace-memory-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(MEMORY_SAMPLE_INTERVAL):
            try:
                rss = self._process.memory_info().rss
            except Exception:
                continue
            if rss - self._baseline > self._limit:
                self._exceeded(rss)
                return

    def _exceeded(self, rss: int) -> None:
        # Holding the lock keeps `finish` from returning an outcome for a call we are killing.
        with self._lock:
            if self._finished:
                return
            info = {
                "used_mb": (rss - self._baseline) / MiB,
                "rss_mb": rss / MiB,
                "baseline_mb": self._baseline / MiB,
                "at": time.time(),
                "worker": self._worker,
            }
            if self._recorder is not None:
                import ray

                with contextlib.suppress(Exception):
                    ray.get(
                        self._recorder.record.remote(self._token, info),
                        timeout=MEMORY_RECORD_TIMEOUT,
                    )
            os._exit(MEMORY_EXIT_CODE)

    def finish(self) -> None:
        with self._lock:
            self._finished = True
        self._stopped.set()


def _ray_task(call: Call, token: str, recorder: Any) -> Outcome:
    """The body of every Ray task; runs in the Ray worker."""
    import ray

    # the node processes our ray.init started block SIGTERM (see _keep_signal_handlers) and Ray
    # workers inherit that mask; what a handler starts must stay terminable
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    worker = f"ray:{ray.get_runtime_context().get_node_id()[:8]}:{os.getpid()}"
    watch = _MemoryWatch(call, token, recorder, worker) if call.memory_limit_mb else None
    try:
        outcome = run_call(call, worker)
    finally:
        if watch is not None:
            watch.finish()
    return outcome


# -- in the driver ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    call: Call
    token: str
    submitted_at: float  # epoch seconds, for the outcome
    deadline: float | None  # time.monotonic() after which the call is stopped


def _error_line(exc: BaseException) -> str:
    text = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    first = text[0] if text else ""
    if first.endswith(":") and len(text) > 1:  # "Initialization failure from server:\n<why>"
        first = f"{first} {text[1]}"
    return f"{type(exc).__name__}: {first}".rstrip(": ")


class RayExecutor:
    """Runs each call as a Ray task (`num_cpus=task_cpus`, `max_retries=0`).

    `address=None` starts a local Ray unless one is already initialised in this process;
    `"auto"` or `"ray://host:10001"` attaches to a cluster. When this executor calls `ray.init`
    it ships the driver's `headrace` package to the workers (`runtime_env.py_modules`) so the
    cluster needs no matching install; set `ship_headrace=False` when the image has it.

    Timeouts count from submission, so they include scheduling and a cold worker's start (a
    second or two); the coordinator keeps submissions within `free_slots()` so calls do not
    wait for CPUs.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        max_in_flight: int | None = None,
        runtime_env: dict[str, Any] | None = None,
        task_cpus: float = 1.0,
        ship_headrace: bool = True,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.max_in_flight = max_in_flight
        self.runtime_env = dict(runtime_env or {})
        self.task_cpus = task_cpus
        self.ship_headrace = ship_headrace
        self.poll_interval = poll_interval
        self._ray: Any = None
        self._owns_ray = False
        self._task_runtime_env: dict[str, Any] | None = None
        self._remote: Any = None
        self._recorder: Any = None
        self._cond = threading.Condition()
        self._pending: dict[Any, _Pending] = {}  # ObjectRef -> what it is running
        self._done: list[Outcome] = []
        self._notify: Callable[[], None] = lambda: None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False
        self._seq = itertools.count()
        self._ray_processes: list[Any] = []  # what our ray.init started (psutil.Process)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, notify: Callable[[], None]) -> None:
        if self._thread is not None or self._closed:
            raise ExecutorError("ray executor", "start() was called twice", "create a new one")
        ray = self._connect()
        try:
            self._prepare(ray)
        except BaseException:
            if self._owns_ray:  # don't leave a Ray behind that nobody will stop
                ray.shutdown()
                self._owns_ray = False
            raise
        self._notify = notify
        self._thread = threading.Thread(target=self._wait_loop, name="headrace-ray", daemon=True)
        self._thread.start()

    def _prepare(self, ray: Any) -> None:
        self._remote = ray.remote(_ray_task)
        if self._task_runtime_env:
            try:
                self._remote.options(runtime_env=self._task_runtime_env)
            except ValueError as exc:
                raise ExecutorError(
                    "ray executor",
                    f"runtime_env cannot be applied per task: {exc}",
                    "pass it to ray.init() yourself, or let this executor start Ray",
                ) from exc
        if self.max_in_flight is None:
            cpus = float(ray.cluster_resources().get("CPU", 1.0))
            self.max_in_flight = max(1, int(cpus // self.task_cpus))

    def _connect(self) -> Any:
        if self.address is None:
            _loopback_only()
        ray = _import_ray()
        self._ray = ray
        if ray.is_initialized():
            if self.address is not None:
                log.warning(
                    "Ray is already initialised in this process; using it, not %s", self.address
                )
            # job-level runtime_env is fixed by whoever called ray.init; only URIs work per task
            self._task_runtime_env = self.runtime_env or None
            return ray
        runtime_env = dict(self.runtime_env)
        if self.ship_headrace:
            # the headrace package folder (this file is headrace/executors/ray_executor.py)
            package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            modules = list(runtime_env.get("py_modules") or [])
            if package not in modules:
                modules.append(package)
            runtime_env["py_modules"] = modules
        kwargs: dict[str, Any] = {"runtime_env": runtime_env or None}
        if self.address is None:
            kwargs.update(num_cpus=self.num_cpus, include_dashboard=False)
        before = _children()
        try:
            with _keep_signal_handlers():
                ray.init(address=self.address, **kwargs)
        except Exception as exc:
            where = self.address or "a new local Ray"
            raise ExecutorError(
                "ray executor",
                f"cannot start or reach {where}: {_error_line(exc)}",
                "check the address, or start the cluster with `ray start --head`",
            ) from exc
        self._owns_ray = True
        if self.address is None:
            self._ray_processes = [p for p in _children() if p.pid not in before]
        return ray

    def shutdown(self, *, wait: bool = True, timeout: float | None = None) -> list[Outcome]:
        if self._closed:
            return self.collect()
        self._closed = True
        if self._thread is None:
            return self.collect()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while wait and self._pending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left if left is not None else 1.0)
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()
        with self._cond:
            leftover, self._pending = self._pending, {}
        now = time.time()
        for ref, p in leftover.items():
            self._cancel(ref)
            self._finish(
                Outcome(
                    p.call.id,
                    "crashed",
                    error=f"ExecutorShutdown: call {p.call.id} ({_label(p.call)}) was stopped "
                    "before it finished because the executor shut down",
                    started_at=p.submitted_at,
                    finished_at=now,
                    worker="ray",
                )
            )
        if self._recorder is not None:
            with contextlib.suppress(Exception):
                self._ray.kill(self._recorder)
            self._recorder = None
        if self._owns_ray:
            started = _with_descendants(self._ray_processes)
            self._ray.shutdown()
            self._owns_ray = False
            _reap(started, RAY_EXIT_GRACE)
        return self.collect()

    # -- submitting ---------------------------------------------------------------------------

    def free_slots(self) -> int:
        if self._thread is None or self._closed or self.max_in_flight is None:
            return 0
        return max(0, self.max_in_flight - self.in_flight())

    def in_flight(self) -> int:
        with self._cond:
            return len(self._pending) + len(self._done)

    def submit_many(self, calls: list[Call]) -> None:
        for call in calls:
            self.submit(call)

    def submit(self, call: Call) -> None:
        if self._thread is None or self._closed:
            raise ExecutorError("ray executor", "submit() before start() or after shutdown()")
        token = f"{call.id}#{next(self._seq)}"
        options: dict[str, Any] = {
            "num_cpus": self.task_cpus,
            "max_retries": 0,  # headrace retries itself, with its own backoff and dead letters
            "name": f"headrace:{_label(call)}",
        }
        if call.memory_limit_mb:
            options["memory"] = int(call.memory_limit_mb * MiB)
        if self._task_runtime_env:
            options["runtime_env"] = self._task_runtime_env
        submitted = time.time()
        deadline = time.monotonic() + call.timeout if call.timeout else None
        try:
            recorder = self._memory_recorder() if call.memory_limit_mb else None
            ref = self._remote.options(**options).remote(call, token, recorder)
        except Exception as exc:  # e.g. arguments that cannot be serialised
            self._finish(
                Outcome(
                    call.id,
                    "error",
                    error=f"ExecutorError: call {call.id} could not be submitted to Ray: "
                    f"{_error_line(exc)}",
                    started_at=submitted,
                    finished_at=time.time(),
                    worker="ray",
                )
            )
            self._notify()
            return
        with self._cond:
            self._pending[ref] = _Pending(call, token, submitted, deadline)
            self._cond.notify_all()

    def _memory_recorder(self) -> Any:
        with self._cond:
            if self._recorder is None:
                # created on first need: most apps set no memory limits and need no extra process
                actor = self._ray.remote(_LimitRecorder).options(num_cpus=0, max_restarts=-1)
                self._recorder = actor.remote()
            return self._recorder

    def collect(self) -> list[Outcome]:
        with self._cond:
            done, self._done = self._done, []
            return done

    def _finish(self, outcome: Outcome) -> None:
        with self._cond:
            self._done.append(outcome)
            self._cond.notify_all()

    # -- the waiter thread --------------------------------------------------------------------

    def _wait_loop(self) -> None:
        ray = self._ray
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                refs = list(self._pending)
            got = False
            try:
                ready, rest = ray.wait(refs, num_returns=1, timeout=self.poll_interval)
                if ready and rest:
                    more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                    ready += more
                for ref in ready:
                    got |= self._settle(ref)
                got |= self._enforce_timeouts()
            except Exception as exc:  # Ray itself failed: report, don't leave calls hanging
                log.exception("the Ray executor lost track of its tasks")
                got |= self._fail_all(exc)
                time.sleep(self.poll_interval)
            if got:
                try:
                    self._notify()
                except Exception:
                    log.exception("the executor's notify callback failed")

    def _settle(self, ref: Any) -> bool:
        with self._cond:
            p = self._pending.pop(ref, None)
        if p is None:
            return False
        try:
            outcome = self._ray.get(ref)
        except Exception as exc:
            outcome = self._failure(p, exc)
        if not isinstance(outcome, Outcome):
            outcome = Outcome(
                p.call.id,
                "error",
                error=f"ExecutorError: the task returned {type(outcome).__name__}, not an Outcome",
                worker="ray",
            )
        self._finish(outcome)
        return True

    def _failure(self, p: _Pending, exc: BaseException) -> Outcome:
        """Turn a Ray error for a task into the outcome the coordinator understands."""
        rex = self._ray.exceptions
        call = p.call
        base = {"started_at": p.submitted_at, "finished_at": time.time(), "worker": "ray"}
        if isinstance(exc, rex.OutOfMemoryError):
            return Outcome(
                call.id,
                "memory",
                error=f"MemoryLimitExceeded: call {call.id} ({_label(call)}) was stopped by "
                "Ray's node memory monitor because the node ran low on memory",
                traceback=_plain(str(exc)),
                **base,
            )
        if isinstance(exc, rex.RayTaskError):
            # run_call catches user exceptions, so this failed around it: most often the
            # returned value cannot be serialised, or the worker cannot import headrace
            cause = getattr(exc, "cause", None) or exc
            return Outcome(
                call.id,
                "error",
                error=f"{_error_line(cause)} (in Ray around call {call.id}, for example while "
                "sending its result back)",
                traceback=_plain(str(exc)),
                **base,
            )
        if isinstance(exc, rex.NodeDiedError):
            return Outcome(
                call.id,
                "lost",
                error=f"NodeDied: the Ray node running call {call.id} ({_label(call)}) died; "
                "it runs again on another node",
                traceback=_plain(str(exc)),
                **base,
            )
        if isinstance(exc, rex.WorkerCrashedError) and call.memory_limit_mb:
            info = self._memory_event(p.token)
            if info is not None:
                base["finished_at"] = info.get("at", base["finished_at"])
                base["worker"] = info.get("worker", "ray")
                return Outcome(
                    call.id,
                    "memory",
                    error=f"MemoryLimitExceeded: call {call.id} ({_label(call)}) used "
                    f"{info['used_mb']:.0f} MB above the worker's idle "
                    f"{info['baseline_mb']:.0f} MB, over its limit of {call.memory_limit_mb} "
                    "MB, and its Ray worker was stopped; raise memory= or process the input "
                    "in smaller pieces",
                    max_rss_mb=info.get("rss_mb"),
                    **base,
                )
        return Outcome(
            call.id,
            "crashed",
            error=f"WorkerCrashed: the Ray worker running call {call.id} ({_label(call)}) died: "
            f"{_error_line(exc)}",
            traceback=_plain(str(exc)),
            **base,
        )

    def _memory_event(self, token: str) -> dict[str, Any] | None:
        if self._recorder is None:
            return None
        try:
            return self._ray.get(self._recorder.pop.remote(token), timeout=RECORDER_TIMEOUT)
        except Exception:
            log.warning("could not ask the memory recorder about %s", token, exc_info=True)
            return None

    def _enforce_timeouts(self) -> bool:
        now = time.monotonic()
        with self._cond:
            late = [(r, p) for r, p in self._pending.items() if p.deadline and p.deadline <= now]
        got = False
        for ref, p in late:
            ready, _ = self._ray.wait([ref], timeout=0)
            if ready:  # finished just in time: report what it returned
                got |= self._settle(ref)
                continue
            with self._cond:
                if self._pending.pop(ref, None) is None:
                    continue
            self._cancel(ref)
            call = p.call
            self._finish(
                Outcome(
                    call.id,
                    "timeout",
                    error=f"InvocationTimeout: call {call.id} ({_label(call)}) ran longer than "
                    f"its timeout of {call.timeout:g} s and its Ray worker was stopped",
                    started_at=p.submitted_at,
                    finished_at=time.time(),
                    worker="ray",
                )
            )
            got = True
        return got

    def _cancel(self, ref: Any) -> None:
        # force=True kills the worker process: the only way to stop code that ignores signals
        try:
            self._ray.cancel(ref, force=True)
        except Exception:
            log.debug("ray.cancel failed (the task may have ended)", exc_info=True)

    def _fail_all(self, exc: BaseException) -> bool:
        with self._cond:
            lost, self._pending = self._pending, {}
        for ref, p in lost.items():
            self._cancel(ref)
            self._finish(
                Outcome(
                    p.call.id,
                    "crashed",
                    error=f"ExecutorError: lost track of call {p.call.id} in Ray: "
                    f"{_error_line(exc)}",
                    started_at=p.submitted_at,
                    finished_at=time.time(),
                    worker="ray",
                )
            )
        return bool(lost)


def _label(call: Call) -> str:
    return call.tag or call.target


def _plain(text: str) -> str:
    """Ray colours its task headers; a ledger or log file wants plain text."""
    return _ANSI.sub("", text)


def _loopback_only() -> None:
    """Make a local Ray started from this process listen on 127.0.0.1 only (unless the user set
    Ray's switch). Read by Ray at import and by the processes it starts."""
    if RAY_LOOPBACK_ENV in os.environ:
        return
    os.environ[RAY_LOOPBACK_ENV] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # Ray was imported already: it read the switch then
        constants.ENABLE_RAY_CLUSTER = False


@contextlib.contextmanager
def _keep_signal_handlers() -> Any:
    """`ray.init` replaces the SIGTERM handler with one that exits the process at once: the
    coordinator's handler (drain, then exit) must stay.

    SIGTERM is also blocked while it runs, so the processes it starts (GCS, raylet, agents, and
    through the raylet the workers) inherit the blocked mask: a SIGTERM to the coordinator's
    process group (`timeout`, `kill -TERM -PGID`) otherwise stopped the raylet under a running
    call before the coordinator had drained it. They are stopped by `ray.shutdown()` and
    `_reap` after the drain; one that arrived meanwhile is delivered to us when unblocked."""
    main = threading.current_thread() is threading.main_thread()
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)} if main else {}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _children() -> list[Any]:
    try:
        import psutil

        return psutil.Process().children()
    except Exception:  # psutil missing or /proc unreadable: nothing to clean up after
        return []


def _with_descendants(processes: list[Any]) -> list[Any]:
    out = list(processes)
    for process in processes:
        with contextlib.suppress(Exception):
            out.extend(process.children(recursive=True))
    return out


def _reap(processes: list[Any], grace: float) -> None:
    """Wait for the processes a local Ray started to exit after ray.shutdown(); kill what is left
    (its agents otherwise linger for up to a minute, until they notice the raylet is gone)."""
    if not processes:
        return
    import psutil

    _, alive = psutil.wait_procs(processes, timeout=grace)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=grace)
    if alive:
        log.info("stopped %d Ray processes that outlived ray.shutdown()", len(alive))
