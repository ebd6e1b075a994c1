"""Paged reads for browsing the ledger (the web console's API).

Every list is keyset-paginated: a page ends with a cursor (the sort key of its last row) and the
next page starts after it, so a page costs the same on the millionth row as on the first and
rows written meanwhile neither repeat nor vanish. Each function runs in the caller's connection.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select

from headrace.ledger.schema import (
    attempts,
    dead_letters,
    events,
    executions,
    history,
    invocations,
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


def history_since(conn: Connection, execution_id: str, after: int) -> list[tuple]:
    """(seq, type, timestamp, scope, details) above `after`: what a cached fold still needs."""
    h = history.c
    rows = conn.execute(
        select(h.seq, h.type, h.timestamp, h.scope, h.details)
        .where(h.execution_id == execution_id, h.seq > after)
        .order_by(h.seq)
    )
    return [(s, t, ts, sc, json.loads(d)) for s, t, ts, sc, d in rows]
