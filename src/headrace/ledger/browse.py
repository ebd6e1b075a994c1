"""Paged reads for browsing the ledger (the web console's API).

Every list is keyset-paginated: a page ends with a cursor (the sort key of its last row) and the
next page starts after it, so a page costs the same on the millionth row as on the first and
rows written meanwhile neither repeat nor vanish. Each function runs in the caller's connection.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, and_, case, cast, func, or_, select
from sqlalchemy.dialects.postgresql import JSONB

from headrace.ledger.schema import (
    attempts,
    dead_letters,
    events,
    executions,
    history,
    invocations,
    last_attempt_ms,
    map_run_executions,
)

#: The most rows one page may ask for.
MAX_PAGE = 500


def _limit(limit: int) -> int:
    return max(1, min(int(limit), MAX_PAGE))


def _after(time_col: Any, id_col: Any, cursor: tuple[float, str] | None) -> Any:
    """Rows strictly after `cursor` in (time desc, id desc) order."""
    if cursor is None:
        return None
    at, ident = cursor
    return or_(time_col < at, and_(time_col == at, id_col < ident))


def page_invocations(
    conn: Connection,
    *,
    function: str | None = None,
    status: str | None = None,
    since: float | None = None,
    until: float | None = None,
    cursor: tuple[float, str] | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Invocations newest first, without their payload and result (see `get_invocation`)."""
    c = invocations.c
    query = (
        select(
            c.id,
            c.function,
            c.status,
            c.attempts,
            c.max_attempts,
            c.created_at,
            c.updated_at,
            c.finished_at,
            c.error,
            c.event_id,
            c.source,
            c.execution_id,
            last_attempt_ms(),
        )
        .order_by(c.created_at.desc(), c.id.desc())
        .limit(_limit(limit))
    )
    if function:
        query = query.where(c.function == function)
    if status:
        query = query.where(c.status == status)
    if since is not None:
        query = query.where(c.created_at >= since)
    if until is not None:
        query = query.where(c.created_at < until)
    after = _after(c.created_at, c.id, cursor)
    if after is not None:
        query = query.where(after)
    rows = [dict(r) for r in conn.execute(query).mappings()]
    # what triggered each: the object (bucket/key) or the event's type, one query for the page
    ids = {r["event_id"] for r in rows if r["event_id"]}
    found = {}
    if ids:
        e = events.c
        found = {
            r.id: r.subject or r.detail_type
            for r in conn.execute(select(e.id, e.subject, e.detail_type).where(e.id.in_(list(ids))))
        }
    for r in rows:
        r["trigger"] = found.get(r["event_id"])
    return rows


def function_counts(conn: Connection) -> dict[str, dict[str, int]]:
    """Invocations per function and status."""
    c = invocations.c
    out: dict[str, dict[str, int]] = {}
    for fn, status, n in conn.execute(
        select(c.function, c.status, func.count()).group_by(c.function, c.status)
    ):
        out.setdefault(fn, {})[status] = n
    return out


def function_names(conn: Connection) -> list[str]:
    """Every function with invocations in the ledger."""
    c = invocations.c
    return [r[0] for r in conn.execute(select(c.function).distinct().order_by(c.function))]


def failed_attempts(conn: Connection, since: float, limit: int = 50) -> list[dict[str, Any]]:
    """Attempts that ended in an error since `since`, newest first."""
    a = attempts.c
    query = (
        select(a.invocation_id, a.number, a.function, a.status, a.finished_at, a.error)
        .where(a.status != "ok", a.finished_at >= since)
        .order_by(a.id.desc())
        .limit(_limit(limit))
    )
    return [dict(r) for r in conn.execute(query).mappings()]


def event_of(conn: Connection, event_id: str) -> dict[str, Any] | None:
    """The event (an object created, a source record, a tick) that triggered invocations."""
    row = conn.execute(select(events).where(events.c.id == event_id)).mappings().first()
    if row is None:
        return None
    out = dict(row)
    out["payload"] = json.loads(out["payload"])
    return out


def page_dead_letters(
    conn: Connection,
    *,
    function: str | None = None,
    cursor: int | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Dead letters not redriven yet, newest first; the cursor is the last row's `id`."""
    d = dead_letters.c
    query = (
        select(d.id, d.invocation_id, d.function, d.error, d.attempts, d.created_at)
        .where(d.redriven_at.is_(None))
        .order_by(d.id.desc())
        .limit(_limit(limit))
    )
    if function:
        query = query.where(d.function == function)
    if cursor is not None:
        query = query.where(d.id < cursor)
    return [dict(r) for r in conn.execute(query).mappings()]


def count_dead_letters(conn: Connection) -> int:
    """Dead letters not redriven yet: what page_dead_letters lists (a failed Step Functions
    task is a dead invocation, not a dead letter: its execution handles the failure)."""
    d = dead_letters.c
    return conn.execute(select(func.count()).where(d.redriven_at.is_(None))).scalar_one()


def page_executions(
    conn: Connection,
    *,
    state_machine: str | None = None,
    status: str | None = None,
    search: str | None = None,
    cursor: tuple[float, str] | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Executions newest first, without definition, input and output; `search` matches the
    start of the name."""
    c = executions.c
    query = (
        select(
            c.id,
            c.name,
            c.state_machine,
            c.status,
            c.error,
            c.cause,
            c.started_at,
            c.stopped_at,
        )
        # a Distributed Map's child executions are shown with their Map Run
        .where(c.id.not_in(select(map_run_executions.c.execution_id)))
        .order_by(c.started_at.desc(), c.id.desc())
        .limit(_limit(limit))
    )
    if state_machine:
        query = query.where(c.state_machine == state_machine)
    if status:
        query = query.where(c.status == status)
    if search:
        query = query.where(c.name.startswith(search, autoescape=True))
    after = _after(c.started_at, c.id, cursor)
    if after is not None:
        query = query.where(after)
    return [dict(r) for r in conn.execute(query).mappings()]


def execution_counts(conn: Connection) -> dict[str, dict[str, int]]:
    """Executions per state machine and status."""
    c = executions.c
    out: dict[str, dict[str, int]] = {}
    for machine, status, n in conn.execute(
        select(c.state_machine, c.status, func.count()).group_by(c.state_machine, c.status)
    ):
        out.setdefault(machine, {})[status] = n
    return out


def history_page(
    conn: Connection, execution_id: str, *, after: int = 0, limit: int = 100
) -> list[dict[str, Any]]:
    """History events with `seq` above `after`, oldest first."""
    h = history.c
    query = (
        select(h.seq, h.type, h.timestamp, h.scope, h.details)
        .where(h.execution_id == execution_id, h.seq > after)
        .order_by(h.seq)
        .limit(_limit(limit))
    )
    return [
        {"id": seq, "type": kind, "timestamp": ts, "scope": scope, "details": json.loads(details)}
        for seq, kind, ts, scope, details in conn.execute(query)
    ]


#: The fields of an event's details a fold of state statuses reads (`workflows.graph.StatusFold`);
#: a state's input and output are not among them.
OUTLINE_FIELDS = ("name", "error", "next", "index", "branches")


def _field(conn: Connection, name: str) -> Any:
    """One top-level field of `history.details`, extracted by the database as text or number."""
    if conn.dialect.name == "postgresql":
        return cast(history.c.details, JSONB)[name].astext
    return func.json_extract(history.c.details, f"$.{name}")


def _outline(conn: Connection) -> tuple[Any, Any]:
    """The `OUTLINE_FIELDS` of an event's details as one JSON array, and how many items a
    MapStateStarted event lists, both extracted by the database."""
    h = history.c
    if conn.dialect.name == "postgresql":
        d = cast(h.details, JSONB)
        is_list = func.jsonb_typeof(d["items"]) == "array"
        started = and_(h.type == "MapStateStarted", is_list)
        fields = func.jsonb_build_array(*(d[f] for f in OUTLINE_FIELDS))
        return fields, case((started, func.jsonb_array_length(d["items"])), else_=None)
    # SQLite: json_extract of several paths gives their values as one JSON array
    fields = func.json_extract(h.details, *(f"$.{f}" for f in OUTLINE_FIELDS))
    items = func.json_array_length(h.details, "$.items")
    return fields, case((h.type == "MapStateStarted", items), else_=None)


def history_outline(
    conn: Connection, execution_id: str, after: int, limit: int | None = None
) -> list[tuple[int, str, str, dict[str, Any]]]:
    """(seq, type, scope, details) above `after` (`limit` of them, or all), `details` holding
    only what a fold of state statuses reads (`OUTLINE_FIELDS`, and `items` as a count): the
    database extracts them, so the states' inputs and outputs, most of a long history's bytes,
    never travel here and are never parsed."""
    h = history.c
    fields, items = _outline(conn)
    query = (
        select(h.seq, h.type, h.scope, fields, items)
        .where(h.execution_id == execution_id, h.seq > after)
        .order_by(h.seq)
    )
    if limit is not None:
        query = query.limit(limit)
    out = []
    for seq, kind, scope, values, count in conn.execute(query):
        if isinstance(values, str):  # SQLite gives the array as text
            values = json.loads(values)
        details = {k: v for k, v in zip(OUTLINE_FIELDS, values, strict=True) if v is not None}
        if count is not None:
            details["items"] = count
        out.append((seq, kind, scope, details))
    return out


def state_runs(
    conn: Connection, execution_id: str, names: list[str], scope_suffix: str | None = None
) -> list[tuple[int, str, float, str, str, str]]:
    """(seq, type, timestamp, scope, name, details as JSON text) of the StateEntered and
    StateExited events of states called one of `names` (in any scope, or in scopes ending with
    `scope_suffix`), oldest first: the caller parses the details (inputs and outputs) of the
    few it shows."""
    h = history.c
    name = _field(conn, "name")
    query = (
        select(h.seq, h.type, h.timestamp, h.scope, name, h.details)
        .where(
            h.execution_id == execution_id,
            or_(h.type.like("%StateEntered"), h.type.like("%StateExited")),
            name.in_(names),
        )
        .order_by(h.seq)
    )
    if scope_suffix is not None:
        query = query.where(h.scope.endswith(scope_suffix, autoescape=True))
    return [tuple(row) for row in conn.execute(query)]
