"""A bad record or a dying thread never stops the coordinator's stream side, and shows.

`headrace up` runs in a subprocess against the simulator; the test reads what a user reads:
`headrace streams read SOURCE-errors`, `headrace streams stats --json` and the metrics.
"""

from __future__ import annotations

import json
import sqlite3
import textwrap
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from headrace import App
from headrace.config import load_settings
from headrace.events.envelope import make_envelope
from headrace.ledger import Ledger
from headrace.server.metrics import Metrics
from headrace.server.streams import StreamService
from headrace.storage import ObjectStore
from headrace.streams.simulator import Simulator
from tests.e2e_helpers import Up, headrace

APP = """
import os

from headrace import App
from headrace.streams import HttpPoller

app = App()
app.source(
    HttpPoller("chain", os.environ["TX_API_URL"], interval=0.5),
    event_source="chain.poller",
    detail_type="Transaction",
    id_field="hash",
)
app.stream("tx")
app.rule({"detail-type": ["Transaction"]}, target="stream:tx")


@app.function
def tick(event, context):
    return event["period"]


app.schedule("every-second", every=1, function="tick")
"""


def _project(tmp_path: Path, url: str) -> tuple[Path, dict[str, str]]:
    project = tmp_path / "project"
    project.mkdir()
    (project / "headrace.toml").write_text('app = "streamapp:app"\nhome = ".headrace"\n')
    (project / "streamapp.py").write_text(textwrap.dedent(APP))
    env = {"HEADRACE_HOME": str(tmp_path / "home"), "TX_API_URL": url}
    return project, env


def _wait(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _read(project: Path, env: dict[str, str], stream: str) -> list[dict]:
    args = ("--offset", "0", "--limit", "2000", "--json")  # from the start: polls overlap
    result = headrace("streams", "read", stream, *args, project=project, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _stats(project: Path, env: dict[str, str]) -> dict[str, dict]:
    result = headrace("streams", "stats", "--json", project=project, env=env)
    assert result.returncode == 0, result.stderr
    return {row["component"]: row for row in json.loads(result.stdout)["health"]}


def _metrics(env: dict[str, str]) -> str:
    info = json.loads((Path(env["HEADRACE_HOME"]) / "coordinator.json").read_text())
    return httpx.get(info["metrics"], timeout=5).text


@pytest.mark.slow
def test_a_record_with_an_empty_id_goes_to_the_error_stream_and_the_rest_flow(tmp_path):
    with Simulator(rate_per_s=20, seed=5) as simulator:
        project, env = _project(tmp_path, simulator.url)
        # the trial: one record with an empty id stopped every source for good
        simulator.serve_next(
            [{"hash": "", "fee": 1}, {"hash": "good-1", "fee": 2, "memo": "m" * 1000}]
        )
        up = Up(project, env, tmp_path / "up.log").start()
        try:
            rows = _wait(
                lambda: [r for r in _read(project, env, "tx") if r["hash"] == "good-1"],
                what="the good record beside the bad one",
            )
            assert rows[0]["memo"] == "m" * 1000  # a field the first record lacks is kept
            errors = _read(project, env, "chain-errors")
            (bad,) = errors
            assert bad["source"] == "chain" and bad["stage"] == "envelope"
            assert json.loads(bad["record"]) == {"hash": "", "fee": 1, "memo": None}
            assert "id field 'hash'" in bad["reason"] and "non-empty id" in bad["reason"]
            polled = simulator.requests
            # later polls are still delivered: the sources thread lives on
            _wait(lambda: simulator.requests > polled + 3, what="more polls")
            later = _read(project, env, "tx")
            assert len({r["hash"] for r in later}) > 50
            health = _stats(project, env)
            assert health["source:chain"]["status"] == "ok"
            assert health["source:chain"]["rejected"] == 1
            assert health["thread:sources"]["status"] == "ok"
            assert health["thread:sources"]["restarts"] == 0
            exposed = _metrics(env)
            assert 'headrace_source_rejected_records_total{source="chain"} 1.0' in exposed
            assert 'headrace_stream_component_up{component="source:chain"} 1.0' in exposed
            assert up.alive(), up.output()
        finally:
            assert up.terminate() == 0, up.output()
    assert "Traceback" not in up.output(), up.output()


@pytest.mark.slow
def test_a_dying_stream_thread_is_restarted_and_shows_as_failing(tmp_path):
    with Simulator(rate_per_s=5, seed=6) as simulator:
        project, env = _project(tmp_path, simulator.url)
        up = Up(project, env, tmp_path / "up.log").start()
        ledger_file = Path(env["HEADRACE_HOME"]) / "ledger.db"
        try:
            _wait(lambda: _stats(project, env).get("thread:pipelines"), what="health rows")
            # the ledger refuses the schedules' invocations under the pipelines thread
            with sqlite3.connect(ledger_file, timeout=30) as db:
                db.execute(
                    "CREATE TRIGGER refuse BEFORE INSERT ON invocations "
                    "BEGIN SELECT RAISE(ABORT, 'invocations are refused'); END"
                )
            failing = _wait(
                lambda: (h := _stats(project, env)["thread:pipelines"])["restarts"] >= 2 and h,
                what="the pipelines thread to die and be restarted twice",
            )
            assert failing["status"] == "failing"
            assert "invocations are refused" in failing["last_error"]
            exposed = _metrics(env)
            assert 'headrace_stream_component_up{component="thread:pipelines"} 0.0' in exposed
            assert 'headrace_stream_thread_restarts_total{thread="pipelines"}' in exposed
            polled = simulator.requests  # the other thread goes on meanwhile
            _wait(lambda: simulator.requests > polled + 2, what="polls while pipelines fail")
            with sqlite3.connect(ledger_file, timeout=30) as db:
                db.execute("DROP TRIGGER refuse")
            healed = _wait(
                lambda: (h := _stats(project, env)["thread:pipelines"])["status"] == "ok" and h,
                timeout=90,
                what="the restarted thread to work again",
            )
            assert healed["failures"] == 0 and healed["restarts"] >= 2
            assert up.alive(), up.output()
        finally:
            assert up.terminate() == 0, up.output()


def test_up_summary_shows_failing_sources_and_threads(tmp_path):
    import io

    from rich.console import Console

    from headrace.cli_streams import health_table
    from headrace.server.stream_health import ComponentHealth

    rows = [
        ComponentHealth("source:chain", rejected=3),
        ComponentHealth("thread:pipelines", "failing", 4, 2, 0, "OperationalError: no table"),
    ]
    out = io.StringIO()
    Console(file=out, width=160).print(health_table(rows))
    text = out.getvalue()
    assert "source:chain" in text and "ok" in text
    assert "thread:pipelines" in text and "failing" in text and "no table" in text


def test_bus_keeps_a_stream_column_one_type_and_sets_aside_what_cannot_be(tmp_path):
    app = App()
    app.source(_NoSource(), event_source="s", detail_type="T", id_field="id")
    app.stream("events")
    app.rule({"detail-type": ["T"]}, target="stream:events")
    settings = load_settings(tmp_path, home=str(tmp_path / "home"))
    ledger = Ledger(settings.ledger_url)
    service = StreamService(
        settings, app, ledger, ObjectStore(settings.storage_url), Metrics().streams, print
    )
    service.start()
    try:
        spec = app.sources["none"]
        service.publish([make_envelope("s", "T", {"fee": 1}, id="a")], origin=spec)
        later = [
            make_envelope("s", "T", {"fee": "12"}, id="b"),  # text that is an exact int
            make_envelope("s", "T", {"fee": "lots"}, id="c"),
        ]
        service.publish(later, origin=spec)
        events = service.logs["events"]
        table = events.read(0, 0, 10)  # one readable log: int64 all along
        assert table["fee"].to_pylist() == [1, 12] and table["_event_id"].to_pylist() == ["a", "b"]
        assert table.schema.field("fee").type == pa.int64()
        (bad,) = service.logs["none-errors"].read(0, 0, 10).to_pylist()
        assert bad["stage"] == "deliver" and "field 'fee'" in bad["reason"]
        assert json.loads(bad["record"])["detail"] == {"fee": "lots"}
    finally:
        service.stop()
        ledger.close()


class _NoSource:
    name = "none"
    interval = 3600.0
    stats: dict = {}
    next_poll_at = float("inf")

    def poll(self):
        return None


def test_a_failing_source_shows_failing_once_per_failure_and_ok_again(tmp_path):
    from headrace.ledger.checkpoints import list_health
    from headrace.streams.source_http import HttpPoller

    with Simulator(rate_per_s=5, seed=8) as simulator:
        app = App()
        poller = HttpPoller("chain", simulator.url, interval=0.1, max_backoff=0.3)
        app.source(poller, event_source="chain.poller", detail_type="Transaction")
        settings = load_settings(tmp_path, home=str(tmp_path / "home"))
        ledger = Ledger(settings.ledger_url)
        metrics = Metrics()
        service = StreamService(
            settings, app, ledger, ObjectStore(settings.storage_url), metrics.streams, print
        )
        service.start()
        try:
            simulator.fail_next(3, status=503)
            failing = _wait(
                lambda: (h := service.health.get("source:chain")) and not h.ok and h,
                what="the source to show failing",
            )
            assert "503" in failing.last_error
            healed = _wait(
                lambda: (h := service.health.get("source:chain")) and h.ok and h,
                what="the source to recover",
            )
            assert healed.failures == 0
            with ledger.reader.connect() as conn:
                (row,) = [r for r in list_health(conn) if r["component"] == "source:chain"]
            assert row["status"] == "ok"
            assert poller.stats["failures"] == 3  # counted once each, not once per loop turn
        finally:
            service.stop()
            ledger.close()


STUCK_APP = """
from headrace import App

app = App()
app.stream("ev")
app.stream("out")


def refuse(table):
    raise ValueError("this pipeline refuses every batch")


app.pipeline("stuck", stream="ev").map(refuse).to_stream("out")
"""


def test_stats_shows_the_lag_of_a_pipeline_failing_every_batch(tmp_path):
    """A pipeline that fails every batch at offset 0 commits nothing; `streams stats` still
    shows it behind every record its stream holds."""
    from headrace.app import load_app
    from headrace.ledger.pipeline_leases import ensure_tables

    project = tmp_path / "project"
    project.mkdir()
    (project / "headrace.toml").write_text('app = "stuckapp:app"\nhome = ".headrace"\n')
    (project / "stuckapp.py").write_text(textwrap.dedent(STUCK_APP))
    env = {"HEADRACE_HOME": str(tmp_path / "home")}
    settings = load_settings(project, home=env["HEADRACE_HOME"])
    app = load_app(settings)
    ledger = Ledger(settings.ledger_url)
    service = StreamService(
        settings, app, ledger, ObjectStore(settings.storage_url), Metrics().streams, print
    )
    ensure_tables(ledger)
    service.want(app.pipelines, purpose="coordinator")
    service.claim_leases()
    service.open()
    try:
        service.logs["ev"].append(pa.table({"x": list(range(5))}))
        for _ in range(2):
            service._batch_backoff.clear()  # no waiting out the retry delay
            service._step(0, service.runners[0])
    finally:
        service.stop()
        ledger.close()
    result = headrace("streams", "stats", "--json", project=project, env=env)
    assert result.returncode == 0, result.stderr
    (position,) = json.loads(result.stdout)["positions"]
    assert position["failures"] == 2 and "refuses every batch" in position["last_error"]
    assert (position["offset"], position["lag"]) == (0, 5)


class _UnsavableSource:
    """A source whose records arrive but whose state() is broken: every poll fails after it."""

    name = "unsavable"
    interval = 0.01
    next_poll_at = 0.0

    def __init__(self) -> None:
        self.stats: dict = {"failures": 0, "consecutive_failures": 0}

    def poll(self):
        return pa.table({"id": ["a"]})

    def state(self):
        raise RuntimeError("this source cannot say where it is")

    def restore(self, state):
        pass


def test_a_source_failing_every_poll_counts_each_failing_poll(tmp_path):
    app = App()
    spec = app.source(_UnsavableSource(), event_source="s", detail_type="T", id_field="id")
    app.stream("events")
    app.rule({"detail-type": ["T"]}, target="stream:events")
    settings = load_settings(tmp_path, home=str(tmp_path / "home"))
    ledger = Ledger(settings.ledger_url)
    service = StreamService(
        settings, app, ledger, ObjectStore(settings.storage_url), Metrics().streams, print
    )
    service.open()
    try:
        for _ in range(3):
            service._poll_due(spec)
        health = service.health.get("source:unsavable")
    finally:
        service.stop()
        ledger.close()
    assert health is not None and health.status == "failing"
    assert health.failures == 3 and "cannot say where it is" in health.last_error


def test_a_bad_record_served_on_every_poll_goes_to_the_error_stream_once(tmp_path):
    from headrace.streams.source_http import HttpPoller

    with Simulator(rate_per_s=1, seed=3) as simulator:
        app = App()
        spec = app.source(
            HttpPoller("web", simulator.url, interval=0.01),
            event_source="web",
            detail_type="T",
            time_field="time",
            id_field="hash",
        )
        app.stream("events")
        app.rule({"detail-type": ["T"]}, target="stream:events")
        settings = load_settings(tmp_path, home=str(tmp_path / "home"))
        ledger = Ledger(settings.ledger_url)
        service = StreamService(
            settings, app, ledger, ObjectStore(settings.storage_url), Metrics().streams, print
        )
        service.open()
        try:
            for bad in ("yesterday", "yesterday", "yesterday", "tomorrow"):
                good = {"hash": "g", "time": "2024-05-01T12:00:00Z"}
                simulator.serve_next([good, {"hash": "b", "time": bad}])
                time.sleep(0.02)
                assert service.poll_source(spec) == 2
            errors = service.logs["web-errors"].read(0, 0, 100)
            health = service.health.get("source:web")
        finally:
            service.stop()
            ledger.close()
    assert [json.loads(r)["time"] for r in errors.column("record").to_pylist()] == [
        "yesterday",
        "tomorrow",
    ]
    assert health is not None and health.status == "ok" and health.rejected == 2
