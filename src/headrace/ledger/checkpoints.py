"""Stream pipeline checkpoints: offsets, operator state and per-stage counters.

A micro-batch is made durable in two small transactions. `plan_batch` fixes which records batch
`seq` holds before any sink sees it; `commit_batch` then records the new offset, the operators'
state and the counters together. A crash in between replays the planned range with the state of
the previous commit, so every sink receives identical output under the same batch number and can
skip or overwrite what it already wrote.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Table, and_, delete, select

from headrace.ledger.db import insert_rows
from headrace.ledger.schema import stream_checkpoints, stream_health, stream_state, stream_stats


@dataclass
class Checkpoint:
    pipeline: str
    partition: int
    seq: int = 0  # last committed batch
    offset: int = 0  # next offset to read
    planned_seq: int | None = None
    planned_end: int | None = None
    planned_flush: int = 0
    watermark: float | None = None
    records: int = 0
    late: int = 0
    state: dict[str, bytes] = field(default_factory=dict)

    @property
    def pending_plan(self) -> int | None:
        """End offset of a batch planned but not committed (a crash came in between)."""
        if self.planned_seq is not None and self.planned_seq > self.seq:
            return self.planned_end
        return None


@dataclass
class StageCounts:
    stage: str
    records_in: int = 0
    records_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    late: int = 0


def _excluded(conn: Connection, *columns: str) -> dict[str, str]:
    quote = conn.dialect.identifier_preparer.quote
    return {c: f"excluded.{quote(c)}" for c in columns}


def _added(conn: Connection, table: Table, *columns: str) -> dict[str, str]:
    quote = conn.dialect.identifier_preparer.quote
    return {c: f"{quote(table.name)}.{quote(c)} + excluded.{quote(c)}" for c in columns}


def load_checkpoint(conn: Connection, pipeline: str, partition: int) -> Checkpoint:
    c = stream_checkpoints.c
    row = (
        conn.execute(
            select(stream_checkpoints).where(and_(c.pipeline == pipeline, c.partition == partition))
        )
        .mappings()
        .first()
    )
    checkpoint = Checkpoint(pipeline, partition)
    if row is not None:
        checkpoint.seq = row["seq"]
        checkpoint.offset = row["offset"]
        checkpoint.planned_seq = row["planned_seq"]
        checkpoint.planned_end = row["planned_end"]
        checkpoint.planned_flush = row["planned_flush"] or 0
        checkpoint.watermark = row["watermark"]
        checkpoint.records = row["records"] or 0
        checkpoint.late = row["late"] or 0
    s = stream_state.c
    for slot, data in conn.execute(
        select(s.slot, s.data).where(and_(s.pipeline == pipeline, s.partition == partition))
    ):
        checkpoint.state[slot] = bytes(data)
    return checkpoint


def plan_batch(
    conn: Connection,
    pipeline: str,
    partition: int,
    seq: int,
    start: int,
    end: int,
    flush: int = 0,
) -> None:
    """Fix batch `seq`: records [start, end), or (flush 1/2) a flush of sinks / of everything.

    `start` is stored only with the pipeline's first plan (later plans start where the last
    commit ended): a first batch that fails is replayed from where it began, not from 0."""
    now = time.time()
    row = {
        "pipeline": pipeline,
        "partition": partition,
        "seq": seq - 1,
        "offset": start,
        "planned_seq": seq,
        "planned_end": end,
        "planned_flush": flush,
        "records": 0,
        "late": 0,
        "updated_at": now,
        "failures": 0,
    }
    update = _excluded(conn, "planned_seq", "planned_end", "planned_flush", "updated_at")
    insert_rows(conn, stream_checkpoints, [row], on_conflict=(("pipeline", "partition"), update))


def commit_batch(
    conn: Connection,
    pipeline: str,
    partition: int,
    *,
    seq: int,
    offset: int,
    watermark: float | None,
    log_end: int | None,
    records: int,
    late: int,
    state: Mapping[str, bytes | None],
    counts: Sequence[StageCounts] = (),
) -> None:
    """Make batch `seq` durable: offset, state slots (None deletes a slot) and counters."""
    now = time.time()
    row = {
        "pipeline": pipeline,
        "partition": partition,
        "seq": seq,
        "offset": offset,
        "planned_seq": seq,
        "planned_end": offset,
        "planned_flush": 0,
        "watermark": watermark,
        "log_end": log_end,
        "records": records,
        "late": late,
        "updated_at": now,
        "failures": 0,
        "last_error": None,
    }
    update = {
        **_excluded(
            conn,
            "seq",
            "offset",
            "planned_seq",
            "planned_end",
            "planned_flush",
            "watermark",
            "log_end",
            "updated_at",
            "failures",
            "last_error",
        ),
        **_added(conn, stream_checkpoints, "records", "late"),
    }
    insert_rows(conn, stream_checkpoints, [row], on_conflict=(("pipeline", "partition"), update))
    gone = [slot for slot, data in state.items() if data is None]
    if gone:
        s = stream_state.c
        conn.execute(
            delete(stream_state).where(
                and_(s.pipeline == pipeline, s.partition == partition, s.slot.in_(gone))
            )
        )
    kept = [
        {"pipeline": pipeline, "partition": partition, "slot": slot, "data": data}
        for slot, data in state.items()
        if data is not None
    ]
    insert_rows(
        conn,
        stream_state,
        kept,
        on_conflict=(("pipeline", "partition", "slot"), _excluded(conn, "data")),
    )
    minute = int(now // 60)
    values = ("records_in", "records_out", "bytes_in", "bytes_out", "late")
    insert_rows(
        conn,
        stream_stats,
        [
            {
                "pipeline": pipeline,
                "stage": count.stage,
                "minute": minute,
                **{name: getattr(count, name) for name in values},
            }
            for count in counts
        ],
        on_conflict=(("pipeline", "stage", "minute"), _added(conn, stream_stats, *values)),
    )


def record_failure(conn: Connection, pipeline: str, partition: int, error: str) -> None:
    """A batch failed (it is retried from the last commit): count it and keep why."""
    row = {
        "pipeline": pipeline,
        "partition": partition,
        "seq": 0,
        "offset": 0,
        "records": 0,
        "late": 0,
        "updated_at": time.time(),
        "failures": 1,
        "last_error": error[:4000],
    }
    update = {
        **_excluded(conn, "last_error", "updated_at"),
        **_added(conn, stream_checkpoints, "failures"),
    }
    insert_rows(conn, stream_checkpoints, [row], on_conflict=(("pipeline", "partition"), update))


def record_health(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Replace the health rows of stream components (see `schema.stream_health`)."""
    columns = ("status", "failures", "restarts", "rejected", "last_error", "since", "updated_at")
    rows = [
        {**row, "last_error": (row.get("last_error") or None) and row["last_error"][:4000]}
        for row in rows
    ]
    insert_rows(conn, stream_health, rows, on_conflict=(("component",), _excluded(conn, *columns)))


def list_health(conn: Connection) -> list[dict[str, Any]]:
    query = select(stream_health).order_by(stream_health.c.component)
    return [dict(row) for row in conn.execute(query).mappings()]


def list_checkpoints(conn: Connection, pipeline: str | None = None) -> list[dict[str, Any]]:
    query = select(stream_checkpoints).order_by(
        stream_checkpoints.c.pipeline, stream_checkpoints.c.partition
    )
    if pipeline is not None:
        query = query.where(stream_checkpoints.c.pipeline == pipeline)
    return [dict(row) for row in conn.execute(query).mappings()]


def read_stats(
    conn: Connection, pipeline: str | None = None, since_minute: int | None = None
) -> list[dict[str, Any]]:
    t = stream_stats.c
    query = select(stream_stats).order_by(t.pipeline, t.minute, t.stage)
    if pipeline is not None:
        query = query.where(t.pipeline == pipeline)
    if since_minute is not None:
        query = query.where(t.minute >= since_minute)
    return [dict(row) for row in conn.execute(query).mappings()]


def reset_pipeline(conn: Connection, pipeline: str) -> None:
    """Forget a pipeline's offsets and state (it starts over from the log's retention start)."""
    for table in (stream_checkpoints, stream_state):
        conn.execute(delete(table).where(table.c.pipeline == pipeline))
