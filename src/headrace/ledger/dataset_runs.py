"""Dataset runs: one row per execution of a Dataset's plan in a process of a headrace project.

Written by the process running the dataset (`headrace.data.runs`): a row when it starts, its
progress while it runs (at most every half second), its end. Read by the console and
`headrace datasets`. A run whose process died stays RUNNING in the table; readers tell it apart
with `holder_alive` on its host and pid.

The table lives on its own MetaData, created when first used, so a ledger made before it needs
no migration.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Engine

from headrace.ledger.db import create_tables, to_json
from headrace.ledger.liveness import holder_alive

__all__ = [
    "STATUSES",
    "dataset_runs",
    "ensure_tables",
    "failed_since",
    "finish",
    "get",
    "last_change",
    "page",
    "progress",
    "start",
]

#: RUNNING, then SUCCEEDED or FAILED; STOPPED when the caller stopped reading before the end
#: (a `take`, a loop left early). LOST is never stored: readers say it of a RUNNING row whose
#: process is gone.
STATUSES = ("RUNNING", "SUCCEEDED", "FAILED", "STOPPED", "LOST")

metadata = MetaData()

dataset_runs = Table(
    "dataset_runs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(255), nullable=False),  # the script (or program) that ran it
    Column("job_id", String(64)),  # HEADRACE_JOB_ID when a headrace job ran the script
    Column("engine", String(64), nullable=False),  # local | ray
    Column("action", String(32), nullable=False),  # write_parquet, iter_batches, count, ...
    Column("status", String(16), nullable=False),
    Column("error", Text),
    Column("steps", Text, nullable=False),  # JSON list: ReadParquet, MapBatches(f), WriteParquet
    Column("stages", Text, nullable=False),  # JSON list: name, tasks, total, rows, seconds
    Column("tasks_done", Integer, nullable=False, default=0),
    Column("tasks_total", Integer),  # None while the engine cannot tell
    Column("rows_out", Integer, nullable=False, default=0),
    Column("output", Text),  # the folder a write went to
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finished_at", Float),
    Index("ix_dataset_runs_started", "started_at"),
    Index("ix_dataset_runs_updated", "updated_at"),
)

_ready: set[str] = set()  # engine URLs whose table exists


def ensure_tables(engine: Engine) -> None:
    key = str(engine.url)
    if key not in _ready:
        create_tables(metadata, engine)
        _ready.add(key)


def start(conn: Connection, row: dict[str, Any]) -> None:
    """Record a run that starts now: `row` has id, name, job_id, engine, action, steps (a list),
    output, host, pid."""
    now = time.time()
    conn.execute(
        insert(dataset_runs).values(
            **{**row, "steps": to_json(row["steps"])},
            status="RUNNING",
            stages="[]",
            tasks_done=0,
            rows_out=0,
            started_at=now,
            updated_at=now,
        )
    )


def progress(conn: Connection, run_id: str, snapshot: dict[str, Any]) -> None:
    """Where the run is: `snapshot` has stages (a list), tasks_done, tasks_total, rows_out."""
    conn.execute(
        update(dataset_runs)
        .where(dataset_runs.c.id == run_id)
        .values(**_progress_values(snapshot), updated_at=time.time())
    )


def finish(
    conn: Connection, run_id: str, status: str, snapshot: dict[str, Any], error: str | None
) -> None:
    now = time.time()
    conn.execute(
        update(dataset_runs)
        .where(dataset_runs.c.id == run_id)
        .values(
            **_progress_values(snapshot),
            status=status,
            error=error,
            updated_at=now,
            finished_at=now,
        )
    )


def _progress_values(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {
        "stages": to_json(snapshot["stages"]),
        "tasks_done": snapshot["tasks_done"],
        "tasks_total": snapshot["tasks_total"],
        "rows_out": snapshot["rows_out"],
    }


def page(
    conn: Connection,
    *,
    status: str | None = None,
    search: str | None = None,
    cursor: tuple[float, str] | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Runs newest first, keyset-paged on (started_at, id); `search` matches the start of the
    name or the job id. `status` LOST picks RUNNING rows whose process is gone."""
    c = dataset_runs.c
    query = select(dataset_runs).order_by(c.started_at.desc(), c.id.desc())
    if status in ("RUNNING", "LOST"):
        query = query.where(c.status == "RUNNING")
    elif status:
        query = query.where(c.status == status)
    if search:
        query = query.where(or_(c.name.startswith(search, autoescape=True), c.job_id == search))
    if cursor is not None:
        at, ident = cursor
        query = query.where(or_(c.started_at < at, and_(c.started_at == at, c.id < ident)))
    rows: list[dict[str, Any]] = []
    # LOST and RUNNING are told apart here, not in SQL: read on until the page is full
    for row in conn.execute(query).mappings():
        out = _decoded(row)
        if status in ("RUNNING", "LOST") and out["status"] != status:
            continue
        rows.append(out)
        if len(rows) >= limit:
            break
    return rows


def get(conn: Connection, run_id: str) -> dict[str, Any] | None:
    """One run by id, or by a unique prefix of it."""
    c = dataset_runs.c
    row = conn.execute(select(dataset_runs).where(c.id == run_id)).mappings().first()
    if row is None and run_id:
        found = (
            conn.execute(
                select(dataset_runs).where(c.id.startswith(run_id, autoescape=True)).limit(2)
            )
            .mappings()
            .all()
        )
        row = found[0] if len(found) == 1 else None
    return _decoded(row) if row is not None else None


def failed_since(conn: Connection, since: float, limit: int = 50) -> list[dict[str, Any]]:
    """Runs that failed since `since`, newest first (the console's errors of the last hour)."""
    c = dataset_runs.c
    query = (
        select(c.id, c.name, c.job_id, c.action, c.error, c.finished_at)
        .where(c.status == "FAILED", c.finished_at >= since)
        .order_by(c.finished_at.desc())
        .limit(limit)
    )
    return [dict(r) for r in conn.execute(query).mappings()]


def last_change(conn: Connection) -> float | None:
    """When any run last changed (the console's live updates)."""
    return conn.execute(select(func.max(dataset_runs.c.updated_at))).scalar()


def _decoded(row: Any) -> dict[str, Any]:
    out = dict(row)
    out["steps"] = json.loads(out["steps"])
    out["stages"] = json.loads(out["stages"])
    if out["status"] == "RUNNING" and not holder_alive(out["host"], out["pid"]):
        out["status"] = "LOST"
        out["error"] = out["error"] or (
            f"the process that ran it (pid {out['pid']} on {out['host']}) is gone"
        )
    return out
