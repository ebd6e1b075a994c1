"""Sample events for `headrace generate-event`, as `sam local generate-event` writes them."""

from __future__ import annotations

import hashlib
import time
from typing import Any
from urllib.parse import urlsplit

from headrace.events.s3 import object_created_event
from headrace.serving.apigateway import Request, http_api_event, rest_event


def apigateway_event(
    *,
    method: str = "POST",
    path: str = "/",
    body: bytes = b"",
    content_type: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    resource: str | None = None,
    params: dict[str, str] | None = None,
    http_api: bool = False,
) -> dict[str, Any]:
    """A REST API proxy event (or an HTTP API 2.0 one) for a request to `path` (which may
    carry a query string). A body whose content type is not text is base64-encoded."""
    parts = urlsplit(path)
    all_headers = [("Host", "localhost"), *(headers or [])]
    if content_type:
        all_headers.append(("Content-Type", content_type))
    request = Request(
        method=method.upper(),
        path=parts.path or "/",
        query=parts.query,
        headers=all_headers,
        body=body,
        route_key=f"{method.upper()} {resource or parts.path or '/'}",
        resource=resource or parts.path or "/",
        params=dict(params or {}),
    )
    return http_api_event(request) if http_api else rest_event(request)


def s3_put_event(bucket: str, key: str, body: bytes = b"") -> dict[str, Any]:
    """An S3 ObjectCreated:Put notification for one object."""
    now = time.time()
    return object_created_event(
        bucket=bucket,
        key=key,
        size=len(body),
        etag=hashlib.md5(body, usedforsecurity=False).hexdigest(),
        sequencer=f"{int(now * 1e6):016X}",
        event_time=now,
    )
