"""S3 event notification records, as AWS sends them to Lambda.

A handler written for Lambda reads `event["Records"][0]["s3"]["object"]["key"]` and unquotes it
with `urllib.parse.unquote_plus`; the records here are built the same way so it runs unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from headrace.errors import MalformedEvent
from headrace.events.envelope import DEFAULT_ACCOUNT, PRECISE_TIME

REGION = "local"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{int(ts * 1000) % 1000:03d}Z"
    )


def object_created_event(
    *,
    bucket: str,
    key: str,
    size: int,
    etag: str,
    sequencer: str,
    event_time: float,
    version_id: str | None = None,
    event_name: str = "ObjectCreated:Put",
    request_id: str = "",
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        # S3 URL-encodes keys in notifications (spaces become '+')
        "key": quote_plus(key, safe="/"),
        "size": size,
        "eTag": etag,
        "sequencer": sequencer,
    }
    if version_id:
        obj["versionId"] = version_id
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": REGION,
                "eventTime": _iso(event_time),
                "eventName": event_name,
                "userIdentity": {"principalId": "headrace"},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {
                    "x-amz-request-id": request_id,
                    "x-amz-id-2": request_id,
                },
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "headrace",
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "headrace"},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": obj,
                },
            }
        ]
    }


@dataclass(frozen=True, slots=True)
class S3Object:
    bucket: str
    key: str  # decoded
    size: int | None
    etag: str | None
    event_name: str


def parse_s3_event(event: Any) -> list[S3Object]:
    """The objects named by an S3 notification event, keys decoded; a clear error otherwise."""
    if not isinstance(event, dict) or not isinstance(event.get("Records"), list):
        raise MalformedEvent(
            "event",
            f"is not an S3 notification: expected a 'Records' list, got {_describe(event)}",
            "send an S3 ObjectCreated event, or invoke the function with {'Records': [...]}",
        )
    out = []
    for i, record in enumerate(event["Records"]):
        try:
            s3 = record["s3"]
            bucket = s3["bucket"]["name"]
            key = unquote_plus(s3["object"]["key"])
        except (KeyError, TypeError) as exc:
            raise MalformedEvent(
                f"event Records[{i}]",
                f"has no s3.bucket.name / s3.object.key (missing {exc})",
                "send records shaped like S3 event notifications",
            ) from None
        if not isinstance(bucket, str) or not isinstance(key, str) or not key:
            raise MalformedEvent(
                f"event Records[{i}]", "bucket name and key must be non-empty strings", "fix them"
            )
        out.append(
            S3Object(
                bucket=bucket,
                key=key,
                size=s3["object"].get("size"),
                etag=s3["object"].get("eTag"),
                event_name=str(record.get("eventName", "")),
            )
        )
    return out


def parse_s3_object(event: Any) -> S3Object:
    """The one object an S3 notification names (S3 sends one record per event); MalformedEvent,
    which is not retried, if the event names none or several."""
    objects = parse_s3_event(event)
    if len(objects) != 1:
        raise MalformedEvent(
            "event",
            f"names {len(objects)} objects in its 'Records' list; this handler takes exactly one",
            "send one record with s3.bucket.name and s3.object.key, as S3 does, or loop over "
            "parse_s3_event(event) to take several",
        )
    return objects[0]


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        keys = ", ".join(list(map(str, value))[:5])
        return f"an object with keys [{keys}]"
    return type(value).__name__


# -- the same object-created event as a bus envelope ----------------------------------------

OBJECT_CREATED_SOURCE = "aws.s3"
OBJECT_CREATED_TYPE = "Object Created"


def object_created_envelope(
    *,
    event_id: str,
    bucket: str,
    key: str,
    size: int,
    etag: str,
    sequencer: str,
    event_time: float,
    version_id: str | None = None,
) -> dict[str, Any]:
    """The bus envelope of an object created, shaped like S3's EventBridge "Object Created".

    Object triggers are bus rules over these envelopes (one event path); a function behind an
    object trigger still receives the Lambda notification form (`notification_from_envelope`).
    The key is not URL-encoded here, as in S3's EventBridge events.
    """
    obj: dict[str, Any] = {"key": key, "size": size, "etag": etag, "sequencer": sequencer}
    if version_id:
        obj["version-id"] = version_id
    return {
        "version": "0",
        "id": event_id,
        "detail-type": OBJECT_CREATED_TYPE,
        "source": OBJECT_CREATED_SOURCE,
        "account": DEFAULT_ACCOUNT,
        "time": datetime.fromtimestamp(event_time, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": obj,
            "request-id": event_id,
            "requester": "headrace",
            "reason": "PutObject",
        },
        # the envelope's `time` has whole seconds; the notification's eventTime has ms
        PRECISE_TIME: datetime.fromtimestamp(event_time, UTC),
    }


def notification_from_envelope(envelope: dict[str, Any]) -> dict[str, Any]:
    """The S3 notification event a Lambda handler expects, for an "Object Created" envelope."""
    detail = envelope["detail"]
    obj = detail["object"]
    return object_created_event(
        bucket=detail["bucket"]["name"],
        key=obj["key"],
        size=obj["size"],
        etag=obj["etag"],
        sequencer=obj["sequencer"],
        event_time=envelope[PRECISE_TIME].timestamp(),
        version_id=obj.get("version-id"),
        request_id=detail["request-id"],
    )
