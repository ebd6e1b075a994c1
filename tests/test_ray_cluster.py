"""The coordinator's Ray executor on a cluster of two nodes started as separate `ray start`
processes on 127.0.0.1 (a head and a worker, one CPU each): functions run on both; the worker
node killed under load, the invocations it was running are re-run on the head without using
up a retry: none is lost, each completes once."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from sqlalchemy import select

from headrace.jobs.ray_head import RAY_LOOPBACK_ENV, LocalRayHead, ray_executable
from headrace.ledger import Ledger, NewInvocation
from headrace.ledger.schema import attempts
from tests.e2e_helpers import Up

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

APP_DIR = Path(__file__).parent / "apps" / "raynodes"
FAST_DEATH = {  # the head notices a dead node within seconds, not Ray's default half minute
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_initial_delay_ms": "1000",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _loopback_name() -> str:
    """A name of this host that resolves to 127.0.0.1 but is not spelled as loopback: a node
    in cluster mode replaces "127.0.0.1" and "localhost" by the host's network address, where
    the head (bound to 127.0.0.1) does not answer."""
    name = socket.gethostname()
    assert socket.gethostbyname(name) == "127.0.0.1", (
        f"this test needs the host name {name!r} to resolve to 127.0.0.1 (as /etc/hosts does "
        "on the test machines)"
    )
    return name


def _alive_nodes(head: LocalRayHead) -> int:
    code = (
        f"import ray; ray.init(address={head.gcs_address!r}, logging_level='ERROR'); "
        "print(sum(1 for n in ray.nodes() if n['Alive']))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **head.client_env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else 0


def _wait(ledger: Ledger, ids: list[str], timeout: float) -> list[dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = [ledger.get_invocation(i) for i in ids]
        if all(r["status"] in ("succeeded", "dead") for r in rows):
            return rows
        time.sleep(0.3)
    raise AssertionError(f"not finished: {[r['status'] for r in rows]}")


def test_functions_run_on_both_nodes_and_survive_the_worker_node_dying(tmp_path):
    head = LocalRayHead(
        num_cpus=1,
        object_store_mb=128,
        env={**FAST_DEATH, "HEADRACE_TEST_NODE": "head"},
        start_timeout=300,
    )
    head.start()
    worker: subprocess.Popen | None = None
    family: list[psutil.Process] = []
    up: Up | None = None
    try:
        assert head.gcs_address is not None
        worker_log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 (the child owns it)
        worker = subprocess.Popen(
            [
                ray_executable(),
                "start",
                f"--address={_loopback_name()}:{head.gcs_address.rsplit(':', 1)[1]}",
                "--num-cpus=1",
                "--block",
                "--node-ip-address=127.0.0.1",
                f"--object-store-memory={128 * 2**20}",
                "--disable-usage-stats",
                # a second node on this machine: ports of its own, not Ray's fixed defaults
                *(
                    f"--{name}={_free_port()}"
                    for name in (
                        "node-manager-port",
                        "object-manager-port",
                        "dashboard-agent-listen-port",
                        "dashboard-agent-grpc-port",
                        "metrics-export-port",
                        "runtime-env-agent-port",
                    )
                ),
            ],
            env={
                **os.environ,
                **FAST_DEATH,
                **head.client_env,
                # Ray's switch for loopback-only nodes refuses to join a cluster, so this node
                # runs in cluster mode: some of its servers listen on every interface, and
                # answer only with the cluster's token (RAY_AUTH_MODE=token)
                RAY_LOOPBACK_ENV: "1",
                "HEADRACE_TEST_NODE": "worker",
            },
            stdin=subprocess.DEVNULL,
            stdout=worker_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.time() + 300
        while _alive_nodes(head) < 2:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            assert time.time() < deadline, "the worker node did not join"
            time.sleep(1)
        home = tmp_path / "home"
        env = {
            "HEADRACE_HOME": str(home),
            "HEADRACE_EXECUTOR": "auto",
            "RAY_ADDRESS": head.gcs_address,
            "HEADRACE_POLL_INTERVAL": "0.3",
            **head.client_env,
        }
        up = Up(APP_DIR, env, tmp_path / "up.log").start(timeout=300)
        ledger = Ledger(f"sqlite:///{home / 'ledger.db'}")

        # functions are scheduled on both nodes (one CPU each)
        first = ledger.enqueue(
            NewInvocation("where", {"n": n, "seconds": 2}, max_attempts=1) for n in range(6)
        )
        rows = _wait(ledger, first, 600)
        assert all(r["status"] == "succeeded" for r in rows), (rows, up.output())
        assert {json.loads(r["result"])["node"] for r in rows} == {"head", "worker"}

        # the worker node dies while it runs invocations: they run again on the head
        marks = tmp_path / "marks"
        marks.mkdir()
        second = ledger.enqueue(
            # one attempt only: a node's death is not the function's, it uses up no retry
            NewInvocation("where", {"n": n, "seconds": 6, "marks": str(marks)}, max_attempts=1)
            for n in range(6)
        )
        deadline = time.time() + 300
        while not any("-worker-" in p.name for p in marks.iterdir()):
            assert time.time() < deadline, "no invocation started on the worker node"
            time.sleep(0.1)
        family = psutil.Process(worker.pid).children(recursive=True)
        os.killpg(worker.pid, signal.SIGKILL)
        for proc in family:  # the node's raylet and workers, wherever they moved
            with contextlib.suppress(psutil.Error):
                proc.kill()
        worker.wait(30)
        rows = _wait(ledger, second, 600)
        assert all(r["status"] == "succeeded" for r in rows), (rows, up.output())
        with ledger.engine.connect() as conn:
            tried = conn.execute(
                select(attempts.c.invocation_id, attempts.c.status).where(
                    attempts.c.invocation_id.in_(second)
                )
            ).all()
        crashed = {i for i, s in tried if s == "abandoned"}
        assert crashed, tried  # the ones on the killed node
        assert {s for _, s in tried} == {"ok", "abandoned"}, tried
        assert sorted(i for i, s in tried if s == "ok") == sorted(second)  # each once
        for row in rows:
            if row["id"] in crashed:
                assert json.loads(row["result"])["node"] == "head"
        ledger.close()
        assert up.terminate() == 0, up.output()
    finally:
        if up is not None and up.alive():
            up.kill9()
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(30)
        for proc in family:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        head.stop()
