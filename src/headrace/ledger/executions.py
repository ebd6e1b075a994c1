"""Workflow executions in the ledger: the execution rows and their append-only history."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from headrace.errors import LedgerError
from headrace.ledger.db import insert_rows, to_json
from headrace.ledger.schema import executions, history, map_run_executions, task_callbacks


def start_execution(
    conn: Connection,
    *,
    execution_id: str,
    name: str,
    state_machine: str,
    definition: dict[str, Any],
    input: Any,
    seed: int,
) -> None:
    now = time.time()
    conn.execute(
        insert(executions).values(
            id=execution_id,
            name=name,
            state_machine=state_machine,
            definition=to_json(definition),
            status="RUNNING",
            input=to_json(input),
            started_at=now,
        )
    )
    append_events(
        conn,
        execution_id,
        [(1, "ExecutionStarted", now, "", {"input": input, "seed": seed})],
    )


def append_events(
    conn: Connection, execution_id: str, events: list[tuple[int, str, float, str, dict[str, Any]]]
) -> None:
    """Append (seq, type, timestamp, scope, details); the primary key refuses a second writer."""
    insert_rows(
        conn,
        history,
        [
            {
                "execution_id": execution_id,
                "seq": seq,
                "type": kind,
                "timestamp": ts,
                "scope": scope,
                "details": to_json(details),
            }
            for seq, kind, ts, scope, details in events
        ],
    )


def append_next(conn: Connection, execution_id: str, kind: str, details: dict[str, Any]) -> None:
    """Append one event after the last (for requests made outside the coordinator)."""
    seq = history_length(conn, execution_id) + 1
    append_events(conn, execution_id, [(seq, kind, time.time(), "", details)])


def finish_execution(
    conn: Connection,
    execution_id: str,
    status: str,
    output: Any,
    error: str | None,
    cause: str | None,
) -> None:
    conn.execute(
        update(executions)
        .where(executions.c.id == execution_id, executions.c.status == "RUNNING")
        .values(
            status=status,
            output=None if output is None and status != "SUCCEEDED" else to_json(output),
            error=error,
            cause=cause,
            stopped_at=time.time(),
        )
    )


def reopen_execution(conn: Connection, execution_id: str) -> None:
    conn.execute(
        update(executions)
        .where(executions.c.id == execution_id)
        .values(status="RUNNING", output=None, error=None, cause=None, stopped_at=None)
    )


def lock_running(conn: Connection, execution_id: str) -> bool:
    """Whether the execution is still RUNNING, holding its row until the transaction ends.

    Whoever appends to a running execution's history (the coordinator, stop-execution) takes
    this lock first, so on PostgreSQL they take turns instead of racing for the same `seq`.
    (SQLite has one writer at a time anyway; there it is a plain read.)"""
    status = conn.execute(
        select(executions.c.status).where(executions.c.id == execution_id).with_for_update()
    ).scalar_one_or_none()
    return status == "RUNNING"


def running_ids(conn: Connection) -> list[str]:
    return [
        r[0] for r in conn.execute(select(executions.c.id).where(executions.c.status == "RUNNING"))
    ]


def load(conn: Connection, execution_id: str) -> tuple[dict[str, Any], list[tuple]] | None:
    row = conn.execute(select(executions).where(executions.c.id == execution_id)).mappings().first()
    if row is None:
        return None
    events = conn.execute(
        select(
            history.c.seq, history.c.type, history.c.timestamp, history.c.scope, history.c.details
        )
        .where(history.c.execution_id == execution_id)
        .order_by(history.c.seq)
    ).all()
    return dict(row), [(s, t, ts, sc, json.loads(d)) for s, t, ts, sc, d in events]


def list_executions(
    conn: Connection,
    *,
    state_machine: str | None = None,
    status: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    # a Distributed Map's child executions are listed with their Map Run, not here (as AWS's
    # ListExecutions without mapRunArn)
    children = select(map_run_executions.c.execution_id)
    query = (
        select(executions)
        .where(executions.c.id.not_in(children))
        .order_by(executions.c.started_at.desc())
        .limit(limit)
    )
    if state_machine:
        query = query.where(executions.c.state_machine == state_machine)
    if status:
        query = query.where(executions.c.status == status)
    return [dict(r) for r in conn.execute(query).mappings()]


def find(conn: Connection, name_or_id: str) -> dict[str, Any] | None:
    """The execution with this ARN, or with this name (or STATE_MACHINE:NAME). A bare name
    that more than one state machine used is ambiguous: LedgerError names the ARNs."""
    row = conn.execute(select(executions).where(executions.c.id == name_or_id)).mappings().first()
    if row is not None:
        return dict(row)
    query = select(executions).where(executions.c.name == name_or_id)
    machine, sep, name = name_or_id.partition(":")
    if sep and not name_or_id.startswith("arn:"):  # execution names hold no ':'
        query = select(executions).where(
            executions.c.state_machine == machine, executions.c.name == name
        )
    rows = conn.execute(query.order_by(executions.c.started_at).limit(6)).mappings().all()
    if len(rows) > 1:
        arns = ", ".join(r["id"] for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
        raise LedgerError(
            f"execution name {name_or_id!r}",
            f"is used by executions of more than one state machine ({arns})",
            "pass the execution's ARN, or STATE_MACHINE:NAME",
        )
    return dict(rows[0]) if rows else None


def history_length(conn: Connection, execution_id: str) -> int:
    return conn.execute(
        select(func.count()).select_from(history).where(history.c.execution_id == execution_id)
    ).scalar_one()


def count_events(conn: Connection, execution_id: str, kind: str) -> int:
    """How many events of this type the execution's history holds."""
    return conn.execute(
        select(func.count())
        .select_from(history)
        .where(history.c.execution_id == execution_id, history.c.type == kind)
    ).scalar_one()


def add_callback(
    conn: Connection,
    token: str,
    kind: str,
    *,
    output: Any = None,
    error: str | None = None,
    cause: str | None = None,
) -> None:
    conn.execute(
        insert(task_callbacks).values(
            token=token,
            kind=kind,
            output=None if output is None else to_json(output),
            error=error,
            cause=cause,
            created_at=time.time(),
        )
    )


def pending_callbacks(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(task_callbacks)
        .where(task_callbacks.c.applied_at.is_(None))
        .order_by(task_callbacks.c.id)
    ).mappings()
    return [dict(r) for r in rows]


def mark_callback(conn: Connection, callback_id: int, outcome: str) -> None:
    conn.execute(
        update(task_callbacks)
        .where(task_callbacks.c.id == callback_id)
        .values(applied_at=time.time(), outcome=outcome)
    )
