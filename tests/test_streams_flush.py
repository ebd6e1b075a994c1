"""End of input: `headrace streams flush PIPELINE` and `headrace.flush_pipeline`.

A bounded input (files dropped into a folder a source reads) goes through `headrace up`; the
newest window stays open because no later record moves the watermark past it. A flush closes
it: asked of the running coordinator (which runs it between its own batches), or run by the
command itself when no coordinator runs. A record that arrives afterwards for a flushed window
is late. Pipeline leases keep a second runner of a pipeline out while one runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import insert

import headrace
from headrace.errors import StreamError
from headrace.ledger import Ledger
from headrace.ledger.pipeline_leases import (
    acquire,
    ensure_tables,
    holder,
    pipeline_leases,
    release,
)
from tests.e2e_helpers import Up
from tests.e2e_helpers import headrace as run_cli

APP = """
import os

from headrace import App
from headrace.streams import ObjectSource
from headrace.streams.operators import aggregations as agg

app = App()
app.source(
    ObjectSource("drop", os.environ["DROP"], settle_seconds=0, interval=0.2),
    event_source="files",
    detail_type="Row",
    time_field="at",
    id_field="id",
)
app.stream("rows")
app.stream("counts")
app.rule({"source": ["files"]}, target="stream:rows")
minutes = app.pipeline("minutes", stream="rows")
minutes.tumbling(60, time_column="_event_time", aggs={"n": agg.count()})
minutes.to_stream("counts")
"""

FIRST = [  # five minutes of event time; the last one stays open on a live stream
    ("a", "2024-05-01T12:00:10Z"),
    ("b", "2024-05-01T12:00:50.5Z"),
    ("c", "2024-05-01T12:01:30Z"),
    ("d", "2024-05-01T12:02:05Z"),
    ("e", "2024-05-01T12:03:59.999999Z"),
    ("f", "2024-05-01T12:04:00.000001Z"),
]
LATER = [("g", "2024-05-01T12:04:30Z"), ("h", "2024-05-01T12:10:00Z")]


def _project(tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    project = tmp_path / "project"
    project.mkdir()
    (project / "headrace.toml").write_text('app = "flushapp:app"\n')
    (project / "flushapp.py").write_text(textwrap.dedent(APP))
    drop = tmp_path / "drop"
    drop.mkdir()
    env = {"HEADRACE_HOME": str(tmp_path / "home"), "DROP": str(drop)}
    return project, env, drop


def _drop(folder: Path, name: str, rows: list[tuple[str, str]]) -> None:
    text = "".join(json.dumps({"id": ident, "at": at}) + "\n" for ident, at in rows)
    (folder / f"{name}.tmp").write_text(text)
    (folder / f"{name}.tmp").rename(folder / f"{name}.jsonl")  # complete when it appears


def _cli(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return run_cli(*args, project=project, env=env)


def _read(project: Path, env: dict[str, str], stream: str) -> list[dict]:
    result = _cli(project, env, "streams", "read", stream, "--offset", "0", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _position(project: Path, env: dict[str, str]) -> int:
    result = _cli(project, env, "streams", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["stream"]: r for r in json.loads(result.stdout)}
    return rows["rows"]["pipelines"].get("minutes", -1) if "rows" in rows else -1


def _wait(predicate, what: str, timeout: float = 60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _minutes(project: Path, env: dict[str, str]) -> dict[str, int]:
    return {r["window_start"][11:16]: r["n"] for r in _read(project, env, "counts")}


@pytest.mark.slow
def test_flush_closes_the_open_window_through_the_coordinator_or_without_one(tmp_path, monkeypatch):
    project, env, drop = _project(tmp_path)
    up = Up(project, env, tmp_path / "up.log").start()
    try:
        _drop(drop, "first", FIRST)
        _wait(lambda: _position(project, env) == len(FIRST), "the pipeline to read the file")
        # a live stream: 12:04 waits for a record past 12:05 that may never come
        assert _minutes(project, env) == {"12:00": 2, "12:01": 1, "12:02": 1, "12:03": 1}

        flushed = _cli(project, env, "streams", "flush", "minutes", "--json")
        assert flushed.returncode == 0, flushed.stderr + up.output()
        result = json.loads(flushed.stdout)
        assert result["by"].startswith(f"the coordinator pid {up.proc.pid} ")  # not beside it
        assert (result["records"], result["windows"], result["late"]) == (0, 1, 0)
        assert _minutes(project, env)["12:04"] == 1
        refused = _cli(project, env, "streams", "reset", "minutes")  # not under its runner
        assert refused.returncode == 2
        assert f"is being run by the coordinator pid {up.proc.pid}" in refused.stderr

        # after the flush, a record for the flushed minute is late; a new minute opens
        _drop(drop, "later", LATER)
        _wait(lambda: _position(project, env) == len(FIRST) + 2, "the second file")
        late = _wait(lambda: _read(project, env, "minutes-late"), "the late record")
        assert [r["id"] for r in late] == ["g"]
        assert "_late_reason" in late[0]
    finally:
        assert up.terminate() == 0, up.output()
    assert "12:10" not in _minutes(project, env)  # its window stayed open across the stop

    # no coordinator: the Python API runs the flush itself, exactly as the docs show
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = headrace.flush_pipeline("minutes", project=project)
    assert result["by"] == "this process"
    assert (result["windows"], result["partitions"][0]["offset"]) == (1, len(FIRST) + 2)
    assert _minutes(project, env) == {
        "12:00": 2,
        "12:01": 1,
        "12:02": 1,
        "12:03": 1,
        "12:04": 1,
        "12:10": 1,
    }
    again = _cli(project, env, "streams", "flush", "minutes")  # nothing left to close
    assert again.returncode == 0, again.stderr
    assert "flushed by this process: read 0 records" in again.stdout
    assert "closed 0 windows" in again.stdout
    reset = _cli(project, env, "streams", "reset", "minutes")
    assert reset.returncode == 0 and "pipeline minutes reset" in reset.stdout, reset.stderr


def test_flush_of_an_unknown_pipeline_is_a_usage_error(tmp_path, monkeypatch):
    project, env, _ = _project(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = _cli(project, env, "streams", "flush", "hourly")
    assert result.returncode == 2
    assert "pipeline 'hourly' is not defined (known: minutes)" in result.stderr
    with pytest.raises(StreamError, match="pipelines: minutes"):
        headrace.flush_pipeline("hourly", project=project)


# -- the lease ----------------------------------------------------------------------------------

_TAKE_AND_EXIT = """
import sys
from headrace.ledger import Ledger
from headrace.ledger.pipeline_leases import acquire, ensure_tables
ledger = Ledger(sys.argv[1])
ensure_tables(ledger)
with ledger.begin() as conn:
    assert acquire(conn, "p", "child", ttl=3600, purpose="flush") is None
"""


def test_a_lease_keeps_others_out_while_its_holder_lives(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ensure_tables(ledger)
    with ledger.begin() as conn:
        assert acquire(conn, "p", "me", ttl=60, purpose="coordinator") is None
        other = acquire(conn, "p", "you", ttl=60, purpose="flush")
        assert other is not None and other.owner == "me" and other.purpose == "coordinator"
        assert acquire(conn, "p", "me", ttl=60, purpose="coordinator") is None  # renewed
        release(conn, ["p"], "me")
        assert holder(conn, "p") is None

    # a holder on this host that died frees it at once, however long its lease was
    done = subprocess.run([sys.executable, "-c", _TAKE_AND_EXIT, ledger.url], timeout=60)
    assert done.returncode == 0
    with ledger.begin() as conn:
        assert acquire(conn, "p", "me", ttl=60, purpose="flush") is None

        # a holder on another host: its lease counts until it expires
        for name, expires in (("live", time.time() + 60), ("gone", time.time() - 1)):
            conn.execute(
                insert(pipeline_leases).values(
                    pipeline=name,
                    owner="elsewhere",
                    host="another-host.invalid",
                    pid=1,
                    purpose="coordinator",
                    expires_at=expires,
                )
            )
        assert acquire(conn, "live", "me", ttl=60, purpose="flush").host == "another-host.invalid"
        assert acquire(conn, "gone", "me", ttl=60, purpose="flush") is None
    ledger.close()


def test_the_coordinator_waits_while_a_flush_holds_the_pipeline(tmp_path):
    """A coordinator started during a flush leaves that pipeline alone until the flush lets
    go, then reloads its checkpoint (the flush moved it) and goes on from there."""
    import pyarrow as pa

    from headrace import App
    from headrace.config import load_settings
    from headrace.server.metrics import Metrics
    from headrace.server.streams import StreamService
    from headrace.storage import ObjectStore

    app = App()
    app.stream("events")
    app.stream("out")
    app.pipeline("copy", stream="events").to_stream("out")
    settings = load_settings(tmp_path, home=str(tmp_path / "home"))
    ledger = Ledger(settings.ledger_url)
    ensure_tables(ledger)
    with ledger.begin() as conn:
        assert acquire(conn, "copy", "a-flush", ttl=60, purpose="flush") is None
    service = StreamService(
        settings, app, ledger, ObjectStore(settings.storage_url), Metrics().streams, lambda f: 0
    )
    service.start()
    try:
        service.logs["events"].append(pa.table({"x": [1, 2, 3]}))
        time.sleep(1.5)
        assert service.logs["out"].end_offset(0) == 0  # not stepped beside the flush
        with ledger.begin() as conn:
            release(conn, ["copy"], "a-flush")
        _wait(lambda: service.logs["out"].end_offset(0) == 3, "the pipeline to run", 10)
        with ledger.begin() as conn:
            assert holder(conn, "copy").owner == service.owner
    finally:
        service.stop()
    with ledger.begin() as conn:
        assert holder(conn, "copy") is None  # released on stop
    ledger.close()
