"""The coordinator's Ray executor on a cluster of two nodes started as separate `ray start`
processes on 127.0.0.1 (a head and a worker, one CPU each): functions run on both; the worker
node killed under load, the invocations it was running are re-run on the head without using
up a retry: none is lost, each completes once."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from headrace.ledger import Ledger, NewInvocation
from headrace.ledger.schema import attempts
from tests.e2e_helpers import Up
from tests.ray_nodes import WorkerNode, cluster_processes, listening, loopback_only, start_head

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

APP_DIR = Path(__file__).parent / "apps" / "raynodes"


def _wait(ledger: Ledger, ids: list[str], timeout: float) -> list[dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = [ledger.get_invocation(i) for i in ids]
        if all(r["status"] in ("succeeded", "dead") for r in rows):
            return rows
        time.sleep(0.3)
    raise AssertionError(f"not finished: {[r['status'] for r in rows]}")


def test_functions_run_on_both_nodes_and_survive_the_worker_node_dying(tmp_path):
    head = start_head(num_cpus=1)
    worker = WorkerNode(head, tmp_path / "worker.log", num_cpus=1)
    up: Up | None = None
    try:
        worker.start()
        loopback_only(listening(cluster_processes(head, worker)))
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
        worker.kill()
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
        worker.stop()
        head.stop()
