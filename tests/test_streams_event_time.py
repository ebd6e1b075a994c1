"""Event time at full precision on every path into a stream.

`_event_time` is a microsecond UTC timestamp made from a source's `time_field`, whatever form
the field takes (epoch seconds as a number or text, ISO 8601 with 'Z', an offset or none, any
number of fractional digits, a nanosecond Arrow column); `_ingest_time` is stamped to the
microsecond by the log. The bus path is run for real — a source polled by the coordinator's
stream service, its records routed by a rule into a stream — on every log backend (embedded,
Redis, NATS JetStream).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from headrace import App
from headrace.config import load_settings
from headrace.errors import MalformedEvent
from headrace.ledger import Ledger
from headrace.server.metrics import Metrics
from headrace.server.streams import StreamService
from headrace.storage import ObjectStore
from headrace.streams import HttpPoller, ObjectSource
from headrace.streams.event_time import parse_event_time
from headrace.streams.log import stamp_ingest_time
from headrace.streams.simulator import Simulator

EXACT = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
EXACT_US = 1714564800123456


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T12:00:00.123456Z", EXACT),
        ("2024-05-01T12:00:00.123456789Z", EXACT),  # digits below the µs are cut
        ("2024-05-01T12:00:00.1234569Z", EXACT),  # cut, not rounded up
        ("2024-05-01T14:00:00.123456789+02:00", EXACT),
        ("2024-05-01T07:30:00.123456-04:30", EXACT),
        ("2024-05-01T12:00:00.123456", EXACT),  # no offset: UTC
        ("2024-05-01 12:00:00.123456+00:00", EXACT),
        ("20240501T120000.123456Z", EXACT),
        ("2024-05-01T12:00:00.5Z", EXACT.replace(microsecond=500000)),
        (1714564800, EXACT.replace(microsecond=0)),
        (1714564800.123456, EXACT),
        ("1714564800.123456789", EXACT),
        (" 1714564800.123456 ", EXACT),
        (Decimal("1714564800.1234569"), EXACT),
        (-0.5, datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC)),
        ("-0.0000001", datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),  # floor
        (datetime(2024, 5, 1, 12, 0, 0, 123456), EXACT),
        (datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2))), EXACT),
        (None, None),
    ],
)
def test_every_documented_form_gives_the_exact_microsecond(value, expected):
    got = parse_event_time(value)
    assert got == expected
    if got is not None:
        assert got.tzinfo == UTC


def test_a_pandas_timestamp_keeps_its_microseconds():
    pd = pytest.importorskip("pandas")
    moment = pd.Timestamp("2024-05-01T12:00:00.123456789Z")
    assert parse_event_time(moment) == EXACT
    assert type(parse_event_time(moment)) is datetime


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (True, "is a boolean"),
        ("yesterday", "neither epoch seconds nor ISO 8601"),
        ("2024-13-01T00:00:00Z", "neither epoch seconds nor ISO 8601"),
        (float("nan"), "not a finite number"),
        (1714564800123, "out of the range of dates"),  # milliseconds are not epoch seconds
        ("1e20", "out of the range of dates"),
        ({"at": 1}, "is a dict"),
    ],
)
def test_a_value_that_is_no_time_is_a_clear_error(value, reason):
    with pytest.raises(MalformedEvent, match=reason) as caught:
        parse_event_time(value, "when")
    assert "'when'" in str(caught.value) and "ISO 8601" in caught.value.fix


def test_the_log_stamps_ingest_time_to_the_microsecond():
    now = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    table = stamp_ingest_time(pa.table({"x": [1, 2]}), now)
    column = table.column("_ingest_time")
    assert column.type == pa.timestamp("us", tz="UTC")
    assert column.cast(pa.int64()).to_pylist() == [EXACT_US, EXACT_US]


# -- the bus path, on every log backend --------------------------------------------------------


def _service(tmp_path, url, app):
    settings = load_settings(tmp_path, home=str(tmp_path / "home"), streams=url)
    ledger = Ledger(settings.ledger_url)
    service = StreamService(
        settings, app, ledger, ObjectStore(settings.storage_url), Metrics().streams, lambda f: None
    )
    service.open()
    return service, ledger


def _micros(table: pa.Table, column: str) -> list[int]:
    return table.column(column).cast(pa.int64()).to_pylist()


def test_files_of_every_format_reach_the_stream_with_exact_event_times(tmp_path, open_stream):
    """JSONL text times, CSV read by Arrow as nanoseconds, Parquet nanoseconds: the records
    arrive through a rule in a stream with `_event_time` exact to the microsecond, and the
    event's own detail keeps the nanoseconds it was given."""
    stream = open_stream()
    folder = tmp_path / "drop"
    folder.mkdir()
    texts = [
        "2024-05-01T12:00:00.123456789Z",
        "2024-05-01T14:00:00.123456+02:00",
        "2024-05-01T12:00:00.123456",
    ]
    (folder / "a.jsonl").write_text(
        "".join(json.dumps({"id": f"j{i}", "at": t}) + "\n" for i, t in enumerate(texts))
    )
    (folder / "b.csv").write_text("id,at\nc0,2024-05-01T12:00:00.123456789Z\n")
    nanos = EXACT_US * 1000 + 789
    pq.write_table(
        pa.table({"id": ["p0"], "at": pa.array([nanos], pa.timestamp("ns", tz="UTC"))}),
        folder / "c.parquet",
    )
    app = App()
    spec = app.source(
        ObjectSource("drop", str(folder), settle_seconds=0),
        event_source="files",
        detail_type="Row",
        time_field="at",
        id_field="id",
    )
    app.stream(stream.name)
    app.rule({"source": ["files"]}, target=f"stream:{stream.name}")
    service, ledger = _service(tmp_path, open_stream.url, app)
    try:
        # objects whose columns clash (text times, timestamp times) come in separate polls
        assert sum(service.poll_source(spec) for _ in range(3)) == 5
        table = stream.read(0, 0, 10)
    finally:
        service.stop()
        ledger.close()
    assert table.schema.field("_event_time").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("_ingest_time").type == pa.timestamp("us", tz="UTC")
    times = dict(zip(table.column("id").to_pylist(), _micros(table, "_event_time"), strict=True))
    assert times == {key: EXACT_US for key in ("j0", "j1", "j2", "c0", "p0")}
    details = dict(zip(table.column("id").to_pylist(), table.column("at").to_pylist(), strict=True))
    assert details["p0"] == "2024-05-01T12:00:00.123456789+00:00"
    assert details["c0"] == "2024-05-01T12:00:00.123456789+00:00"


def test_epoch_seconds_from_an_http_source_keep_their_microseconds(tmp_path, open_stream):
    """Blockchain-style epoch numbers (and numeric text); a time that is no time goes to the
    source's error stream with the reason, the records beside it are delivered."""
    stream = open_stream()
    errors = open_stream(f"{stream.name}x-errors")
    records = [
        {"hash": "a", "time": 1714564800.123456},
        {"hash": "b", "time": 1714564800},
        {"hash": "c", "time": 1714564801.000001},
        {"hash": "d", "time": 1714564800123},  # milliseconds: not epoch seconds
    ]
    with Simulator(rate_per_s=1, seed=3) as simulator:
        simulator.serve_next(records)
        app = App()
        spec = app.source(
            HttpPoller(f"{stream.name}x", simulator.url),
            event_source="chain",
            detail_type="Transaction",
            time_field="time",
            id_field="hash",
        )
        app.stream(stream.name)
        app.rule({"source": ["chain"]}, target=f"stream:{stream.name}")
        service, ledger = _service(tmp_path, open_stream.url, app)
        try:
            assert service.poll_source(spec) == 4
            table = stream.read(0, 0, 10)
            refused = errors.read(0, 0, 10)
        finally:
            service.stop()
            ledger.close()
    # a poll's records are published in event-time order (b is the earliest)
    assert table.column("hash").to_pylist() == ["b", "a", "c"]
    assert _micros(table, "_event_time") == [EXACT_US - 123456, EXACT_US, EXACT_US + 876545]
    assert refused.num_rows == 1
    assert "out of the range of dates" in refused.column("reason")[0].as_py()
    assert json.loads(refused.column("record")[0].as_py())["hash"] == "d"


OVERFLOWING = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-02:00", "1e999999"]


@pytest.mark.parametrize("value", OVERFLOWING)
def test_a_time_that_overflows_in_conversion_is_a_malformed_event(value):
    with pytest.raises(MalformedEvent, match="out of the range of dates"):
        parse_event_time(value, "at")


def test_overflowing_times_cost_only_their_records_on_file_and_http_sources(tmp_path, open_stream):
    """Times at the edge of the calendar that overflow once converted (an offset at year 1 or
    9999, numeric text past any date) go to the error stream; the valid records beside them,
    in the same object or the same response, reach the stream."""
    stream = open_stream()
    file_errors = open_stream(f"{stream.name}f-errors")
    web_errors = open_stream(f"{stream.name}w-errors")
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "a.jsonl").write_text(
        "".join(
            json.dumps({"id": f"f{i}", "at": at}) + "\n"
            for i, at in enumerate(["2024-05-01T12:00:00Z", *OVERFLOWING])
        )
    )
    # only ISO text: Arrow reads the column as timestamps, one of them before year 1 in UTC
    (folder / "b.jsonl").write_text(
        json.dumps({"id": "t0", "at": "2024-05-01T12:00:00Z"})
        + "\n"
        + json.dumps({"id": "t1", "at": OVERFLOWING[0]})
        + "\n"
    )
    with Simulator(rate_per_s=1, seed=3) as simulator:
        simulator.serve_next(
            [
                {"hash": f"h{i}", "time": t}
                for i, t in enumerate(["2024-05-01T12:00:00Z", *OVERFLOWING])
            ]
        )
        app = App()
        files = app.source(
            ObjectSource(f"{stream.name}f", str(folder), settle_seconds=0),
            event_source="files",
            detail_type="Row",
            time_field="at",
            id_field="id",
        )
        web = app.source(
            HttpPoller(f"{stream.name}w", simulator.url),
            event_source="chain",
            detail_type="Transaction",
            time_field="time",
            id_field="hash",
        )
        app.stream(stream.name)
        app.rule({"source": ["files", "chain"]}, target=f"stream:{stream.name}")
        service, ledger = _service(tmp_path, open_stream.url, app)
        try:
            assert service.poll_source(files) + service.poll_source(files) == 6
            assert service.poll_source(web) == 4
            table = stream.read(0, 0, 10)
            refused = [log.read(0, 0, 10) for log in (file_errors, web_errors)]
        finally:
            service.stop()
            ledger.close()
    assert sorted(table.column("_event_id").to_pylist()) == ["f0", "h0", "t0"]
    for errors, field in zip(refused, ("id", "hash"), strict=True):
        reasons = errors.column("reason").to_pylist()
        assert all("range of dates" in r or "years 1 to 9999" in r for r in reasons)
        ids = sorted(json.loads(r)[field] for r in errors.column("record").to_pylist())
        assert ids == (["f1", "f2", "f3", "t1"] if field == "id" else ["h1", "h2", "h3"])
