"""Bus envelopes: the EventBridge event shape, its time format, and PutEvents' limits."""

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from headrace.errors import MalformedEvent
from headrace.events import (
    envelope_from_put_events_entry,
    envelope_size,
    make_envelope,
    validate_envelope,
)
from headrace.events.envelope import MAX_ENTRY_BYTES

KEYS = [
    "version",
    "id",
    "detail-type",
    "source",
    "account",
    "time",
    "region",
    "resources",
    "detail",
]


def test_envelope_has_eventbridge_shape_and_defaults():
    before = datetime.now(UTC).replace(microsecond=0)
    event = make_envelope("my.orders", "Order Placed", {"order": 7})
    after = datetime.now(UTC)
    assert list(event) == KEYS  # the key order EventBridge delivers
    assert event["version"] == "0"
    assert uuid.UUID(event["id"]).version == 4
    assert (event["source"], event["detail-type"]) == ("my.orders", "Order Placed")
    assert (event["account"], event["region"]) == ("000000000000", "local")
    assert event["resources"] == [] and event["detail"] == {"order": 7}
    stamped = datetime.strptime(event["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= stamped <= after
    assert json.loads(json.dumps(event)) == event
    assert make_envelope("a", "b", {})["id"] != make_envelope("a", "b", {})["id"]


def test_explicit_fields_are_kept():
    event = make_envelope(
        "aws.s3",
        "Object Created",
        {"bucket": {"name": "landing"}},
        time="2017-12-22T18:43:48Z",
        id="6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        resources=("arn:aws:s3:::landing",),
        account="111122223333",
        region="us-west-1",
    )
    assert event == {
        "version": "0",
        "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": "111122223333",
        "time": "2017-12-22T18:43:48Z",
        "region": "us-west-1",
        "resources": ["arn:aws:s3:::landing"],
        "detail": {"bucket": {"name": "landing"}},
    }


@pytest.mark.parametrize(
    "given, expected",
    [
        (datetime(2024, 5, 1, 12, 0, 5, 999999, tzinfo=UTC), "2024-05-01T12:00:05Z"),
        (
            datetime(2024, 5, 1, 14, 0, 5, tzinfo=timezone(timedelta(hours=2))),
            "2024-05-01T12:00:05Z",
        ),
        ("2024-05-01T12:00:05.123Z", "2024-05-01T12:00:05Z"),
        ("2024-05-01T07:00:05-05:00", "2024-05-01T12:00:05Z"),
        ("2023-12-31T23:59:59+00:00", "2023-12-31T23:59:59Z"),
        (datetime(5, 1, 2, tzinfo=UTC), "0005-01-02T00:00:00Z"),
    ],
)
def test_time_is_utc_seconds_with_z(given, expected):
    assert make_envelope("s", "t", {}, time=given)["time"] == expected


@pytest.mark.parametrize(
    "time, fragment",
    [
        (datetime(2024, 5, 1, 12, 0), "has no timezone"),
        ("2024-05-01T12:00:00", "has no timezone"),
        ("yesterday", "is not an ISO 8601 timestamp"),
        (1714564800, "must be a datetime or an ISO 8601 string"),
    ],
)
def test_bad_times_are_refused(time, fragment):
    with pytest.raises(MalformedEvent, match=fragment) as info:
        make_envelope("s", "t", {}, time=time)
    assert "field 'time'" in str(info.value) and info.value.fix


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"source": ""}, "field 'source': must be a non-empty string"),
        ({"source": "   "}, "field 'source': must be a non-empty string"),
        ({"source": None}, "field 'source': must be a non-empty string, got null"),
        ({"source": "s" * 257}, "is 257 characters long; EventBridge allows at most 256"),
        ({"detail_type": ""}, "field 'detail-type': must be a non-empty string"),
        ({"detail_type": "t" * 129}, "is 129 characters long; EventBridge allows at most 128"),
        ({"detail": [1, 2]}, "field 'detail': must be a JSON object, got a list"),
        ({"detail": '{"a": 1}'}, "field 'detail': must be a JSON object, got the string"),
        ({"detail": {"when": datetime(2024, 1, 1)}}, "is not JSON-serialisable"),
        ({"detail": {"x": float("nan")}}, "is not JSON-serialisable"),
        ({"resources": "arn:x"}, "field 'resources': must be a list of strings"),
        ({"resources": ["ok", 5]}, "field 'resources[1]'"),
        ({"resources": ["r" * 2049]}, "at most 2048 characters"),
        ({"id": ""}, "field 'id': must be a non-empty string"),
        ({"account": 123}, "field 'account'"),
        ({"region": None}, "field 'region'"),
    ],
)
def test_invalid_envelopes_name_the_field_and_the_fix(kwargs, fragment):
    args = {"source": "my.app", "detail_type": "Thing Happened", "detail": {"a": 1}}
    args.update(kwargs)
    source, detail_type, detail = args.pop("source"), args.pop("detail_type"), args.pop("detail")
    with pytest.raises(MalformedEvent) as info:
        make_envelope(source, detail_type, detail, **args)
    assert fragment in str(info.value)
    assert str(info.value).startswith("event envelope") and info.value.fix


def test_size_limit_is_putevents_256_kib_counted_the_aws_way():
    source, detail_type = "my.app", "Blob"
    overhead = 14 + len(source) + len(detail_type) + len('{"b":""}')
    fits = make_envelope(source, detail_type, {"b": "x" * (MAX_ENTRY_BYTES - overhead)})
    assert envelope_size(fits) == MAX_ENTRY_BYTES == 262_144
    with pytest.raises(MalformedEvent, match="262145 bytes, over EventBridge's PutEvents limit"):
        make_envelope(source, detail_type, {"b": "x" * (MAX_ENTRY_BYTES - overhead + 1)})
    # non-ASCII counts in UTF-8 bytes, and resources count too
    with pytest.raises(MalformedEvent, match="over EventBridge's PutEvents limit"):
        make_envelope(source, detail_type, {"b": "é" * (MAX_ENTRY_BYTES // 2)})
    with pytest.raises(MalformedEvent, match="over EventBridge's PutEvents limit"):
        make_envelope(
            source,
            detail_type,
            {"b": "x" * (MAX_ENTRY_BYTES - overhead - 10)},
            resources=["r" * 11],
        )


def test_validate_fills_defaults_and_normalises_without_mutating():
    given = {
        "source": "my.app",
        "detail-type": "Thing Happened",
        "detail": {"n": 1},
        "time": "2024-05-01T14:00:05.5+02:00",
        "replay-name": "r1",
    }
    snapshot = json.loads(json.dumps(given))
    event = validate_envelope(given)
    assert given == snapshot
    assert list(event)[: len(KEYS)] == KEYS and event["replay-name"] == "r1"
    assert event["time"] == "2024-05-01T12:00:05Z"
    assert event["version"] == "0" and uuid.UUID(event["id"])
    assert (event["account"], event["region"], event["resources"]) == ("000000000000", "local", [])
    # a complete envelope passes through unchanged
    full = make_envelope("my.app", "Thing Happened", {"n": 1}, resources=["arn:r"])
    assert validate_envelope(full) == full


@pytest.mark.parametrize(
    "event, fragment",
    [
        ([1], "event envelope: must be a JSON object, got a list"),
        ({"detail-type": "t", "detail": {}}, "has no 'source'"),
        ({"source": "s", "detail": {}}, "has no 'detail-type'"),
        ({"source": "s"}, "has no 'detail-type', 'detail'"),
        ({"source": "s", "detail_type": "t", "detail": {}}, "found 'detail_type'"),
        ({"Source": "s", "DetailType": "t", "Detail": "{}"}, "envelope_from_put_events_entry"),
        ({"source": "s", "detail-type": "t", "detail": None}, "must be a JSON object, got null"),
        ({"source": "s", "detail-type": "t", "detail": {}, "resources": None}, "resources"),
        ({"source": 5, "detail-type": "t", "detail": {}}, "field 'source'"),
        ({"source": "s", "detail-type": "t", "detail": {}, "time": "soon"}, "ISO 8601"),
    ],
)
def test_validate_refuses_malformed_events(event, fragment):
    with pytest.raises(MalformedEvent) as info:
        validate_envelope(event)
    assert fragment in str(info.value) and info.value.fix


def test_put_events_entry_becomes_an_envelope():
    entry = {
        "Source": "my.app",
        "DetailType": "Order Placed",
        "Detail": json.dumps({"order": {"id": 7}}),
        "Resources": ["arn:order/7"],
        "Time": datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    }
    event = envelope_from_put_events_entry(entry, account="111122223333", region="eu-west-1")
    assert event["detail"] == {"order": {"id": 7}}
    assert event["resources"] == ["arn:order/7"]
    assert (event["time"], event["account"], event["region"]) == (
        "2024-05-01T12:00:00Z",
        "111122223333",
        "eu-west-1",
    )
    assert envelope_from_put_events_entry({**entry, "Detail": {"a": 1}})["detail"] == {"a": 1}
    with pytest.raises(MalformedEvent, match="Detail: is not valid JSON"):
        envelope_from_put_events_entry({**entry, "Detail": "{nope"})
    with pytest.raises(MalformedEvent, match="must be a JSON object, got a list"):
        envelope_from_put_events_entry({**entry, "Detail": "[1]"})
    with pytest.raises(MalformedEvent, match="has no 'DetailType'"):
        envelope_from_put_events_entry({"Source": "s", "Detail": "{}"})
