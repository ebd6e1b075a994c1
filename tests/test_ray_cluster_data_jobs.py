"""Datasets and jobs on a Ray cluster of two nodes started as separate `ray start` processes on
127.0.0.1 (a head and a worker), the worker node killed mid-run as a machine dies:

* a dataset pipeline (Parquet in, a function, a class in an actor pool, Parquet out) on the
  Ray engine finishes with exactly the rows of an uninterrupted run: Ray re-runs the lost
  tasks, restarts the lost actors and redoes their batches, each once in the output;
* two jobs, one driver on each node: the one whose driver died fails its attempt with a
  reason naming the node, and its retry succeeds on the head; the other's lost tasks run again
  and it succeeds, its log saying which node died;
* every server of both nodes listens on 127.0.0.1 only (docs/scale-out.md says how)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("ray")

from headrace.jobs import JobDefinition, Jobs
from headrace.ledger import Ledger
from tests.ray_nodes import WorkerNode, cluster_processes, listening, loopback_only, start_head

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

APP_DIR = Path(__file__).parent / "apps" / "raynodes"
ROWS_PER_FILE = 50
FILES = 24


def _wait_for(what: str, check, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while not check():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_dataset_pipeline_survives_the_worker_node_dying(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    for f in range(FILES):
        ids = pa.array(range(f * ROWS_PER_FILE, (f + 1) * ROWS_PER_FILE), pa.int64())
        pq.write_table(pa.table({"id": ids}), source / f"part-{f:03d}.parquet")
    marks = tmp_path / "marks"
    marks.mkdir()
    head = start_head(num_cpus=2)
    worker = WorkerNode(head, tmp_path / "worker.log", num_cpus=2)
    driver: subprocess.Popen | None = None
    try:
        worker.start()
        loopback_only(listening(cluster_processes(head, worker)))
        log = open(tmp_path / "driver.log", "wb")  # noqa: SIM115 (the child owns it)
        with log:
            driver = subprocess.Popen(
                [
                    sys.executable,
                    str(APP_DIR / "pipeline.py"),
                    str(source),
                    str(tmp_path / "out"),
                    str(marks),
                ],
                env={
                    **os.environ,
                    **head.client_env,
                    "RAY_ADDRESS": head.gcs_address,
                    "RAY_worker_niceness": "0",
                    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
                },
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(Path(__file__).parent.parent),
            )

        def seen(step: str, node: str) -> list[str]:
            return [
                p.name
                for p in marks.iterdir()
                if p.name.startswith(f"{step}-") and p.name.split("-")[2] == node
            ]

        # both kinds of work run on the worker node before it dies, with work left to do
        _wait_for(
            "batches on the worker node", lambda: seen("actor", "worker") and seen("fn", "worker")
        )
        worker.kill()
        assert driver.wait(900) == 0, (tmp_path / "driver.log").read_text()[-5000:]
        output = pq.read_table(tmp_path / "out")
        ids = list(range(FILES * ROWS_PER_FILE))
        assert output.column("id").to_pylist() == ids  # every row once, in order
        assert output.column("double").to_pylist() == [2 * i for i in ids]
        assert output.column("square").to_pylist() == [i * i for i in ids]
        assert len(seen("actor", "worker")) < FILES  # the head did the rest
        # a batch the worker's actor had in flight was done again on the head, and is in
        # the output once (above)
        on_worker = {name.split("-")[1] for name in seen("actor", "worker")}
        assert on_worker & {name.split("-")[1] for name in seen("actor", "head")}, sorted(
            p.name for p in marks.iterdir()
        )
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
            driver.wait()
        worker.stop()
        head.stop()


def test_jobs_report_and_retry_the_worker_node_dying(tmp_path, monkeypatch):
    marks = tmp_path / "marks"
    marks.mkdir()
    # one CPU a node and one per driver: of two jobs, one driver runs on each node
    head = start_head(num_cpus=1)
    worker = WorkerNode(head, tmp_path / "worker.log", num_cpus=1)
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    threads: list[threading.Thread] = []
    try:
        worker.start()
        loopback_only(listening(cluster_processes(head, worker)))
        monkeypatch.setenv("RAY_AUTH_TOKEN", head.token)
        jobs = Jobs(ledger, tmp_path / "home", heartbeat_seconds=1.0)
        definition = JobDefinition(
            "two-nodes",
            ["python", "job.py", str(marks)],
            runner="ray",
            cluster=head.address,
            working_dir=str(APP_DIR),
            vcpus=1,
            retry_attempts=2,
        )
        ids = [jobs.submit(definition, job_name=f"job-{n}") for n in range(2)]
        threads = [threading.Thread(target=jobs.run, args=(i,)) for i in ids]
        for thread in threads:
            thread.start()

        def drivers() -> dict[str, str]:  # job id -> node of its first attempt's driver
            found = {}
            for p in marks.glob("driver-*-1-*"):
                found[p.name.split("-")[1]] = p.name.rsplit("-", 1)[1]
            return found

        _wait_for("both drivers", lambda: len(drivers()) == 2)
        _wait_for("tasks on the worker node", lambda: any(marks.glob("task-*-worker")))
        placed = drivers()
        assert sorted(placed.values()) == ["head", "worker"], placed
        worker.kill()
        for thread in threads:
            thread.join(900)
        by_node = {node: jobs.get(job_id) for job_id, node in placed.items()}

        # the job whose driver died with the node: attempt 1 failed naming the node, and its
        # retry ran on the head and succeeded
        moved = by_node["worker"]
        assert moved.status == "SUCCEEDED", (moved, jobs.logs(moved.id, 1))
        first, second = moved.attempt_log
        assert second["outcome"] == "succeeded", moved.attempt_log
        assert first["outcome"] == "failed" and first["exit_code"] is None
        assert "Ray node" in first["reason"] and "died while the job ran" in first["reason"]
        assert "driver on head, attempt 2" in jobs.logs(moved.id, 2)
        assert "sum 506" in jobs.logs(moved.id, 2)

        # the job whose driver stayed: its lost tasks ran again, one attempt, the log says why
        stayed = by_node["head"]
        assert stayed.status == "SUCCEEDED" and stayed.attempts == 1, stayed
        log = jobs.logs(stayed.id, 1)
        assert "sum 506" in log
        assert "died while the job ran" in log, log
    finally:
        for thread in threads:
            thread.join(60)
        ledger.close()
        worker.stop()
        head.stop()
