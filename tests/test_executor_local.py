import threading
import time
from pathlib import Path

import pytest

from headrace.executors.base import Call
from headrace.executors.local import LocalExecutor

HERE = str(Path(__file__).parent)


def call(cid: str, target: str, **kwargs) -> Call:
    opts = {k: kwargs.pop(k) for k in ("timeout", "memory_limit_mb") if k in kwargs}
    return Call(cid, f"targets:{target}", kwargs, sys_path=[HERE], tag=target, **opts)


def wait_for(executor, n: int, timeout: float = 30.0):
    got = []
    deadline = time.time() + timeout
    while len(got) < n and time.time() < deadline:
        got.extend(executor.collect())
        time.sleep(0.01)
    assert len(got) == n, f"only {len(got)} of {n} outcomes arrived"
    return {o.id: o for o in got}


@pytest.fixture
def executor():
    ex = LocalExecutor(2)
    woke = threading.Event()
    ex.start(woke.set)
    ex.woke = woke
    yield ex
    ex.shutdown(wait=False)


def test_ok_and_error(executor):
    executor.submit(call("a", "add", a=1, b=2))
    executor.submit(call("b", "fail", message="bad input"))
    out = wait_for(executor, 2)
    assert out["a"].status == "ok" and out["a"].value == 3
    assert out["b"].status == "error"
    assert out["b"].error == "ValueError: bad input"
    assert "raise ValueError(message)" in out["b"].traceback
    assert executor.woke.is_set()


def test_timeout_kills_worker_and_pool_recovers(executor):
    started = time.time()
    executor.submit(call("slow", "sleep", seconds=30, timeout=0.5))
    out = wait_for(executor, 1, timeout=10)
    assert out["slow"].status == "timeout"
    assert "InvocationTimeout" in out["slow"].error and "0.5 s" in out["slow"].error
    assert time.time() - started < 5
    executor.submit(call("after", "add", a=2, b=2))
    assert wait_for(executor, 1)["after"].value == 4


def test_memory_limit(executor):
    executor.submit(call("hog", "hog", mb=400, memory_limit_mb=200))
    out = wait_for(executor, 1, timeout=20)
    assert out["hog"].status == "memory"
    assert "MemoryLimitExceeded" in out["hog"].error


def test_crash_is_reported_and_queued_calls_survive(executor):
    executor.submit(call("boom", "exit_hard", code=3))
    for i in range(10):
        executor.submit(call(f"n{i}", "add", a=i, b=1))
    out = wait_for(executor, 11)
    assert out["boom"].status == "crashed" and "code 3" in out["boom"].error
    assert all(out[f"n{i}"].value == i + 1 for i in range(10))


def test_many_fast_calls_are_pipelined(executor):
    for i in range(2000):
        executor.submit(call(f"c{i}", "add", a=i, b=i))
        while executor.free_slots() <= 0:
            time.sleep(0.0005)
    out = wait_for(executor, 2000)
    assert all(out[f"c{i}"].value == 2 * i for i in range(2000))
    assert len({o.worker for o in out.values()}) == 2


def test_shutdown_waits_for_running(executor):
    executor.submit(call("s", "sleep", seconds=0.3))
    time.sleep(0.05)
    outcomes = executor.shutdown(wait=True, timeout=5)
    assert [o.status for o in outcomes] == ["ok"]


@pytest.fixture
def one_worker():
    ex = LocalExecutor(1)
    ex.start(lambda: None)
    yield ex
    ex.shutdown(wait=False)


def test_calls_up_to_half_a_second_are_prefetched_behind_a_busy_worker(one_worker):
    one_worker.submit(call("learn", "sleep", seconds=0.1))
    wait_for(one_worker, 1)
    assert one_worker.free_slots() == 2  # known to take ~0.1 s: one may wait behind another
    one_worker.submit(call("a", "sleep", seconds=0.3))
    assert one_worker.free_slots() == 1
    # queued behind "a": its timeout counts from its own start, not from when it was sent
    one_worker.submit(call("b", "sleep", seconds=0.2, timeout=0.45))
    assert one_worker.free_slots() == 0
    out = wait_for(one_worker, 2)
    assert [out[c].status for c in ("a", "b")] == ["ok", "ok"]
    assert out["b"].started_at >= out["a"].finished_at


def test_slow_calls_are_never_queued_behind_each_other(one_worker):
    one_worker.submit(call("learn", "sleep", seconds=0.6))
    wait_for(one_worker, 1)
    assert one_worker.free_slots() == 1
    one_worker.submit(call("a", "sleep", seconds=0.6))
    assert one_worker.free_slots() == 0
    wait_for(one_worker, 1)


def _run_one(label: str) -> None:
    ex = LocalExecutor(1)
    ex.start(lambda: None)
    try:
        ex.submit(call(label, "add", a=1, b=1))
        assert wait_for(ex, 1)[label].value == 2
    finally:
        ex.shutdown(wait=True)


def test_a_fork_server_reaped_by_someone_else_is_started_anew():
    import os
    import signal
    from multiprocessing import forkserver

    _run_one("before")
    pid = forkserver._forkserver._forkserver_pid
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)  # what psutil.wait_procs or a waitpid(-1) elsewhere in the process does
    _run_one("after")
    assert forkserver._forkserver._forkserver_pid != pid
