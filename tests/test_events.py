from urllib.parse import unquote_plus

import pytest

from headrace.errors import MalformedEvent
from headrace.events import object_created_event, parse_s3_event


def test_record_has_the_lambda_shape():
    event = object_created_event(
        bucket="landing",
        key="2024/01/a file+x.grib2",
        size=10,
        etag="abc",
        sequencer="0000018C",
        event_time=1700000000.25,
    )
    rec = event["Records"][0]
    assert rec["eventSource"] == "aws:s3" and rec["eventName"] == "ObjectCreated:Put"
    assert rec["eventTime"] == "2023-11-14T22:13:20.250Z"
    assert rec["s3"]["bucket"]["name"] == "landing"
    assert rec["s3"]["bucket"]["arn"] == "arn:aws:s3:::landing"
    obj = rec["s3"]["object"]
    # S3 URL-encodes the key: spaces as '+', a literal '+' as %2B, slashes kept
    assert obj["key"] == "2024/01/a+file%2Bx.grib2"
    assert unquote_plus(obj["key"]) == "2024/01/a file+x.grib2"
    assert (obj["size"], obj["eTag"], obj["sequencer"]) == (10, "abc", "0000018C")


def test_parse_roundtrip():
    event = object_created_event(
        bucket="b12", key="k é.txt", size=1, etag="e", sequencer="1", event_time=0
    )
    (obj,) = parse_s3_event(event)
    assert (obj.bucket, obj.key, obj.size) == ("b12", "k é.txt", 1)


@pytest.mark.parametrize(
    "event, words",
    [
        ({"bogus": 1}, ["not an S3 notification", "bogus"]),
        ([], ["not an S3 notification", "list"]),
        ({"Records": [{"s3": {"bucket": {}}}]}, ["Records[0]", "name"]),
        ({"Records": [{"s3": {"bucket": {"name": "b"}, "object": {"key": ""}}}]}, ["non-empty"]),
    ],
)
def test_malformed_events_are_clear(event, words):
    with pytest.raises(MalformedEvent) as info:
        parse_s3_event(event)
    for word in words:
        assert word in str(info.value)
    assert "fix:" in str(info.value)
