"""What a stream source is, and the parts every source shares.

A source is polled by a runner: `poll()` returns whatever new records are available now as one
Arrow table (or None), `next_poll_at` says when to call again, and `state()` / `restore()` carry
the source's JSON-able position across restarts, checkpointed with the rest of the pipeline.
A source never raises out of `poll()` for a bad response or a bad object: it records a failure
(`stats`, `failures`) and backs off, so one flaky upstream never stops the coordinator.

Shared here: the poll schedule, failure log and counters (`SourceHealth`, with its
`headrace.retry.Backoff`: exponential backoff with full jitter), `Retry-After` parsing, and
`records_to_table`, which turns decoded JSON records into Arrow and names the field and record
that do not fit a schema.
"""

from __future__ import annotations

import collections
import email.utils
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import pyarrow as pa

from headrace.retry import Backoff

__all__ = [
    "Backoff",
    "RecordsDoNotFit",
    "Rejected",
    "Source",
    "SourceHealth",
    "new_stats",
    "parse_retry_after",
    "records_to_table",
]

#: How many failure records a source keeps for inspection.
FAILURES_KEPT = 100


@runtime_checkable
class Source(Protocol):
    """A pollable source of records.

    A source that holds connections or files also has `close()`; runners call it if present.
    A source that sets records aside (they do not fit its schema) also has `take_rejected()`,
    returning them as `Rejected`; the coordinator writes them to the source's error stream.
    """

    name: str
    #: Seconds between polls when all is well.
    interval: float
    #: Counters for people and metrics: requests, records, failures, last_error,
    #: last_error_at (unix seconds), backoff_until (unix seconds or None), and source-specific
    #: extras.
    stats: dict[str, Any]

    @property
    def next_poll_at(self) -> float:
        """`time.monotonic()` value at or after which the runner should call `poll()` again."""
        ...

    def poll(self) -> pa.Table | None:
        """Records that became available since the last poll; None when there are none."""
        ...

    def state(self) -> dict[str, Any]:
        """A JSON-able position; `restore()` of it on a new instance resumes from here."""
        ...

    def restore(self, state: Mapping[str, Any]) -> None: ...


def new_stats(**extra: Any) -> dict[str, Any]:
    return {
        "requests": 0,
        "records": 0,
        "failures": 0,
        "consecutive_failures": 0,
        "last_error": None,
        "last_error_at": None,
        "last_success_at": None,
        "backoff_until": None,
        **extra,
    }


class SourceHealth:
    """When a source may poll next, and its failure log: the last `FAILURES_KEPT` failures and
    the counters in `stats`. Each failure is a JSON-able dict: at, kind, error, plus whatever
    the source adds (status, url, key, retry_in).

    A poll starts with `begin_poll()`, which refuses while a backoff is in force and schedules
    the next poll `interval` seconds later; it ends with `succeeded()` or `back_off()`."""

    def __init__(self, stats: dict[str, Any], backoff: Backoff, interval: float) -> None:
        self.stats = stats
        self.backoff = backoff
        self.interval = interval
        self.failures: collections.deque[dict[str, Any]] = collections.deque(maxlen=FAILURES_KEPT)
        self._next_poll_at = 0.0

    @property
    def next_poll_at(self) -> float:
        return max(self._next_poll_at, self.backoff.until)

    def begin_poll(self) -> float | None:
        """`time.monotonic()` now, with the next poll scheduled and counted as a request; None
        while backing off (no request is made then)."""
        now = time.monotonic()
        if self.backoff.active(now):
            return None
        self._next_poll_at = now + self.interval
        self.stats["requests"] += 1
        return now

    def poll_again_at(self, when: float) -> None:
        """Come back sooner than `interval`: more is waiting."""
        self._next_poll_at = when

    def failed(self, kind: str, error: str, **details: Any) -> dict[str, Any]:
        now = time.time()
        record = {"at": now, "kind": kind, "error": error, **details}
        self.failures.append(record)
        self.stats["failures"] += 1
        self.stats["last_error"] = error
        self.stats["last_error_at"] = now
        return record

    def succeeded(self) -> None:
        """A poll worked: the backoff and its counters start over."""
        self.backoff.success()
        self.stats["consecutive_failures"] = 0
        self.stats["backoff_until"] = None
        self.stats["last_success_at"] = time.time()

    def back_off(self, retry_after: float | None = None) -> float:
        """A poll failed: count it in the backoff and the stats; returns the delay (seconds)."""
        delay = self.backoff.failure(retry_after=retry_after)
        self.stats["consecutive_failures"] = self.backoff.consecutive
        self.stats["backoff_until"] = time.time() + delay
        return delay

    def state(self) -> dict[str, Any]:
        return {k: self.stats[k] for k in ("failures", "last_error", "last_error_at")}

    def restore(self, state: Mapping[str, Any]) -> None:
        for key in ("failures", "last_error", "last_error_at"):
            if key in state:
                self.stats[key] = state[key]

    def backoff_state(self) -> dict[str, Any]:
        """The backoff in force, for sources that keep it across restarts (wall-clock time)."""
        return {
            "consecutive_failures": self.backoff.consecutive,
            "backoff_until": self.backoff.until_wall(),
        }

    def restore_backoff(self, state: Mapping[str, Any]) -> None:
        self.backoff.restore_wall(
            state.get("backoff_until"), int(state.get("consecutive_failures") or 0)
        )
        self.stats.update(self.backoff_state())


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP date (RFC 9110).

    None when the header is absent or unreadable; never negative.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


class RecordsDoNotFit(Exception):
    """Raised by `records_to_table` when the records that fit one by one cannot share a table
    (conflicting nested shapes); the message says why. The whole batch failed."""


class Rejected(NamedTuple):
    """A record left out of a table: its position in the batch, the record, and why."""

    index: int
    record: Any
    reason: str


#: Above this many records, conflicting nested shapes fail the batch instead of being sorted
#: out record by record (a quadratic search).
_GREEDY_LIMIT = 1000


def records_to_table(
    records: Sequence[Any], schema: pa.Schema | None = None
) -> tuple[pa.Table, list[Rejected]]:
    """Decoded JSON records (a list of dicts) → an Arrow table, nested lists/objects kept as
    Arrow list/struct types, and the records left out with the reason.

    With a schema, fields are cast to it (keys not in it are dropped, missing ones are null).
    Without one, the schema is the union of every record's fields, inferred over the whole
    batch (a field only the last record has is kept; nested objects are widened the same way).
    Either way a record that does not fit is left out and returned as `Rejected`
    ("record 3 field 'fee': ..."), so one bad record does not cost the rest and nothing is
    dropped without a reason. Without a schema, a field whose values have different kinds
    (number and text, say) keeps the kind of its first value; the records that disagree are
    rejected.
    """
    rejected = {
        i: f"record {i} is {type(r).__name__}, not an object"
        for i, r in enumerate(records)
        if not isinstance(r, Mapping)
    }
    if not rejected:  # the fast path: everything fits
        try:
            table = _table(records, schema)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            table = None
        if table is not None and (schema is None or not _has_forbidden_nulls(table, schema)):
            return table, []
    # The slow path runs only when something does not fit: find each bad record and why.
    if schema is None:
        bad = _inference_problems(records, rejected)
    else:
        bad = _schema_problems(records, schema, rejected)
    good = [r for i, r in enumerate(records) if i not in bad]
    try:
        table = _table(good, schema)
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
        if schema is not None or len(good) > _GREEDY_LIMIT:
            raise RecordsDoNotFit(f"the records do not fit together ({exc})") from None
        bad.update(_greedy_problems(records, bad))
        good = [r for i, r in enumerate(records) if i not in bad]
        table = _table(good, None)
    return table, [Rejected(i, records[i], bad[i]) for i in sorted(bad)]


def _table(records: Sequence[Any], schema: pa.Schema | None) -> pa.Table:
    if schema is not None:
        return pa.Table.from_pylist(list(records), schema=schema)
    if not records:
        return pa.table({})
    # pa.array unions the keys of all records (Table.from_pylist takes the first record's)
    return pa.Table.from_struct_array(pa.array(list(records)))


def _inference_problems(records: Sequence[Any], bad: dict[int, str]) -> dict[int, str]:
    names: dict[str, None] = {}
    for i, record in enumerate(records):
        if i not in bad:
            names.update(dict.fromkeys(record))
    for name in names:
        column = [(i, r.get(name)) for i, r in enumerate(records) if i not in bad]
        try:
            pa.array([v for _, v in column])
            continue
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            pass
        first_kind = None
        for i, value in column:
            if value is None:
                continue
            kind = _kind(value)
            if first_kind is None:
                first_kind = kind
            elif kind != first_kind:
                bad[i] = (
                    f"record {i} field '{name}': {_short(value)} is {kind}, but earlier records "
                    f"have {first_kind} there"
                )
                continue
            try:
                pa.array([value])
            except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
                bad[i] = f"record {i} field '{name}': {_short(value)} has no Arrow type ({exc})"
    return bad


def _greedy_problems(records: Sequence[Any], bad: dict[int, str]) -> dict[int, str]:
    """Records whose nested shapes conflict with those before them, found one by one."""
    kept: list[Any] = []
    found: dict[int, str] = {}
    for i, record in enumerate(records):
        if i in bad:
            continue
        try:
            pa.array([*kept, record])
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            found[i] = f"record {i} does not fit the records before it ({exc})"
            continue
        kept.append(record)
    return found


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _schema_problems(
    records: Sequence[Any], schema: pa.Schema, bad: dict[int, str]
) -> dict[int, str]:
    for field in schema:
        column = [r.get(field.name) if isinstance(r, Mapping) else None for r in records]
        try:
            pa.array(column, type=field.type)
            column_ok = True
        except (pa.ArrowException, TypeError, ValueError):
            column_ok = False
        for i, value in enumerate(column):
            if i in bad:
                continue
            if value is None:
                if not field.nullable:
                    bad[i] = f"record {i} field '{field.name}': missing, but the field is not null"
                continue
            if column_ok:
                continue
            try:
                pa.array([value], type=field.type)
            except (pa.ArrowException, TypeError, ValueError) as exc:
                bad[i] = (
                    f"record {i} field '{field.name}': {_short(value)} does not fit "
                    f"{field.type} ({exc})"
                )
    return bad


def _has_forbidden_nulls(table: pa.Table, schema: pa.Schema) -> bool:
    return any(not f.nullable and table.column(f.name).null_count for f in schema)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
