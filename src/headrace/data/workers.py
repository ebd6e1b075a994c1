"""Worker processes that run dataset operations, and the pools that hold them.

* The task pool: one worker per CPU (`DataContext.num_cpus`), started on first use and kept
  for the life of the process, shared by every dataset; stateless functions run there.
* An actor pool: workers of one map_batches with a callable class, each constructing ONE
  instance on its first batch and keeping it; the pool starts `min_size` workers, adds one
  (up to `max_size`) whenever batches wait while every worker is busy, and removes idle ones
  above `min_size` once the input is exhausted. It lives as long as the stage runs.

Workers are plain subprocesses (`python -m headrace.data.worker_main`), not multiprocessing
children: a user's script is never imported again in them (no `if __name__ == "__main__"`
guard needed), and functions travel by value with cloudpickle.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from headrace.data.errors import WorkerLost
from headrace.data.transport import discard_block


@dataclass
class Answer:
    task_id: int
    ok: bool
    path: str = ""
    num_rows: int = 0
    error: BaseException | None = None


_MEMORY_CHECK_SECONDS = 0.2


class Worker:
    def __init__(self) -> None:
        parent, child = socket.socketpair()
        env = dict(os.environ)
        # one core per worker, as Ray gives each task one CPU: no oversubscription
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env.setdefault(var, "1")
        env["POLARS_MAX_THREADS"] = env.get("POLARS_MAX_THREADS", "1")
        # the kernel's parent-death signal fires when the *thread* that started the worker
        # ends: asked for only from the main thread, which lasts as long as the process (from
        # another thread the worker still ends when its socket closes, between tasks)
        parent_pid = os.getpid() if threading.current_thread() is threading.main_thread() else 0
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "headrace.data.worker_main",
                str(child.fileno()),
                str(parent_pid),
            ],
            pass_fds=(child.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
        )
        child.close()
        self.conn = Connection(os.dup(parent.fileno()))
        parent.close()
        self.stages: set[str] = set()
        self.in_flight: set[int] = set()
        self.over_memory = 0  # the RSS it had when killed for passing the pool's limit
        self.send(("setup", [p for p in sys.path if p]))

    def send(self, message: tuple) -> None:
        try:
            self.conn.send_bytes(pickle.dumps(message, protocol=5))
        except (OSError, EOFError) as exc:
            raise WorkerLost(
                f"dataset worker {self.process.pid}", f"is gone ({exc})", "run again"
            ) from None

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Pool:
    """A set of workers with tasks in flight on them."""

    def __init__(
        self,
        size: int,
        *,
        max_size: int | None = None,
        per_worker: int = 2,
        memory_limit: float | None = None,
    ) -> None:
        self.min_size = size
        # an actor's `memory=`: a worker whose resident memory passes it is killed, and its
        # task fails with that figure, rather than the machine's OOM killer choosing a victim
        self.memory_limit = memory_limit
        self._memory_checked = 0.0
        self.max_size = max_size or size
        self.per_worker = per_worker
        self.workers: list[Worker] = []
        # datasets consumed from several threads share the pool: one talks to it at a time,
        # and waits are short so that the others get their turn
        self.lock = threading.RLock()
        self.stage_blobs: dict[str, bytes] = {}
        self._task_worker: dict[int, Worker] = {}
        self._buffered: dict[int, Answer] = {}
        self._abandoned: set[int] = set()
        for _ in range(size):
            self.workers.append(Worker())

    @property
    def capacity(self) -> int:
        return len(self.workers) * self.per_worker

    def in_flight(self) -> int:
        return sum(len(w.in_flight) for w in self.workers)

    def lost_a_worker(self) -> bool:
        """A worker has exited (killed by the OOM killer or a signal) while the pool sat idle."""
        return any(w.process.poll() is not None for w in self.workers)

    def has_room(self) -> bool:
        return any(len(w.in_flight) < self.per_worker for w in self.workers)

    def grow(self) -> bool:
        if len(self.workers) >= self.max_size:
            return False
        self.workers.append(Worker())
        return True

    def shrink_idle(self) -> None:
        for worker in list(self.workers):
            if len(self.workers) <= self.min_size:
                return
            if not worker.in_flight:
                self.workers.remove(worker)
                worker.stop()

    def add_stage(self, key: str, blob: bytes) -> None:
        self.stage_blobs[key] = blob

    def drop_stage(self, key: str) -> None:
        self.stage_blobs.pop(key, None)
        for worker in self.workers:
            if key in worker.stages:
                worker.stages.discard(key)
                worker.send(("drop", key))

    def submit(
        self, task_id: int, key: str, kind: str, payload: Any, where: str, index: int, folder: str
    ) -> None:
        worker = min(self.workers, key=lambda w: len(w.in_flight))
        if key not in worker.stages:
            worker.send(("stage", key, self.stage_blobs[key]))
            worker.stages.add(key)
        worker.send(("task", task_id, key, kind, payload, where, index, folder))
        worker.in_flight.add(task_id)
        self._task_worker[task_id] = worker

    def _check_memory(self) -> None:
        now = time.monotonic()
        if not self.memory_limit or now - self._memory_checked < _MEMORY_CHECK_SECONDS:
            return
        self._memory_checked = now
        import psutil

        for worker in self.workers:
            if not worker.in_flight or worker.process.poll() is not None:
                continue
            try:
                rss = psutil.Process(worker.process.pid).memory_info().rss
            except psutil.Error:
                continue
            if rss > self.memory_limit:
                worker.over_memory = rss
                worker.process.kill()

    def wait(self, timeout: float | None = None) -> list[Answer]:
        busy = {w.conn: w for w in self.workers if w.in_flight}
        if not busy:
            return []
        self._check_memory()
        if self.memory_limit and timeout is not None:
            timeout = min(timeout, _MEMORY_CHECK_SECONDS)
        answers = []
        for conn in wait(list(busy), timeout):
            worker = busy[conn]
            try:
                message = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                try:
                    code = worker.process.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    code = None
                memory = True
                fix = "give the operation less data per batch (batch_size=) or more memory"
                if worker.over_memory:
                    reason = (
                        f"used {worker.over_memory / 2**20:,.0f} MiB, more than its "
                        f"memory={self.memory_limit / 2**20:,.0f} MiB, and was stopped"
                    )
                elif code is None or code in (-9, 137):
                    reason = f"exited (code {code}) (killed: out of memory?)"
                elif code < 0:
                    memory = False
                    reason = f"was killed by {_signal_name(-code)} (code {code})"
                    fix = "find what crashed it: a fault in native code, or a signal sent to it"
                else:
                    memory = False
                    reason = (
                        f"exited (code {code}): the function it ran ended the process "
                        "(sys.exit, os._exit or native code)"
                    )
                    fix = "raise an exception in the function instead of ending the process"
                lost = WorkerLost(
                    f"dataset worker {worker.process.pid}", reason + " while running a task", fix
                )
                lost.memory = memory
                for task_id in worker.in_flight:
                    answers.append(Answer(task_id, False, error=lost))
                worker.in_flight.clear()
                self.workers.remove(worker)
                worker.stop()
                if len(self.workers) < self.min_size:
                    self.workers.append(Worker())
                continue
            status, task_id = message[0], message[1]
            worker.in_flight.discard(task_id)
            self._task_worker.pop(task_id, None)
            if status == "ok":
                answers.append(Answer(task_id, True, message[2], message[3]))
            else:
                answers.append(Answer(task_id, False, error=message[2]))
        return answers

    def collect(self, ids: set[int], timeout: float | None = 0.05) -> list[Answer]:
        """Answers to the tasks `ids` (of one execution); answers to other executions' tasks
        that arrive meanwhile are kept for them. Returns empty-handed after `timeout`."""
        with self.lock:
            return self._collect(ids, timeout)

    def _collect(self, ids: set[int], timeout: float | None) -> list[Answer]:
        mine = [self._buffered.pop(i) for i in list(ids) if i in self._buffered]
        if mine:
            return mine
        for answer in self.wait(timeout):
            if answer.task_id in self._abandoned:
                self._abandoned.discard(answer.task_id)
                if answer.ok:
                    discard_block(answer.path)
            elif answer.task_id in ids:
                mine.append(answer)
            else:
                self._buffered[answer.task_id] = answer
        return mine

    def abandon(self, ids: set[int]) -> None:
        """Forget tasks whose results nobody will read (their blocks are deleted on arrival)."""
        with self.lock:
            self._abandon(ids, discard_block)

    def _abandon(self, ids: set[int], discard_block: Any) -> None:
        for task_id in ids:
            answer = self._buffered.pop(task_id, None)
            if answer is None:
                self._abandoned.add(task_id)
            elif answer.ok:
                discard_block(answer.path)

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers.clear()


_shared: Pool | None = None
_shared_lock = threading.Lock()


def task_pool(size: int) -> Pool:
    """The process-wide pool of stateless workers (restarted when its size changes)."""
    global _shared
    with _shared_lock:
        if (
            _shared is not None
            and not _shared.in_flight()
            and (_shared.min_size != size or _shared.lost_a_worker())
        ):
            # a pool that lost a worker between datasets starts afresh instead of failing the
            # next dataset with the dead worker's broken pipe
            _shared.close()
            _shared = None
        if _shared is None:
            _shared = Pool(size)
        return _shared


def shutdown() -> None:
    """Stop the shared workers (they stop by themselves when this process exits)."""
    global _shared
    with _shared_lock:
        if _shared is not None:
            _shared.close()
            _shared = None


atexit.register(shutdown)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
