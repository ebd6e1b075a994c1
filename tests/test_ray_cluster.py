"""The Ray executor on a cluster of two nodes started as separate `ray start` processes on
127.0.0.1 (a head and a worker, one CPU each): calls run on both; when the worker node is
killed under load, the calls it was running come back as failed attempts, and run again on the
node that is left, as the coordinator re-runs them: none is lost."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from headrace.executors.base import Call
from headrace.executors.ray_executor import RayExecutor
from headrace.jobs.ray_head import LocalRayHead, ray_executable

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

TARGETS = str(Path(__file__).parent)
FAST_DEATH = {  # the head notices a dead node within seconds, not Ray's default half minute
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_initial_delay_ms": "1000",
}


def _call(n: int, seconds: float, round_: str, marks: Path | None = None) -> Call:
    return Call(
        id=f"{round_}-{n}",
        target="ray_node_targets:where",
        args={"seconds": seconds, "n": n, "marks": None if marks is None else str(marks)},
        sys_path=[TARGETS],
        tag="where",
    )


def _collect(ex: RayExecutor, ids: set[str], timeout: float) -> dict:
    got = {}
    deadline = time.monotonic() + timeout
    while set(got) < ids:
        assert time.monotonic() < deadline, f"no outcome for {sorted(ids - set(got))}"
        for outcome in ex.collect():
            got[outcome.id] = outcome
        time.sleep(0.05)
    return got


def _alive_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n["Alive"]]


def test_calls_run_on_both_nodes_and_survive_the_worker_node_dying(monkeypatch, tmp_path):
    head = LocalRayHead(num_cpus=1, object_store_mb=128, env=FAST_DEATH, start_timeout=300)
    head.start()
    worker: subprocess.Popen | None = None
    ex: RayExecutor | None = None
    family: list[psutil.Process] = []
    try:
        assert head.gcs_address is not None
        worker = subprocess.Popen(
            [
                ray_executable(),
                "start",
                f"--address={head.gcs_address}",
                "--num-cpus=1",
                "--block",
                "--node-ip-address=127.0.0.1",
                f"--object-store-memory={128 * 2**20}",
                "--disable-usage-stats",
            ],
            env={**os.environ, **FAST_DEATH, **head.client_env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for name, value in head.client_env.items():
            monkeypatch.setenv(name, value)
        ex = RayExecutor(head.gcs_address)
        ex.start(lambda: None)
        deadline = time.monotonic() + 300
        while len(_alive_nodes()) < 2:
            assert worker.poll() is None, "the worker node's `ray start` exited"
            assert time.monotonic() < deadline, "the worker node did not join"
            time.sleep(0.5)
        head_node = next(
            n["NodeID"] for n in _alive_nodes() if "node:__internal_head__" in n["Resources"]
        )

        # functions are scheduled on both nodes (one CPU each)
        first = [_call(n, 1.0, "a") for n in range(6)]
        ex.submit_many(first)
        got = _collect(ex, {c.id for c in first}, timeout=300)
        assert all(o.status == "ok" for o in got.values()), got
        assert len({o.value["node"] for o in got.values()}) == 2

        # the worker node dies under load: its calls fail, and run again on the head
        family = psutil.Process(worker.pid).children(recursive=True)
        marks = tmp_path / "marks"
        marks.mkdir()
        second = [_call(n, 5.0, "b", marks) for n in range(6)]
        ex.submit_many(second)
        deadline = time.monotonic() + 300
        while not any(not p.name.endswith(head_node) for p in marks.iterdir()):
            assert time.monotonic() < deadline, "no call started on the worker node"
            time.sleep(0.1)  # the worker node is busy now
        os.killpg(worker.pid, signal.SIGKILL)
        for proc in family:  # the node's raylet and workers, wherever they moved
            with contextlib.suppress(psutil.Error):
                proc.kill()
        worker.wait(30)
        got = _collect(ex, {c.id for c in second}, timeout=300)
        failed = [c for c in second if got[c.id].status != "ok"]
        assert failed, "no call was running on the killed node"
        assert {got[c.id].status for c in failed} <= {"crashed"}, [got[c.id] for c in failed]
        retried = [_call(c.args["n"], 0.5, "retry") for c in failed]
        ex.submit_many(retried)
        again = _collect(ex, {c.id for c in retried}, timeout=300)
        assert all(o.status == "ok" for o in again.values()), again
        assert {o.value["node"] for o in again.values()} == {head_node}
        done = {o.value["n"] for o in got.values() if o.status == "ok"}
        done |= {o.value["n"] for o in again.values()}
        assert done == set(range(6))  # nothing lost
    finally:
        if ex is not None:
            ex.shutdown(wait=False)
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(30)
        for proc in family:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        head.stop()
