"""RayExecutor against a real local Ray (num_cpus=2), started once for the module."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from headrace.errors import ExecutorError
from headrace.executors.base import Call, Outcome
from headrace.executors.ray_executor import RayExecutor

pytestmark = pytest.mark.ray

TARGETS = str(Path(__file__).parent)  # where ray_targets.py lives, for the workers' sys.path


class Notified:
    def __init__(self) -> None:
        self.count = 0
        self.event = threading.Event()

    def __call__(self) -> None:
        self.count += 1
        self.event.set()


def make_call(
    id: str, fn: str, timeout: float | None = None, memory: int | None = None, **args: Any
) -> Call:
    return Call(
        id=id,
        target=f"ray_targets:{fn}",
        args=args,
        timeout=timeout,
        memory_limit_mb=memory,
        sys_path=[TARGETS],
        tag=fn,
    )


def wait_for(ex: RayExecutor, ids: set[str], timeout: float = 30.0) -> dict[str, Outcome]:
    """Collect until every id has an outcome; fail the test instead of hanging."""
    got: dict[str, Outcome] = {}
    deadline = time.monotonic() + timeout
    while set(got) < ids:
        assert time.monotonic() < deadline, f"no outcome for {sorted(ids - set(got))}"
        for o in ex.collect():
            got[o.id] = o
        time.sleep(0.02)
    return got


def run_one(ex: RayExecutor, call: Call, timeout: float = 30.0) -> Outcome:
    ex.submit(call)
    return wait_for(ex, {call.id}, timeout)[call.id]


@pytest.fixture(scope="module")
def ray_session() -> Iterator[tuple[RayExecutor, Notified]]:
    pytest.importorskip("ray")
    notified = Notified()
    ex = RayExecutor(num_cpus=2)
    ex.start(notified)
    try:
        yield ex, notified
    finally:
        ex.shutdown(wait=False)
    import ray

    assert not ray.is_initialized(), "the executor that started Ray must shut it down"


@pytest.fixture
def ex(ray_session: tuple[RayExecutor, Notified]) -> RayExecutor:
    executor, _ = ray_session
    executor.collect()
    return executor


def test_ok_call_returns_value_and_worker(ex: RayExecutor) -> None:
    o = run_one(ex, make_call("ok-1", "add", a=2, b=3))
    assert o.status == "ok", o
    assert o.value == 5
    assert o.worker.startswith("ray:") and o.worker.count(":") == 2
    assert o.started_at and o.finished_at and o.finished_at >= o.started_at
    assert ex.in_flight() == 0


def test_a_handler_can_terminate_the_programs_it_starts(ex: RayExecutor) -> None:
    # the Ray node processes inherit a blocked SIGTERM (so that a group SIGTERM waits for the
    # drain); a call's own children must not
    o = run_one(ex, make_call("term-1", "terminate_a_child"))
    assert o.status == "ok", o
    assert o.value == -15


def test_notify_is_called(ray_session: tuple[RayExecutor, Notified]) -> None:
    ex, notified = ray_session
    notified.event.clear()
    ex.submit(make_call("notify-1", "add", a=1, b=1))
    assert notified.event.wait(20)
    assert wait_for(ex, {"notify-1"})["notify-1"].value == 2


def test_exception_keeps_type_and_user_traceback(ex: RayExecutor) -> None:
    o = run_one(ex, make_call("err-1", "fail", message="boom"))
    assert o.status == "error"
    assert o.error == "ValueError: boom"
    assert o.traceback and "ray_targets.py" in o.traceback and "raise ValueError" in o.traceback
    assert "ray::" not in o.traceback  # run_call's traceback, not a RayTaskError wrapper


def test_missing_target_is_an_error(ex: RayExecutor) -> None:
    o = run_one(ex, make_call("err-2", "no_such_function"))
    assert o.status == "error"
    assert o.error and o.error.startswith("AttributeError")


def test_timeout_kills_the_worker_and_executor_keeps_working(ex: RayExecutor) -> None:
    t0 = time.monotonic()
    o = run_one(ex, make_call("slow-1", "nap", timeout=1.0, seconds=60))
    took = time.monotonic() - t0
    assert o.status == "timeout", o
    assert o.error and o.error.startswith("InvocationTimeout:")
    assert "slow-1" in o.error and "1 s" in o.error
    assert took < 3.5
    assert run_one(ex, make_call("after-timeout", "add", a=1, b=2)).value == 3


def test_call_finishing_within_timeout_is_ok(ex: RayExecutor) -> None:
    o = run_one(ex, make_call("quick-1", "nap", timeout=10.0, seconds=0.1, value="done"))
    assert (o.status, o.value) == ("ok", "done")


def test_memory_limit(ex: RayExecutor) -> None:
    # slow growth: a broken watcher would let it finish (2 GB in ~6 s) and fail the test
    o = run_one(ex, make_call("hog-1", "hog", memory=64, pause=0.05))
    assert o.status == "memory", o
    assert o.error and o.error.startswith("MemoryLimitExceeded:")
    assert "hog-1" in o.error and "64 MB" in o.error
    assert o.worker.startswith("ray:")  # reported by the worker before it ended itself
    assert run_one(ex, make_call("after-hog", "add", a=2, b=2)).value == 4


def test_memory_limit_not_reached_is_ok(ex: RayExecutor) -> None:
    o = run_one(ex, make_call("small-1", "hog", memory=512, chunk_mb=4, chunks=4, pause=0.06))
    assert (o.status, o.value) == ("ok", 4)


def test_hard_exit_is_crashed_and_executor_keeps_working(ex: RayExecutor) -> None:
    o = run_one(ex, make_call("exit-1", "exit_hard", code=3))
    assert o.status == "crashed", o
    assert o.error and o.error.startswith("WorkerCrashed:") and "exit-1" in o.error
    assert run_one(ex, make_call("after-exit", "add", a=3, b=3)).value == 6


def test_hard_exit_with_memory_limit_is_still_crashed(ex: RayExecutor) -> None:
    # a limit being set must not turn every crash into a memory outcome
    o = run_one(ex, make_call("exit-2", "exit_hard", memory=256, code=3))
    assert o.status == "crashed", o


def test_twenty_concurrent_calls(ex: RayExecutor) -> None:
    calls = [make_call(f"many-{i}", "nap", seconds=0.05, value=i) for i in range(20)]
    for c in calls:
        ex.submit(c)
    got = wait_for(ex, {c.id for c in calls})
    assert {o.status for o in got.values()} == {"ok"}
    assert sorted(o.value for o in got.values()) == list(range(20))


def test_free_slots_follow_in_flight(ray_session: tuple[RayExecutor, Notified]) -> None:
    ex, notified = ray_session
    ex.collect()
    assert ex.max_in_flight == 2  # the cluster's CPUs
    assert ex.free_slots() == 2
    notified.event.clear()
    ex.submit(make_call("slot-1", "nap", seconds=0.3))
    assert (ex.in_flight(), ex.free_slots()) == (1, 1)
    assert notified.event.wait(20)
    assert (ex.in_flight(), ex.free_slots()) == (1, 1)  # finished but not collected yet
    wait_for(ex, {"slot-1"})
    assert (ex.in_flight(), ex.free_slots()) == (0, 2)


def test_shutdown_waits_for_running_calls(ray_session: tuple[RayExecutor, Notified]) -> None:
    import ray

    other = RayExecutor()  # Ray is already up: this one attaches and must not stop it
    other.start(lambda: None)
    for i in range(2):
        other.submit(make_call(f"drain-{i}", "nap", seconds=0.5, value=i))
    outcomes = other.shutdown(wait=True, timeout=20)
    assert sorted((o.id, o.status, o.value) for o in outcomes) == [
        ("drain-0", "ok", 0),
        ("drain-1", "ok", 1),
    ]
    assert ray.is_initialized()
    with pytest.raises(ExecutorError):
        other.submit(make_call("late", "add", a=1, b=1))


def test_shutdown_timeout_reports_running_calls_as_crashed(
    ray_session: tuple[RayExecutor, Notified],
) -> None:
    other = RayExecutor()
    other.start(lambda: None)
    other.submit(make_call("stuck-1", "nap", seconds=60))
    t0 = time.monotonic()
    outcomes = other.shutdown(wait=True, timeout=0.5)
    assert time.monotonic() - t0 < 5
    assert [(o.id, o.status) for o in outcomes] == [("stuck-1", "crashed")]
    assert outcomes[0].error and outcomes[0].error.startswith("ExecutorShutdown:")


def test_local_runtime_env_needs_ray_init(ray_session: tuple[RayExecutor, Notified]) -> None:
    # Ray is already up, so a local folder could only be shipped per task, which Ray refuses
    with pytest.raises(ExecutorError, match="runtime_env"):
        RayExecutor(runtime_env={"py_modules": [TARGETS]}).start(lambda: None)


def test_missing_ray_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(ExecutorError) as info:
        RayExecutor().start(lambda: None)
    assert "pip install 'headrace[ray]'" in str(info.value)
