"""App declarations for streams, the bus routing, and the coordinator's stream service."""

from __future__ import annotations

import json
import time

import pyarrow as pa
import pytest

from headrace import App
from headrace.config import load_settings
from headrace.errors import AppError, PatternError
from headrace.events.bus import Bus, Rule, Target, parse_target
from headrace.events.envelope import make_envelope
from headrace.features import FeatureGroup
from headrace.ledger import Ledger
from headrace.server.metrics import Metrics
from headrace.server.streams import StreamService
from headrace.storage import ObjectStore
from headrace.streams.simulator import Simulator
from headrace.streams.source_http import HttpPoller


def envelope(source: str, kind: str, **detail):
    return make_envelope(source, kind, detail)


def test_bus_routes_each_envelope_once_per_target_in_order():
    bus = Bus(
        [
            Rule.create("big", {"detail": {"fee": [{"numeric": [">", 100]}]}}, "stream:big"),
            Rule.create("also-big", {"detail": {"fee": [{"numeric": [">=", 500]}]}}, "stream:big"),
            Rule.create("tx", {"source": [{"prefix": "chain."}]}, "function:score"),
        ]
    )
    events = [
        envelope("chain.a", "Tx", fee=50),
        envelope("chain.b", "Tx", fee=900),
        envelope("other", "Tx", fee=200),
    ]
    routed = bus.route(events)
    assert routed[Target("stream", "big")] == [events[1], events[2]]
    assert routed[Target("function", "score")] == [events[0], events[1]]


def test_targets_and_rules_are_validated():
    assert parse_target("states:etl") == Target("state_machine", "etl")
    with pytest.raises(PatternError, match="KIND:NAME"):
        parse_target("queue:x")
    with pytest.raises(PatternError):
        Rule.create("r", {"source": "not-a-list"}, "stream:s")


def test_check_streams_names_what_is_missing():
    app = App()
    app.rule({"source": ["x"]}, target="stream:nowhere")
    with pytest.raises(AppError, match="nowhere"):
        app.check_streams()
    app = App()
    app.stream("events")
    app.pipeline("p", stream="events").to_features("missing")
    with pytest.raises(AppError, match="feature group 'missing'"):
        app.check_streams()
    app = App()
    app.pipeline("p", stream="undeclared")
    with pytest.raises(AppError, match=r"add app\.stream"):
        app.check_streams()


def test_window_late_output_gets_its_own_stream():
    from headrace.streams.operators import aggregations as agg

    app = App()
    app.stream("events")
    app.pipeline("p", stream="events").tumbling(60, time_column="ts", aggs={"n": agg.count()})
    app.check_streams()
    assert "p-late" in app.streams


def test_service_polls_a_source_into_a_stream_and_runs_the_pipeline(tmp_path):
    settings = load_settings(tmp_path, home=str(tmp_path / "home"))
    with Simulator(rate_per_s=50, seed=1) as simulator:
        app = App()
        app.source(
            HttpPoller("chain", simulator.url, interval=0.2),
            event_source="chain.poller",
            detail_type="Transaction",
            time_field="time",
            id_field="hash",
        )
        app.stream("tx")
        app.rule({"detail-type": ["Transaction"]}, target="stream:tx")
        app.feature_group(
            FeatureGroup(
                "tx_count",
                entity_keys=["chain"],
                event_time="window_end",
                features={"n": pa.int64()},
            )
        )
        pipe = app.pipeline("dedup", stream="tx")
        pipe.dedup("hash", ttl=3600).to_stream("unique")
        app.stream("unique")
        ledger = Ledger(settings.ledger_url)
        service = StreamService(
            settings,
            app,
            ledger,
            ObjectStore(settings.storage_url),
            Metrics().streams,
            lambda functions: None,
        )
        service.start()
        deadline = time.time() + 20
        while time.time() < deadline and simulator.requests < 4:
            time.sleep(0.1)
        time.sleep(0.5)
        service.stop()
    raw = app.streams["tx"].open(settings.streams_url)
    unique = app.streams["unique"].open(settings.streams_url)
    polled = raw.read(0, 0, raw.end_offset(0))
    kept = unique.read(0, 0, unique.end_offset(0))
    assert polled.num_rows > kept.num_rows > 0  # polls overlap; dedup removed the repeats
    assert kept.num_rows == len(set(polled["hash"].to_pylist()))
    assert pa.types.is_timestamp(polled.schema.field("_event_time").type)
    raw.close()
    unique.close()
    ledger.close()


def _service(tmp_path, app):
    settings = load_settings(tmp_path, home=str(tmp_path / "home"))
    ledger = Ledger(settings.ledger_url)
    queued: list[set[str]] = []
    metrics = Metrics()
    service = StreamService(
        settings, app, ledger, ObjectStore(settings.storage_url), metrics.streams, queued.append
    )
    return service, ledger, queued, metrics


def test_bus_delivers_to_functions_and_state_machines_once_per_envelope(tmp_path):
    from prometheus_client import generate_latest

    from headrace.ledger.executions import list_executions

    app = App()

    @app.function
    def score(event, context):
        return event["detail"]

    app.state_machine("flag", {"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})

    @app.function
    def audit(event, context):
        return None

    app.rule({"detail": {"fee": [{"numeric": [">", 100]}]}}, target="function:score")
    app.rule({"detail": {"fee": [{"exists": True}]}}, target="function:audit")
    app.rule({"detail-type": ["Alarm"]}, target="states:flag")
    service, ledger, queued, metrics = _service(tmp_path, app)
    cheap = envelope("chain", "Tx", fee=5)
    dear = envelope("chain", "Tx", fee=500)
    alarm = envelope("chain", "Alarm", level=3)
    service.publish([cheap, dear, alarm])
    service.publish([dear, alarm])  # a redelivery: no second invocation, no second execution
    rows = ledger.list_invocations(function="score")
    assert len(rows) == 1 and json.loads(rows[0]["payload"])["id"] == dear["id"]
    assert len(ledger.list_invocations(function="audit")) == 2  # cheap and dear, once each
    assert queued == [{"score", "audit"}]
    with ledger.reader.connect() as conn:
        executions = list_executions(conn)
    assert [e["name"] for e in executions] == [f"event-{alarm['id']}"]
    exposed = generate_latest(metrics.registry).decode()
    assert 'headrace_bus_events_total{target="function:score"} 2.0' in exposed
    ledger.close()


def test_a_failing_batch_is_retried_and_reported_never_skipped(tmp_path):
    from headrace.ledger.checkpoints import list_checkpoints

    broken = {"on": True}

    def fragile(table: pa.Table) -> pa.Table:
        if broken["on"]:
            raise ValueError("cannot parse field 'fee'")
        return table

    app = App()
    app.stream("events")
    app.stream("out")
    app.pipeline("p", stream="events").map(fragile).to_stream("out")
    service, ledger, _, _ = _service(tmp_path, app)
    service.start()
    service.logs["events"].append(pa.table({"x": [1, 2, 3]}))
    service._wake.set()
    deadline = time.time() + 10
    rows = []
    while time.time() < deadline:
        with ledger.reader.connect() as conn:
            rows = list_checkpoints(conn, "p")
        if rows and rows[0]["failures"] >= 2:
            break
        time.sleep(0.05)
    assert rows and rows[0]["failures"] >= 2, rows
    assert "cannot parse field 'fee'" in rows[0]["last_error"]
    assert rows[0]["offset"] == 0  # nothing skipped
    broken["on"] = False  # the fix is deployed
    deadline = time.time() + 40  # the retry backs off exponentially
    while time.time() < deadline and service.logs["out"].end_offset(0) < 3:
        time.sleep(0.05)
    service.stop()
    with ledger.reader.connect() as conn:
        (row,) = list_checkpoints(conn, "p")
    assert row["offset"] == 3 and row["failures"] == 0 and row["last_error"] is None
    out = app.streams["out"].open(load_settings(tmp_path, home=str(tmp_path / "home")).streams_url)
    assert out.read(0, 0, 10)["x"].to_pylist() == [1, 2, 3]
    out.close()
    ledger.close()


def test_up_summary_shows_the_pipelines(tmp_path):
    import io
    import threading

    from rich.console import Console

    from headrace.cli import _Summary
    from headrace.server.coordinator import Coordinator

    app = App()
    app.stream("events")
    app.stream("out")
    app.pipeline("copy", stream="events").to_stream("out")
    settings = load_settings(tmp_path, home=str(tmp_path / "home"), workers=1)
    coordinator = Coordinator(settings, app, watch=False)
    thread = threading.Thread(target=coordinator.run, daemon=True)
    thread.start()
    assert coordinator.ready.wait(30)
    coordinator.streams.logs["events"].append(pa.table({"x": list(range(5))}))
    deadline = time.time() + 10
    while time.time() < deadline and coordinator.streams.runners[0].status.records < 5:
        time.sleep(0.05)
    out = io.StringIO()
    Console(file=out, width=120).print(_Summary(coordinator))
    coordinator.stop()
    thread.join(30)
    text = out.getvalue()
    assert "stream pipelines" in text and "copy[0]" in text and "ok" in text


NAMES_APP = """
from headrace import App
from headrace.streams import ObjectSource
from headrace.streams.operators import aggregations as agg

app = App()
app.stream("ev")
app.stream("out")
app.stream({declared!r})
app.source(ObjectSource("drop", "drop"), event_source="files", detail_type="Row")
p = app.pipeline({pipeline!r}, stream="ev")
p.tumbling(10, time_column="t", aggs={{"n": agg.count()}})
p.to_stream("out")
"""


@pytest.mark.parametrize(
    ("pipeline", "declared", "expected"),
    [
        ("tx.v2", "other", "pipeline 'tx.v2': the late records of its tumbling window go to"),
        ("tx", "tx-late", "stream 'tx-late': is declared, but pipeline 'tx' writes its late"),
        ("tx", "drop-errors", "stream 'drop-errors': is declared, but source 'drop' writes"),
    ],
)
def test_names_derived_from_pipelines_and_sources_are_checked_when_the_app_loads(
    tmp_path, pipeline, declared, expected
):
    """A pipeline whose late stream would get an invalid name, and a declared stream that takes
    the name of a pipeline's late stream or a source's error stream, are refused with the
    pipeline or stream named — not later, at run time, about a stream nobody declared."""
    from tests.e2e_helpers import headrace

    (tmp_path / "drop").mkdir()
    (tmp_path / "headrace.toml").write_text('app = "namesapp:app"\nhome = ".headrace"\n')
    (tmp_path / "namesapp.py").write_text(NAMES_APP.format(pipeline=pipeline, declared=declared))
    # `up` refuses too, and exits: a start that fails stops the workers it started
    for args in (("streams", "list"), ("streams", "flush", pipeline), ("up", "--quiet")):
        result = headrace(*args, project=tmp_path, timeout=60)
        assert result.returncode != 0
        assert expected in " ".join(result.stderr.split()), result.stderr


def test_checking_the_streams_twice_finds_no_clash_with_what_it_added():
    from headrace.streams import ObjectSource
    from headrace.streams.operators import aggregations as agg

    app = App()
    app.stream("ev")
    app.source(ObjectSource("drop", "."), event_source="files", detail_type="Row")
    app.pipeline("p", stream="ev").tumbling(10, time_column="t", aggs={"n": agg.count()})
    app.check_streams()
    app.check_streams()
    assert {"p-late", "drop-errors"} <= set(app.streams)
