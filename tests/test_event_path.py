"""One event path: object triggers are bus rules, and one function delivers every event."""

import json
import time

from sqlalchemy import select

from headrace import App
from headrace.events.bus import Bus
from headrace.events.s3 import object_created_envelope, object_created_event
from headrace.ledger import Ledger
from headrace.ledger.executions import find, list_executions
from headrace.ledger.schema import events
from headrace.server.delivery import deliver
from headrace.workflows.names import name_for
from tests.test_coordinator import Running


def _object(key: str, bucket: str = "landing", event_id: str = "e1") -> dict:
    return object_created_envelope(
        event_id=event_id,
        bucket=bucket,
        key=key,
        size=7,
        etag='"abc"',
        sequencer="0001",
        event_time=1_700_000_000.123,
    )


def test_an_object_trigger_is_a_bus_rule_that_hands_the_lambda_its_s3_event():
    app = App()

    @app.on_object_created(bucket="landing", prefix="in/", suffix=(".grib", ".grb"))
    @app.function
    def convert(event, context):
        return None

    (rule,) = app.rules
    assert rule.target.kind == "function" and rule.target.name == "convert"
    assert app.buckets == ["landing"]
    bus = Bus(app.rules)
    keys = ["in/a b.GRIB", "in/c.grb", "in/d.txt", "out/e.grib", "in/"]
    routed = bus.deliveries([_object(k, event_id=f"e{i}") for i, k in enumerate(keys)])
    pairs = next(iter(routed.values()))
    assert [envelope["detail"]["object"]["key"] for envelope, _ in pairs] == keys[:2]
    assert pairs[0][1] == object_created_event(
        bucket="landing",
        key="in/a b.GRIB",
        size=7,
        etag='"abc"',
        sequencer="0001",
        event_time=1_700_000_000.123,
        request_id="e0",
    )
    assert bus.deliveries([_object("in/a.grib", bucket="other")]) == {}


def test_delivery_is_idempotent_per_event_and_target(tmp_path):
    app = App()

    @app.on_object_created(bucket="landing")
    @app.function
    def convert(event, context):
        return None

    app.state_machine("flow", {"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})
    app.rule(
        {"source": ["aws.s3"], "detail": {"bucket": {"name": ["landing"]}}}, target="states:flow"
    )
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    bus = Bus(app.rules)
    envelope = _object("a.grib", event_id="x" * 90)  # too long for an execution name as it is
    for _ in range(2):  # the second is a redelivery after a crash: nothing new
        with ledger.begin() as conn:
            delivered = deliver(
                ledger,
                conn,
                bus.deliveries([envelope]),
                functions=app.functions,
                state_machines=app.state_machines,
                invocation_source="object",
            )
    assert delivered.invocations == 0 and delivered.executions == []
    (row,) = ledger.list_invocations(function="convert")
    assert row["source"] == "object" and json.loads(row["payload"])["Records"]
    name = name_for("event-", "x" * 90)
    assert len(name) <= 80
    with ledger.reader.connect() as conn:
        assert find(conn, name) is not None
    ledger.close()


def test_an_object_created_rule_starts_an_execution_and_its_bucket_is_watched(tmp_path):
    running = Running(tmp_path)
    try:
        assert "drop" in running.app.buckets
        (running.buckets / "drop").mkdir(parents=True, exist_ok=True)
        (running.buckets / "drop" / "report.json").write_text("{}")
        deadline = time.time() + 30
        while time.time() < deadline:
            with running.ledger.reader.connect() as conn:
                rows = [r for r in _executions(conn) if r["state_machine"] == "on_object"]
            if rows and rows[0]["status"] == "SUCCEEDED":
                break
            time.sleep(0.05)
        (row,) = rows
        assert row["status"] == "SUCCEEDED"
        assert json.loads(row["output"]) == {"bucket": "drop", "key": "report.json"}
        with running.ledger.reader.connect() as conn:
            recorded = conn.execute(select(events.c.source, events.c.subject, events.c.routed))
            assert ("aws.s3", "drop/report.json", 1) in [tuple(r) for r in recorded]
    finally:
        running.stop()


def _executions(conn):
    return list_executions(conn)


def test_a_rule_on_s3_events_must_name_its_buckets_exactly():
    import pytest

    from headrace.errors import PatternError

    app = App()
    for detail in ({"bucket": {"name": [{"prefix": "pre"}]}}, {"object": {"key": ["a"]}}, None):
        pattern = {"source": ["aws.s3"], "detail-type": ["Object Created"]}
        if detail is not None:
            pattern["detail"] = detail
        with pytest.raises(PatternError, match="does not name its buckets exactly"):
            app.rule(pattern, target="stream:s")
