"""A source that polls an HTTP JSON API and returns each response's records as an Arrow table.

Each `poll()` makes one request (httpx) and returns the list found at the dotted `records` path
of the JSON body. It does not deduplicate: APIs that return "the latest N" overlap between polls,
and the pipeline's dedup operator removes the repeats.

Failures never raise out of `poll()`. A network error, a 5xx or another error status, and a body
that is not JSON or has no list at the path are recorded (kind, status, URL, message, time) and
start exponential backoff with full jitter capped at `max_backoff`; a 429 waits at least its
Retry-After. While backing off, `poll()` returns None without a request, so a runner that polls
too early cannot hammer a struggling server. A success resets the backoff.

Records that cannot join the table (a value that does not fit the schema, or without a schema a
value of another kind than the field's earlier values) are set aside with the reason: counted in
`stats["rejected"]`, recorded as a failure, and handed to the coordinator by `take_rejected()`,
which writes them to the source's error stream. Without a schema the table has the union of all
records' fields, so a field that only a later record has is kept.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Mapping
from typing import Any

import httpx
import pyarrow as pa

from headrace.errors import StreamError
from headrace.streams.sources import (
    Backoff,
    RecordsDoNotFit,
    Rejected,
    SourceHealth,
    new_stats,
    parse_retry_after,
    records_to_table,
)

_BODY_SNIPPET = 200
#: Rejected records kept for the coordinator between two polls (it takes them after each).
REJECTED_KEPT = 10_000


class HttpPoller:
    """Polls `url` every `interval` seconds; see the module docstring for failure handling.

    `records` is a dotted path into the JSON body ("txs", "data.items", "results.0.rows";
    "" when the body itself is the array). With `schema`, records are cast to it and those that
    do not fit are left out and reported as a failure naming the record and field.
    `backoff_base` (default: `interval`) is the largest first backoff delay.
    """

    def __init__(
        self,
        name: str,
        url: str,
        *,
        interval: float = 1.0,
        method: str = "GET",
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        records: str = "txs",
        timeout: float = 10.0,
        max_backoff: float = 60.0,
        schema: pa.Schema | None = None,
        client: httpx.Client | None = None,
        backoff_base: float | None = None,
    ) -> None:
        subject = f"HTTP source '{name}'"
        if interval <= 0:
            raise StreamError(subject, f"interval must be > 0 seconds, got {interval!r}")
        if max_backoff <= 0:
            raise StreamError(subject, f"max_backoff must be > 0 seconds, got {max_backoff!r}")
        if schema is not None and not isinstance(schema, pa.Schema):
            raise StreamError(
                subject,
                f"schema must be a pyarrow.Schema, got {type(schema).__name__}",
                "build it with pa.schema([...]) or leave it out to infer types",
            )
        try:
            parsed = httpx.URL(url)
            # the URL as requested: httpx merges params into the URL's own query string
            display_url = str(parsed.copy_merge_params(params) if params else parsed)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise StreamError(subject, f"url {url!r} is not a valid URL ({exc})") from None
        self.name = name
        self.url = url
        self.interval = float(interval)
        self.method = method.upper()
        self.params = dict(params) if params else None
        self.headers = dict(headers) if headers else None
        self.body = body
        self.records_path = records
        self._path = [part for part in records.split(".") if part] if records else []
        self.timeout = float(timeout)
        self.max_backoff = float(max_backoff)
        self.schema = schema
        self._display_url = display_url
        self._owns_client = client is None
        self._client = client or httpx.Client(timeout=self.timeout, follow_redirects=True)
        backoff = Backoff(
            base=backoff_base if backoff_base is not None else self.interval,
            cap=self.max_backoff,
            floor=min(self.interval, self.max_backoff),
        )
        self.stats: dict[str, Any] = new_stats(rejected=0)
        self._health = SourceHealth(self.stats, backoff, self.interval)
        self._rejected: collections.deque[Rejected] = collections.deque(maxlen=REJECTED_KEPT)

    # ---------------------------------------------------------------- Source protocol

    @property
    def next_poll_at(self) -> float:
        return self._health.next_poll_at

    @property
    def failures(self) -> list[dict[str, Any]]:
        """The last 100 failures, oldest first: at, kind, error, status, url, retry_in."""
        return list(self._health.failures)

    def poll(self) -> pa.Table | None:
        if self._health.begin_poll() is None:
            return None
        if self._owns_client and self._client.is_closed:
            # closed by a coordinator that stopped; the app (and this source) outlives it when
            # another coordinator starts in the same process
            self._client = httpx.Client(timeout=self.timeout, follow_redirects=True)
        try:
            response = self._client.request(
                self.method,
                self.url,
                params=self.params,
                headers=self.headers,
                timeout=self.timeout,
                **self._body_kwargs(),
            )
        except httpx.HTTPError as exc:
            detail = str(exc) or "no detail"
            self._failed("network", f"{self._request_line()}: {type(exc).__name__}: {detail}")
            return None

        status = response.status_code
        if status >= 400:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            kind = "rate_limited" if status == 429 else "http"
            error = f"{self._request_line()} returned {status} {response.reason_phrase}"
            snippet = response.text[:_BODY_SNIPPET].strip()
            if snippet:
                error += f": {snippet}"
            if retry_after is not None:
                error += f" (Retry-After {response.headers['Retry-After']})"
            self._failed(kind, error, status=status, retry_after=retry_after)
            return None
        if status == 204 or not response.content:
            self._health.succeeded()
            return None

        try:
            payload = json.loads(response.content)
        except ValueError as exc:
            snippet = response.content[:_BODY_SNIPPET].decode("utf-8", "replace")
            self._failed(
                "malformed",
                f"{self._request_line()}: the body is not JSON ({exc}); it starts {snippet!r}",
                status=status,
            )
            return None
        records, problem = self._find_records(payload)
        if problem is not None:
            self._failed("malformed", f"{self._request_line()}: {problem}", status=status)
            return None
        self._health.succeeded()
        if not records:
            return None
        try:
            table, rejected = records_to_table(records, self.schema)
        except RecordsDoNotFit as exc:
            table = None
            reason = f"{len(records)} records do not fit together: {exc}"
            rejected = [Rejected(i, r, reason) for i, r in enumerate(records)]
        if rejected:
            self.stats["rejected"] += len(rejected)
            self._rejected.extend(rejected)
            against = "the schema" if self.schema is not None else "the other records"
            self._health.failed(
                "schema" if self.schema is not None else "records",
                f"{self._request_line()}: {len(rejected)} of {len(records)} records do not fit "
                f"{against} and were set aside; first: {rejected[0].reason}",
                status=status,
                url=self._display_url,
                rejected=[r.reason for r in rejected[:10]],
            )
        if table is None or table.num_rows == 0:
            return None
        self.stats["records"] += table.num_rows
        return table

    def take_rejected(self) -> list[Rejected]:
        """The records polled but left out of a table since the last call, with the reason;
        the coordinator writes them to the source's error stream."""
        taken = list(self._rejected)
        self._rejected.clear()
        return taken

    def state(self) -> dict[str, Any]:
        """Failure counters and any backoff in force; an HTTP API has no position to resume."""
        return {**self._health.state(), **self._health.backoff_state()}

    def restore(self, state: Mapping[str, Any]) -> None:
        self._health.restore(state)
        self._health.restore_backoff(state)

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> HttpPoller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HttpPoller({self.name!r}, {self._display_url!r}, interval={self.interval})"

    # ---------------------------------------------------------------- internals

    def _body_kwargs(self) -> dict[str, Any]:
        if self.body is None:
            return {}
        if isinstance(self.body, (bytes, bytearray, str)):
            return {"content": self.body}
        return {"json": self.body}

    def _request_line(self) -> str:
        return f"{self.method} {self._display_url}"

    def _find_records(self, payload: Any) -> tuple[list[Any], str | None]:
        node = payload
        for depth, part in enumerate(self._path):
            where = ".".join(self._path[:depth]) or "the top level"
            if isinstance(node, Mapping):
                if part not in node:
                    keys = ", ".join(sorted(map(str, node))[:20]) or "none"
                    return [], (
                        f"records path '{self.records_path}' not found: no key '{part}' at "
                        f"{where} (keys there: {keys})"
                    )
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return [], (
                    f"records path '{self.records_path}' not found: {where} is "
                    f"{type(node).__name__}, not an object with key '{part}'"
                )
        if not isinstance(node, list):
            shown = f"'{self.records_path}'" if self._path else "the body"
            return [], f"{shown} is {type(node).__name__}, not a list of records"
        return node, None

    def _failed(
        self,
        kind: str,
        error: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        delay = self._health.back_off(retry_after)
        self._health.failed(
            kind, error, status=status, url=self._display_url, retry_in=round(delay, 3)
        )
