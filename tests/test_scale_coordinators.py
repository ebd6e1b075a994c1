"""Three coordinators on one PostgreSQL ledger and one storage, one of them killed with
SIGKILL every few seconds (and started again) while objects, executions and stream records
keep arriving: the work is shared, nothing is lost, nothing completes twice, every execution
ends as an uninterrupted run does, and the stream's windows equal a batch recomputation."""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from sqlalchemy import func, select

from headrace.app import load_app
from headrace.config import load_settings
from headrace.ledger import Ledger
from headrace.ledger.schema import attempts, invocations, objects
from headrace.streams.log import open_log
from headrace.workflows import api, execute
from tests.e2e_helpers import Up, headrace

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(1500)]

APP_DIR = Path(__file__).parent / "apps" / "multi"
N_OBJECTS = 90
N_EXECUTIONS = 8
N_FEED_FILES = 20
ROWS_PER_FILE = 40
KILL_EVERY = 10.0
START_TIMEOUT = 240  # a coordinator's start on a loaded machine (imports, ledger set-up)
T0 = 1_790_000_000  # event time of the first feed record (epoch seconds)


def _expected_output(data: bytes) -> bytes:
    return hashlib.sha256(data).hexdigest().encode() + b"\n" + data.upper()


def _reference(app_module, label: str, items: list[int]) -> dict:
    """The execution's output from an uninterrupted, in-process run."""
    result = execute(
        app_module.FAN,
        {"label": label, "items": items},
        resources={
            "square": lambda e: app_module.square(e, None),
            "total": lambda e: app_module.total(e, None),
        },
    )
    assert result.status == "SUCCEEDED", result
    return result.output


def test_three_coordinators_share_the_work_and_survive_kill_9(tmp_path, pg_url):
    rng = random.Random(20261206)
    storage, streams, feed = tmp_path / "storage", tmp_path / "streams", tmp_path / "feed"
    feed.mkdir()
    shared = {
        "HEADRACE_LEDGER": pg_url,
        "HEADRACE_STORAGE": str(storage),
        "HEADRACE_STREAMS": str(streams),
        "HEADRACE_POLL_INTERVAL": "0.3",
        "HEADRACE_WORKERS": "2",
        "HEADRACE_LEASE_SECONDS": "10",
        "MULTI_FEED": str(feed),
    }
    ups = [
        Up(
            APP_DIR,
            {**shared, "HEADRACE_HOME": str(tmp_path / f"home{i}")},
            tmp_path / f"up{i}.log",
        )
        for i in range(3)
    ]
    inbox = storage / "inbox" / "in"
    inbox.mkdir(parents=True)
    inputs = {
        f"obj-{i:04d}.txt": f"object {i} {rng.random()}\n".encode() * rng.randint(1, 40)
        for i in range(N_OBJECTS)
    }
    runs = {f"run-{j}": list(range(j, j + 10 + j % 7)) for j in range(N_EXECUTIONS)}
    feed_rows: list[dict] = []
    for f in range(N_FEED_FILES):
        rows = []
        for r in range(ROWS_PER_FILE):
            n = f * ROWS_PER_FILE + r
            rows.append({"id": n, "k": f"k{n % 3}", "v": rng.randint(1, 1000), "t": T0 + n * 0.5})
        feed_rows.extend(rows)

    import os
    import sys

    os.environ["MULTI_FEED"] = str(feed)  # the app module reads it when loaded here too
    sys.path.insert(0, str(APP_DIR))
    try:
        import multi_app
    finally:
        sys.path.remove(str(APP_DIR))
    settings = load_settings(APP_DIR, ledger=pg_url, home=str(tmp_path / "client"))
    app = load_app(settings)
    ledger = Ledger(pg_url)
    arns: dict[str, str] = {}

    def load():
        """Objects, executions and feed files arriving over ~30 s, interleaved."""
        names = list(inputs)
        per_step = max(1, N_OBJECTS // N_FEED_FILES)
        for step in range(N_FEED_FILES):
            for name in names[step * per_step : (step + 1) * per_step]:
                with open(inbox / name, "wb") as fh:  # in place, as another program writes
                    fh.write(inputs[name])
            if step % 2 == 0 and len(arns) < N_EXECUTIONS:
                label = f"run-{len(arns)}"
                arns[label] = api.start_execution(
                    ledger, app, "fan", {"label": label, "items": runs[label]}, name=label
                )
            lines = feed_rows[step * ROWS_PER_FILE : (step + 1) * ROWS_PER_FILE]
            tmp = feed / f".part-{step:03d}"
            tmp.write_text("".join(json.dumps(r) + "\n" for r in lines))
            tmp.rename(feed / f"part-{step:03d}.jsonl")
            time.sleep(1.0)
        for name in names[N_FEED_FILES * per_step :]:
            with open(inbox / name, "wb") as fh:
                fh.write(inputs[name])
        while len(arns) < N_EXECUTIONS:
            label = f"run-{len(arns)}"
            arns[label] = api.start_execution(
                ledger, app, "fan", {"label": label, "items": runs[label]}, name=label
            )

    for up in ups:
        up.start(timeout=START_TIMEOUT)
    writer = threading.Thread(target=load)
    writer.start()
    kills = 0
    try:
        # one coordinator killed every KILL_EVERY seconds while the load runs, then started again
        victim = 0
        while writer.is_alive() or kills < 3:
            time.sleep(KILL_EVERY)
            ups[victim].kill9()
            kills += 1
            time.sleep(rng.uniform(0.1, 1.0))
            ups[victim].start(timeout=START_TIMEOUT)
            victim = (victim + 1) % 3
        writer.join()
        outbox = storage / "outbox" / "in"
        deadline = time.time() + 600
        while time.time() < deadline:
            counts = ledger.count_by_status("transform")
            finished = [
                api.describe_execution(ledger, arn)["status"] != "RUNNING" for arn in arns.values()
            ]
            if counts == {"succeeded": N_OBJECTS} and all(finished):
                break
            time.sleep(0.5)
        # end of input for the pipeline: its windows close (asked of whichever coordinator
        # holds its lease)
        flushed = headrace(
            "streams",
            "flush",
            "agg",
            project=APP_DIR,
            env={**shared, "HEADRACE_HOME": str(tmp_path / "home0")},
            timeout=180,
        )
        assert flushed.returncode == 0, flushed.stdout + flushed.stderr
        for up in ups:
            assert up.alive(), up.output()
        for up in ups:
            assert up.terminate() == 0, up.output()
    finally:
        writer.join()
        for up in ups:
            if up.alive():
                up.kill9()
    logs = "\n".join(up.output()[-3000:] for up in ups)
    assert kills >= 3

    # objects: one output each, the right one, nothing else (no temp files either)
    outputs = {p.name: p.read_bytes() for p in outbox.iterdir()}
    assert sorted(outputs) == sorted(inputs), logs
    assert all(outputs[n] == _expected_output(inputs[n]) for n in inputs)
    with ledger.engine.connect() as conn:
        n_objects = conn.execute(select(func.count()).select_from(objects)).scalar_one()
        per_event = conn.execute(
            select(invocations.c.event_id, func.count())
            .where(invocations.c.function == "transform")
            .group_by(invocations.c.event_id)
        ).all()
        ok = conn.execute(
            select(attempts.c.invocation_id, func.count())
            .where(attempts.c.status == "ok")
            .group_by(attempts.c.invocation_id)
        ).all()
        statuses = set(conn.execute(select(attempts.c.status).distinct()).scalars())
        results = conn.execute(
            select(invocations.c.result).where(invocations.c.function == "transform")
        ).scalars()
        pids = {json.loads(r)["pid"] for r in results}
        n_invocations = conn.execute(select(func.count()).select_from(invocations)).scalar_one()
    assert n_objects == N_OBJECTS
    assert len(per_event) == N_OBJECTS and {n for _, n in per_event} == {1}
    # completed once: a re-run follows an abandoned attempt, never a second ok
    assert len(ok) == n_invocations and {n for _, n in ok} == {1}
    assert statuses <= {"ok", "abandoned"}, statuses
    # each coordinator has its own worker processes: more than one coordinator's ran them
    assert len(pids) >= 3, "the work was not shared among the coordinators"

    # executions: each as an uninterrupted run ends, each task's invocation once
    for label, arn in arns.items():
        row = api.describe_execution(ledger, arn)
        assert row["status"] == "SUCCEEDED", (label, row, logs)
        assert row["output"] == _reference(multi_app, label, runs[label]), label
    with ledger.engine.connect() as conn:
        per_token = conn.execute(
            select(invocations.c.idempotency_key, func.count())
            .where(invocations.c.execution_id.is_not(None))
            .group_by(invocations.c.idempotency_key)
        ).all()
    n_tasks = sum(len(items) + 1 for items in runs.values())
    assert len(per_token) == n_tasks and {n for _, n in per_token} == {1}

    # stream: every record once in the log, windows equal to a batch recomputation
    ticks = open_log(str(streams), "ticks")
    windows = open_log(str(streams), "windows")
    try:
        appended = pa.concat_tables(
            [ticks.read(p, 0, ticks.end_offset(p)) for p in range(2)], promote_options="default"
        )
        got = windows.read(0, 0, windows.end_offset(0))
    finally:
        ticks.close()
        windows.close()
    assert sorted(appended["id"].to_pylist()) == [r["id"] for r in feed_rows]
    con = duckdb.connect()
    con.register("feed", pa.Table.from_pylist(feed_rows))
    con.register("got", got)
    truth = con.execute(
        "SELECT k, (floor(t / 10) * 10)::BIGINT AS w, count(*) AS n, sum(v)::BIGINT "
        "FROM feed GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()
    mine = con.execute(
        "SELECT k, epoch(window_start)::BIGINT, n, total::BIGINT FROM got ORDER BY 1, 2"
    ).fetchall()
    assert mine == truth
    ledger.close()
