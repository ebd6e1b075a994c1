"""A source's error stream: the records it polled but could not deliver, and why.

Every source gets a stream `SOURCE-errors` (declared with the app's streams, kept 30 days).
Each row is one record that was set aside: the source, the stage where it failed (`records`: it
does not fit the table; `envelope`: it cannot become a bus event, e.g. an empty id or over
256 KiB; `deliver`: its target refused it), the reason, the record as JSON text and when.
Read it with `headrace streams read SOURCE-errors`, or run a pipeline over it to repair and
republish.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

SUFFIX = "-errors"
RETENTION_SECONDS = 30 * 86400
SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("record", pa.large_string()),
        ("failed_at", pa.timestamp("us", tz="UTC")),
    ]
)
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_-]")


def error_stream_name(source: str) -> str:
    """`SOURCE-errors`, with characters a stream name cannot hold replaced by '_'."""
    return _NOT_IN_NAME.sub("_", source)[: 100 - len(SUFFIX)] + SUFFIX


def error_records(source: str, stage: str, items: Sequence[tuple[Any, str]]) -> pa.Table:
    """One row per (record, reason)."""
    now = datetime.now(UTC)
    return pa.Table.from_pydict(
        {
            "source": [source] * len(items),
            "stage": [stage] * len(items),
            "reason": [reason for _, reason in items],
            "record": [_as_json(record) for record, _ in items],
            "failed_at": [now] * len(items),
        },
        schema=SCHEMA,
    )


def _as_json(record: Any) -> str:
    try:
        return json.dumps(record, default=str, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return repr(record)
