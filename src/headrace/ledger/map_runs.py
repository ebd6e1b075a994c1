"""Distributed Map runs in the ledger: the Map Run rows and the child executions they started.

A child execution is an ordinary row of `executions` (its own name, ARN and history, run by the
coordinator like any other); `map_run_executions` ties it to its Map Run and item index.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from headrace.ledger.db import to_json
from headrace.ledger.schema import executions, history, map_run_executions, map_runs

# what the status of a child execution counts as, in DescribeMapRun's itemCounts
_COUNTED = {
    "RUNNING": "running",
    "SUCCEEDED": "succeeded",
    "FAILED": "failed",
    "TIMED_OUT": "timedOut",
    "ABORTED": "aborted",
}


def create_run(
    conn: Connection,
    *,
    run_id: str,
    execution_id: str,
    scope: str,
    state: str,
    execution_type: str,
    total: int,
    max_concurrency: int,
    tolerated_count: int,
    tolerated_percentage: float,
) -> None:
    conn.execute(
        insert(map_runs).values(
            id=run_id,
            execution_id=execution_id,
            scope=scope,
            state=state,
            execution_type=execution_type,
            status="RUNNING",
            total=total,
            max_concurrency=max_concurrency,
            tolerated_count=tolerated_count,
            tolerated_percentage=tolerated_percentage,
            started_at=time.time(),
            redrive_count=0,
        )
    )


def link_child(conn: Connection, run_id: str, index: int, execution_id: str) -> None:
    conn.execute(
        insert(map_run_executions).values(map_run_id=run_id, idx=index, execution_id=execution_id)
    )


def finish_run(conn: Connection, run_id: str, status: str) -> None:
    conn.execute(
        update(map_runs)
        .where(map_runs.c.id == run_id)
        .values(status=status, stopped_at=time.time())
    )


def redrive_run(conn: Connection, run_id: str) -> None:
    conn.execute(
        update(map_runs)
        .where(map_runs.c.id == run_id)
        .values(
            status="RUNNING",
            stopped_at=None,
            redrive_count=map_runs.c.redrive_count + 1,
            redriven_at=time.time(),
        )
    )


def parent_of(conn: Connection, execution_id: str) -> dict[str, Any] | None:
    """The Map Run (with the child's `idx`) an execution is a child of, or None."""
    row = (
        conn.execute(
            select(map_runs, map_run_executions.c.idx)
            .join(map_run_executions, map_run_executions.c.map_run_id == map_runs.c.id)
            .where(map_run_executions.c.execution_id == execution_id)
        )
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def ended_children(
    conn: Connection, runs: dict[str, Iterable[int]]
) -> list[tuple[str, int, dict[str, Any]]]:
    """(run id, index, execution row) of the children of `runs` (run id -> the indexes still
    running as the parent knows it) that have ended."""
    out: list[tuple[str, int, dict[str, Any]]] = []
    for run_id, indexes in runs.items():
        wanted = set(indexes)
        if not wanted:
            continue
        rows = conn.execute(
            select(
                map_run_executions.c.idx,
                executions.c.id,
                executions.c.status,
                executions.c.output,
                executions.c.error,
                executions.c.cause,
            )
            .join(executions, executions.c.id == map_run_executions.c.execution_id)
            .where(map_run_executions.c.map_run_id == run_id, executions.c.status != "RUNNING")
        ).mappings()
        out.extend((run_id, r["idx"], dict(r)) for r in rows if r["idx"] in wanted)
    return out


def child_id(conn: Connection, run_id: str, index: int) -> str | None:
    return conn.execute(
        select(map_run_executions.c.execution_id).where(
            map_run_executions.c.map_run_id == run_id, map_run_executions.c.idx == index
        )
    ).scalar_one_or_none()


def reset_history(conn: Connection, execution_id: str) -> None:
    """Drop all but the ExecutionStarted event, counting one more `attempt` in it: an EXPRESS
    child runs again from its start, under task tokens of its own."""
    conn.execute(delete(history).where(history.c.execution_id == execution_id, history.c.seq > 1))
    where = (history.c.execution_id == execution_id, history.c.seq == 1)
    raw = conn.execute(select(history.c.details).where(*where)).scalar_one()
    details = json.loads(raw)
    details["attempt"] = int(details.get("attempt", 0)) + 1
    conn.execute(update(history).where(*where).values(details=to_json(details)))


def list_runs(conn: Connection, execution_id: str | None = None) -> list[dict[str, Any]]:
    query = select(map_runs).order_by(map_runs.c.started_at.desc())
    if execution_id is not None:
        query = query.where(map_runs.c.execution_id == execution_id)
    return [dict(r) for r in conn.execute(query).mappings()]


def find_run(conn: Connection, run_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(map_runs).where(map_runs.c.id == run_id)).mappings().first()
    return dict(row) if row is not None else None


def counts(conn: Connection, run: dict[str, Any]) -> dict[str, int]:
    """DescribeMapRun's counts: children per status, items not started yet as `pending`."""
    out = dict.fromkeys(
        ("pending", "running", "succeeded", "failed", "timedOut", "aborted", "total"), 0
    )
    rows = conn.execute(
        select(executions.c.status, func.count())
        .select_from(map_run_executions)
        .join(executions, executions.c.id == map_run_executions.c.execution_id)
        .where(map_run_executions.c.map_run_id == run["id"])
        .group_by(executions.c.status)
    ).all()
    started = 0
    for status, n in rows:
        out[_COUNTED.get(status, "failed")] += n
        started += n
    out["pending"] = max(0, int(run["total"]) - started) if run["status"] == "RUNNING" else 0
    out["total"] = int(run["total"])
    return out


def children(
    conn: Connection,
    run_id: str,
    status: str | None = None,
    *,
    after: int = -1,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The child executions of a Map Run past item index `after`, by item index (at most
    `limit`), without their definition (the parent's, one copy per child)."""
    columns = [c for c in executions.c if c.name != "definition"]
    query = (
        select(*columns, map_run_executions.c.idx)
        .join(map_run_executions, map_run_executions.c.execution_id == executions.c.id)
        .where(map_run_executions.c.map_run_id == run_id, map_run_executions.c.idx > after)
        .order_by(map_run_executions.c.idx)
        .limit(limit)
    )
    if status:
        query = query.where(executions.c.status == status)
    return [dict(r) for r in conn.execute(query).mappings()]
