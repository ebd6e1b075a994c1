"""A running coordinator for the console's tests: the console test app (the transactions
example plus functions and state machines) with real invocations, dead letters, executions,
stream records and features."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import httpx

from headrace.app import load_app
from headrace.config import load_settings
from headrace.ledger import Ledger, NewInvocation
from headrace.server.coordinator import Coordinator
from headrace.streams.simulator import Simulator
from headrace.workflows import api as workflows

ROOT = Path(__file__).resolve().parent.parent
APP_DIR = ROOT / "tests" / "apps" / "console"
EXAMPLE = ROOT / "examples" / "transactions_features"


class ConsoleProject:
    """The coordinator in this process (real executor, ledger, watcher, streams)."""

    def __init__(self, tmp: Path, env: dict[str, str] | None = None) -> None:
        self._saved = {
            k: os.environ.get(k)
            for k in ("PYTHONPATH", "TX_API_URL", "TX_GRACE_SECONDS", *(env or {}))
        }
        self.simulator = Simulator(rate_per_s=20, seed=11)
        self.simulator.__enter__()
        os.environ["TX_API_URL"] = self.simulator.url
        os.environ["TX_GRACE_SECONDS"] = "1"
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(EXAMPLE), os.environ.get("PYTHONPATH", "")) if p
        )
        os.environ.update(env or {})
        if str(EXAMPLE) not in sys.path:
            sys.path.insert(0, str(EXAMPLE))
        sys.modules.pop("transactions", None)
        sys.modules.pop("console_app", None)
        self.settings = load_settings(
            APP_DIR,
            home=str(tmp / "home"),
            poll_interval=0.2,
            workers=2,
            metrics="127.0.0.1:0",
        )
        self.app = load_app(self.settings)
        self.coordinator = Coordinator(self.settings, self.app)
        self.thread = threading.Thread(target=self.coordinator.run, kwargs={"drain_timeout": 10})
        self.thread.start()
        assert self.coordinator.ready.wait(60), "coordinator did not start"
        self.ledger = Ledger(self.settings.ledger_url)
        self.url = self.coordinator.metrics_url.removesuffix("/metrics")
        self.buckets = Path(self.settings.storage_url)

    def close(self) -> None:
        self.coordinator.stop()
        self.thread.join(60)
        self.ledger.close()
        self.simulator.__exit__(None, None, None)
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    # -- making things happen ------------------------------------------------------------

    def put(self, key: str, data: bytes = b"x") -> None:
        path = self.buckets / "inbox" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part-upload")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def invoke(self, function: str, payload: dict) -> str:
        spec = self.app.spec(function)
        (inv,) = self.ledger.enqueue([NewInvocation(function, payload, spec.max_attempts)])
        self.coordinator._wake.set()
        return inv

    def start(self, machine: str, name: str, payload: dict) -> str:
        arn = workflows.start_execution(self.ledger, self.app, machine, payload, name=name)
        self.coordinator._wake.set()
        return arn

    def wait_until(self, check, timeout: float = 90.0, what: str = "condition"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = check()
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    def status(self, arn: str) -> str:
        return workflows.describe_execution(self.ledger, arn)["status"]

    def get(self, path: str, **kwargs):
        return httpx.get(self.url + path, timeout=30, **kwargs)

    def post(self, path: str, body: dict | None = None, **kwargs):
        headers = {"X-Headrace": "1", **kwargs.pop("headers", {})}
        return httpx.post(
            self.url + path, content=json.dumps(body or {}), headers=headers, timeout=30, **kwargs
        )


def populate(p: ConsoleProject) -> dict[str, str]:
    """Invocations from objects and direct calls, a dead letter, finished and running
    executions, stream records through the transactions pipeline."""
    for i in range(3):
        p.put(f"in/file-{i}.txt", f"data {i}".encode())
    dead = p.invoke("reject", {"why": "the test says so"})
    done = p.start("fanout", "fan-done", {"items": list(range(10)), "wait": 0})
    running = p.start("fanout", "fan-running", {"items": list(range(3)), "wait": 600})
    failed = p.start("failing", "fails", {"why": "always"})
    p.wait_until(
        lambda: (
            len(
                [
                    r
                    for r in p.ledger.list_invocations(function="ingest")
                    if r["status"] == "succeeded"
                ]
            )
            >= 3
        ),
        what="the ingest invocations",
    )
    p.wait_until(lambda: p.ledger.get_invocation(dead)["status"] == "dead", what="a dead letter")
    p.wait_until(lambda: p.status(done) == "SUCCEEDED", what="fan-done")
    p.wait_until(lambda: p.status(failed) == "FAILED", what="fails")
    p.wait_until(
        lambda: any(
            e["type"] == "WaitStateEntered" for e in workflows.get_history(p.ledger, running)
        ),
        what="fan-running to wait",
    )

    def stream_stats():
        data = p.get("/api/streams").json()
        return data["stats"] and any(c["records"] for c in data["checkpoints"])

    p.wait_until(stream_stats, what="stream records through the pipeline")
    late_readings(p)
    serve_and_register(p)
    runs = dataset_runs(p)
    return {"dead": dead, "done": done, "running": running, "failed": failed, **runs}


#: A script of the project that runs a dataset: read_parquet -> map_batches -> write_parquet;
#: its third argument makes the function fail ("fail") or take a second a block ("slow").
DATASET_SCRIPT = """
import sys
import time

import headrace.data as hd

source, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]


def double(batch):
    if mode == "fail":
        raise ValueError("the test says so")
    if mode == "slow":
        time.sleep(1.0)
    batch["y"] = batch["x"] * 2
    return batch


hd.read_parquet(source).map_batches(double, batch_format="pandas").write_parquet(out)
"""


def dataset_script(p: ConsoleProject) -> tuple[Path, Path]:
    """The script and its input: a Parquet file of 800 rows in 8 row groups (8 blocks)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = p.settings.home / "datasets-demo"
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "numbers.parquet"
    if not source.exists():
        pq.write_table(pa.table({"x": list(range(800))}), source, row_group_size=100)
    script = folder / "double_numbers.py"
    script.write_text(DATASET_SCRIPT)
    return script, source


def run_dataset_script(p: ConsoleProject, mode: str, out: str, *, wait: bool = True):
    """Run the dataset script as the project's scripts run: its settings resolve (here from
    HEADRACE_LEDGER, as in a job), from a folder with no headrace.toml."""
    import subprocess

    script, source = dataset_script(p)
    env = {**os.environ, "HEADRACE_LEDGER": p.settings.ledger_url}
    argv = [sys.executable, str(script), str(source), str(script.parent / out), mode]
    if not wait:
        return subprocess.Popen(argv, cwd=script.parent, env=env)
    return subprocess.run(argv, cwd=script.parent, env=env, capture_output=True, text=True)


def dataset_runs(p: ConsoleProject) -> dict[str, str]:
    """Dataset runs of the project: one that wrote its output, one whose function failed, and
    one run by a headrace job (recorded with the job's id)."""
    from headrace.jobs.definition import JobDefinition
    from headrace.jobs.service import Jobs

    done = run_dataset_script(p, "ok", "doubled")
    assert done.returncode == 0, done.stderr
    failed = run_dataset_script(p, "fail", "never")
    assert failed.returncode != 0 and "the test says so" in failed.stderr
    script, source = dataset_script(p)
    definition = JobDefinition(
        name="double-numbers",
        command=[sys.executable, str(script), str(source), str(script.parent / "by-job"), "ok"],
        environment={"HEADRACE_LEDGER": p.settings.ledger_url},
        working_dir=str(script.parent),
    )
    job = Jobs(p.ledger, p.settings.home).run_sync(definition, job_name="double-numbers")
    assert job.status == "SUCCEEDED", job.status_reason
    return {"dataset_job": job.id}


#: The minute the sensor readings fall in (epoch seconds, on a minute boundary).
SENSOR_MINUTE = 1_700_000_040


def late_readings(p: ConsoleProject) -> None:
    """Readings whose minutes had closed when they came: 2 late for the first minute, 1 for the
    second (the window has no grace; the first batch moved the watermark two minutes on)."""
    import pyarrow as pa

    from headrace.streams.log import open_log

    def readings(seconds: list[int]) -> pa.Table:
        times = [(SENSOR_MINUTE + s) * 1_000_000 for s in seconds]
        return pa.table(
            {
                "sensor": pa.array(["a"] * len(times)),
                "t": pa.array(times, pa.timestamp("us", tz="UTC")),
            }
        )

    def processed(n: int):
        def check():
            rows = [
                c for c in p.get("/api/streams").json()["checkpoints"] if c["pipeline"] == "sensors"
            ]
            return rows and rows[0]["records"] >= n

        return check

    log = open_log(p.settings.streams_url, "readings")
    try:
        log.append(readings([0, 30, 130]))
        p.wait_until(processed(3), what="the first readings")
        log.append(readings([10, 20, 70]))
        p.wait_until(processed(6), what="the late readings")
    finally:
        log.close()


def serve_and_register(p: ConsoleProject) -> None:
    """Requests through the app's HTTP route, and two versions of a model in the registry,
    the second under the alias prod."""
    from headrace.models import ModelRegistry

    url = p.coordinator.serve_url
    for _ in range(5):
        res = httpx.get(url + "/hello", timeout=30)
        assert res.status_code == 200, res.text
    registry = ModelRegistry(p.ledger, p.coordinator.store, cache_dir=p.settings.home / "mc")
    registry.push("digits", {"weights": [1, 2]}, metrics={"accuracy": 0.91})
    registry.push("digits", {"weights": [1, 3]}, alias="prod", metrics={"accuracy": 0.95})
