"""Bus envelopes: events shaped the way Amazon EventBridge delivers them.

    {"version": "0", "id": "6a7e8feb-...", "detail-type": "Object Created", "source": "my.app",
     "account": "000000000000", "time": "2017-12-22T18:43:48Z", "region": "local",
     "resources": [], "detail": {...}}

Rules written for EventBridge (see `headrace.events.patterns`) and handlers that read
`event["detail"]` work on them unchanged. Limits are EventBridge's PutEvents limits: source 1-256
characters, detail-type 1-128, each resource at most 2048, and an entry of at most 256 KiB counted
the AWS way (14 bytes for the time plus the UTF-8 bytes of source, detail-type, the detail's JSON
and the resources).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from headrace.errors import MalformedEvent

__all__ = [
    "DEFAULT_ACCOUNT",
    "DEFAULT_REGION",
    "MAX_ENTRY_BYTES",
    "PRECISE_TIME",
    "envelope_from_put_events_entry",
    "envelope_size",
    "make_envelope",
    "validate_envelope",
    "without_precise_time",
]

DEFAULT_ACCOUNT = "000000000000"
DEFAULT_REGION = "local"
MAX_ENTRY_BYTES = 256 * 1024
MAX_SOURCE_CHARS = 256
MAX_DETAIL_TYPE_CHARS = 128
MAX_RESOURCE_CHARS = 2048
_TIME_BYTES = 14  # how PutEvents counts the Time field, whatever its text

_SUBJECT = "event envelope"

# Envelopes carry their sub-second event time under this key on the way to a stream (the
# EventBridge `time` has whole seconds); it is dropped before delivery anywhere else.
PRECISE_TIME = "_time"


def without_precise_time(envelope: Mapping[str, Any]) -> dict[str, Any]:
    """The envelope as EventBridge has it: without the sub-second time carried for streams."""
    return {k: v for k, v in envelope.items() if k != PRECISE_TIME}


def make_envelope(
    source: str,
    detail_type: str,
    detail: dict[str, Any],
    *,
    time: datetime | str | None = None,
    id: str | None = None,
    resources: list[str] | None = None,
    account: str = DEFAULT_ACCOUNT,
    region: str = DEFAULT_REGION,
) -> dict[str, Any]:
    """A validated bus envelope. `time` defaults to now and `id` to a new UUID4."""
    envelope = {
        "version": "0",
        "id": str(uuid.uuid4()) if id is None else id,
        "detail-type": detail_type,
        "source": source,
        "account": account,
        "time": _format_time(time),
        "region": region,
        "resources": [] if resources is None else resources,
        "detail": detail,
    }
    _check(envelope)
    envelope["resources"] = list(envelope["resources"])
    return envelope


def validate_envelope(event: Any) -> dict[str, Any]:
    """Check a bus event and return it complete: a new dict with `version`, `id`, `time`,
    `account`, `region` and `resources` filled in where missing and `time` normalised to UTC
    seconds with 'Z'. `source`, `detail-type` and `detail` are required. Raises MalformedEvent.
    """
    if not isinstance(event, Mapping):
        raise MalformedEvent(
            _SUBJECT,
            f"must be a JSON object, got {_describe(event)}",
            "build it with make_envelope(source, detail_type, detail)",
        )
    missing = [key for key in ("source", "detail-type", "detail") if key not in event]
    if missing:
        hint = _misspelling_hint(event)
        raise MalformedEvent(
            _SUBJECT,
            f"has no {', '.join(repr(k) for k in missing)}",
            "every bus event needs 'source', 'detail-type' and 'detail' (a JSON object)" + hint,
        )
    envelope = {
        "version": event.get("version", "0"),
        "id": event.get("id") or str(uuid.uuid4()),
        "detail-type": event["detail-type"],
        "source": event["source"],
        "account": event.get("account", DEFAULT_ACCOUNT),
        "time": _format_time(event.get("time")),
        "region": event.get("region", DEFAULT_REGION),
        "resources": event.get("resources", []),
        "detail": event["detail"],
    }
    for key, value in event.items():  # keep extra keys (e.g. "replay-name") as they are
        envelope.setdefault(key, value)
    _check(envelope)
    envelope["resources"] = list(envelope["resources"])
    return envelope


def envelope_from_put_events_entry(
    entry: Mapping[str, Any],
    *,
    account: str = DEFAULT_ACCOUNT,
    region: str = DEFAULT_REGION,
) -> dict[str, Any]:
    """The envelope for one PutEvents entry (`Source`, `DetailType`, `Detail` as JSON text or a
    dict, optional `Resources` and `Time`), as EventBridge builds it when the entry arrives."""
    if not isinstance(entry, Mapping):
        raise MalformedEvent(
            "PutEvents entry", f"must be an object, got {_describe(entry)}", "send an object"
        )
    missing = [key for key in ("Source", "DetailType", "Detail") if key not in entry]
    if missing:
        raise MalformedEvent(
            "PutEvents entry",
            f"has no {', '.join(repr(k) for k in missing)}",
            "EventBridge requires Source, DetailType and Detail in every entry",
        )
    detail = entry["Detail"]
    if isinstance(detail, str | bytes):
        try:
            detail = json.loads(detail)
        except (ValueError, RecursionError) as exc:
            raise MalformedEvent(
                "PutEvents entry Detail",
                f"is not valid JSON ({exc})",
                "send Detail as the JSON text of an object, e.g. json.dumps({...})",
            ) from None
    return make_envelope(
        entry["Source"],
        entry["DetailType"],
        detail,
        time=entry.get("Time"),
        resources=entry.get("Resources"),
        account=account,
        region=region,
    )


def envelope_size(envelope: Mapping[str, Any]) -> int:
    """The size EventBridge's PutEvents counts against its 256 KiB limit for this event."""
    return _entry_size(envelope, _detail_json(envelope["detail"]))


# --------------------------------------------------------------------------- checks


def _check(envelope: dict[str, Any]) -> None:
    _check_text("source", envelope["source"], MAX_SOURCE_CHARS, "e.g. 'my.app.orders'")
    _check_text(
        "detail-type", envelope["detail-type"], MAX_DETAIL_TYPE_CHARS, "e.g. 'Order Placed'"
    )
    for key in ("version", "id", "account", "region"):
        value = envelope[key]
        if not isinstance(value, str) or not value:
            raise MalformedEvent(
                f"{_SUBJECT} field '{key}'",
                f"must be a non-empty string, got {_describe(value)}",
                f"leave '{key}' out to get the default, or give a string",
            )
    resources = envelope["resources"]
    if not isinstance(resources, list | tuple):
        raise MalformedEvent(
            f"{_SUBJECT} field 'resources'",
            f"must be a list of strings (ARNs or names), got {_describe(resources)}",
            "pass resources=['arn:...'] or leave it out",
        )
    for i, resource in enumerate(resources):
        if not isinstance(resource, str) or len(resource) > MAX_RESOURCE_CHARS:
            raise MalformedEvent(
                f"{_SUBJECT} field 'resources[{i}]'",
                f"must be a string of at most {MAX_RESOURCE_CHARS} characters, "
                f"got {_describe(resource)}",
                "name each resource by a short string such as an ARN or an object key",
            )
    detail = envelope["detail"]
    if not isinstance(detail, dict):
        raise MalformedEvent(
            f"{_SUBJECT} field 'detail'",
            f"must be a JSON object, got {_describe(detail)}",
            'wrap the payload in an object, e.g. {"value": ...}',
        )
    size = _entry_size(envelope, _detail_json(detail))
    if size > MAX_ENTRY_BYTES:
        raise MalformedEvent(
            _SUBJECT,
            f"is {size} bytes, over EventBridge's PutEvents limit of {MAX_ENTRY_BYTES} bytes "
            "(256 KiB)",
            "store the payload as an object and put its bucket and key in 'detail'",
        )


def _check_text(key: str, value: Any, limit: int, example: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise MalformedEvent(
            f"{_SUBJECT} field '{key}'",
            f"must be a non-empty string, got {_describe(value)}",
            f"give a short name, {example}",
        )
    if len(value) > limit:
        raise MalformedEvent(
            f"{_SUBJECT} field '{key}'",
            f"is {len(value)} characters long; EventBridge allows at most {limit}",
            f"shorten it, {example}",
        )


def _detail_json(detail: Any) -> str:
    try:
        return json.dumps(detail, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise MalformedEvent(
            f"{_SUBJECT} field 'detail'",
            f"is not JSON-serialisable ({exc})",
            "use only dicts, lists, strings, finite numbers, booleans and None "
            "(datetimes as .isoformat() strings)",
        ) from None


def _entry_size(envelope: Mapping[str, Any], detail_json: str) -> int:
    size = _TIME_BYTES + len(detail_json.encode())
    size += len(envelope["source"].encode()) + len(envelope["detail-type"].encode())
    size += sum(len(r.encode()) for r in envelope["resources"])
    return size


# --------------------------------------------------------------------------- time


def _format_time(value: datetime | str | None) -> str:
    """ISO 8601 in UTC at whole seconds with 'Z', as EventBridge writes `time`."""
    if value is None:
        moment = datetime.now(UTC)
    elif isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise MalformedEvent(
                f"{_SUBJECT} field 'time'",
                f"{value!r} is not an ISO 8601 timestamp",
                "write it like '2024-05-01T12:00:00Z'",
            ) from None
    else:
        raise MalformedEvent(
            f"{_SUBJECT} field 'time'",
            f"must be a datetime or an ISO 8601 string, got {_describe(value)}",
            "pass a timezone-aware datetime or a string like '2024-05-01T12:00:00Z'",
        )
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise MalformedEvent(
            f"{_SUBJECT} field 'time'",
            f"{moment.isoformat()} has no timezone, so the moment it names is ambiguous",
            "use an aware datetime such as datetime.now(UTC), or end the string with 'Z'",
        )
    utc = moment.astimezone(UTC)
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}"
        f"T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}Z"
    )


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "an empty string" if not value else f"the string {value[:40]!r}"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def _misspelling_hint(event: Mapping[str, Any]) -> str:
    for wrong, right in (
        ("detail_type", "detail-type"),
        ("detailType", "detail-type"),
        ("DetailType", "detail-type"),
        ("Source", "source"),
        ("Detail", "detail"),
    ):
        if wrong in event:
            return (
                f"; found {wrong!r}: the envelope key is {right!r} "
                "(a PutEvents entry goes through envelope_from_put_events_entry)"
            )
    return ""
