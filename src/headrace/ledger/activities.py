"""Step Functions activities in the ledger: the activities created, and the tasks executions
schedule on them until a worker takes and answers each."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from headrace.ledger.db import to_json
from headrace.ledger.schema import activities, activity_tasks


def create(conn: Connection, name: str) -> float:
    """Create activity `name` (idempotent, as CreateActivity); returns its creation time."""
    found = conn.execute(
        select(activities.c.created_at).where(activities.c.name == name)
    ).scalar_one_or_none()
    if found is not None:
        return float(found)
    now = time.time()
    conn.execute(insert(activities).values(name=name, created_at=now))
    return now


def get(conn: Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute(select(activities).where(activities.c.name == name)).mappings().first()
    return dict(row) if row is not None else None


def list_all(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(select(activities).order_by(activities.c.name)).mappings()
    return [dict(r) for r in rows]


def delete_activity(conn: Connection, name: str) -> bool:
    return conn.execute(delete(activities).where(activities.c.name == name)).rowcount > 0


def schedule(conn: Connection, token: str, activity: str, execution_id: str, input: Any) -> None:
    """Offer a task to `activity`'s workers (once: a replay after a crash finds it there)."""
    found = conn.execute(
        select(activity_tasks.c.token).where(activity_tasks.c.token == token)
    ).first()
    if found is None:
        conn.execute(
            insert(activity_tasks).values(
                token=token,
                activity=activity,
                execution_id=execution_id,
                input=to_json(input),
                scheduled_at=time.time(),
                closed=0,
            )
        )


def task(conn: Connection, token: str) -> dict[str, Any] | None:
    row = (
        conn.execute(select(activity_tasks).where(activity_tasks.c.token == token))
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def waiting(conn: Connection, activity: str, limit: int = 10) -> list[dict[str, Any]]:
    """The oldest tasks of `activity` no worker has taken."""
    rows = conn.execute(
        select(activity_tasks)
        .where(
            activity_tasks.c.activity == activity,
            activity_tasks.c.closed == 0,
            activity_tasks.c.worker.is_(None),
        )
        .order_by(activity_tasks.c.scheduled_at)
        .limit(limit)
    ).mappings()
    return [dict(r) for r in rows]


def take(conn: Connection, token: str, worker: str) -> bool:
    """Hand the task to `worker` unless another worker took it first (compare-and-set)."""
    result = conn.execute(
        update(activity_tasks)
        .where(
            activity_tasks.c.token == token,
            activity_tasks.c.worker.is_(None),
            activity_tasks.c.closed == 0,
        )
        .values(worker=worker, started_at=time.time())
    )
    return result.rowcount == 1


def close(conn: Connection, token: str) -> None:
    conn.execute(update(activity_tasks).where(activity_tasks.c.token == token).values(closed=1))
