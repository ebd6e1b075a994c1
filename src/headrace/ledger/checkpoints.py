"""Stream pipeline checkpoints: offsets, operator state and per-stage counters.

Which records batch `seq` holds is fixed in the ledger (its plan) before any sink sees it;
`commit_batch` then records the new offset, the operators' state and the counters together. A
crash in between replays the planned range with the state of the previous commit, so every sink
receives identical output under the same batch number and can skip or overwrite what it already
wrote. The plan is written by `plan_batch` in a transaction of its own, or, in the common case,
by the commit of the batch before (`next_end`): then a batch costs one transaction.

Operator state is kept in slots. A small slot is stored whole (`stream_state`, rewritten when it
changed); a keyed slot is a base (its `stream_state` row, which records the batch it is valid
from) plus the deltas of the later batches that changed it, one `stream_state_changes` row per
batch holding all of that batch's deltas (one row costs the commit less than one per slot), so
a commit writes what changed. `compact_changes`
folds rows into new bases in a transaction of its own, never in a batch's: the bases and the
rows they replace change together, so a crash leaves either the old bases with their rows or
the new ones. What a row's bytes hold is the stream side's business (`streams.changelog`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Table, and_, delete, select
from sqlalchemy.engine import Dialect

from headrace.ledger.db import insert_rows
from headrace.ledger.schema import (
    stream_checkpoints,
    stream_health,
    stream_late_windows,
    stream_state,
    stream_state_changes,
    stream_stats,
)


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
    state: dict[str, bytes] = field(default_factory=dict)  # whole slots and keyed slots' bases
    changes: list[tuple[int, bytes]] = field(default_factory=list)  # (seq, the batch's deltas)

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
    #: late records by the window they missed: (reason, start µs, end µs) -> records
    late_windows: dict[tuple[str, int, int], int] = field(default_factory=dict)


def _excluded(conn: Connection, *columns: str) -> dict[str, str]:
    return _updates(conn.dialect, None, columns)


def _added(conn: Connection, table: Table, *columns: str) -> dict[str, str]:
    return _updates(conn.dialect, table.name, columns)


@functools.lru_cache(maxsize=64)
def _updates(dialect: Dialect, added_to: str | None, columns: tuple[str, ...]) -> dict[str, str]:
    """SET expressions: take the new value, or (`added_to`) add it to the stored one. Made
    once per statement, which runs with every batch."""
    quote = dialect.identifier_preparer.quote
    if added_to is None:
        return {c: f"excluded.{quote(c)}" for c in columns}
    return {c: f"{quote(added_to)}.{quote(c)} + excluded.{quote(c)}" for c in columns}


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
    d = stream_state_changes.c
    checkpoint.changes = [
        (seq, bytes(data))
        for seq, data in conn.execute(
            select(d.seq, d.data)
            .where(and_(d.pipeline == pipeline, d.partition == partition))
            .order_by(d.seq)
        )
    ]
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
    changes: bytes | None = None,
    counts: Sequence[StageCounts] = (),
    next_end: int | None = None,
) -> None:
    """Make batch `seq` durable: offset, whole state slots (None deletes a slot), the deltas of
    its keyed slots (`changes`) and counters; with `next_end`, also plan batch seq + 1 as
    [offset, next_end)."""
    now = time.time()
    row = {
        "pipeline": pipeline,
        "partition": partition,
        "seq": seq,
        "offset": offset,
        "planned_seq": seq if next_end is None else seq + 1,
        "planned_end": offset if next_end is None else next_end,
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
    insert_rows(
        conn, stream_checkpoints, [row], on_conflict=(("pipeline", "partition"), update),
        driver=True,
    )  # fmt: skip
    gone = [slot for slot, data in state.items() if data is None]
    if gone:
        s = stream_state.c
        conn.execute(
            delete(stream_state).where(
                and_(s.pipeline == pipeline, s.partition == partition, s.slot.in_(gone))
            )
        )
    if changes is not None:
        change = {"pipeline": pipeline, "partition": partition, "seq": seq, "data": changes}
        insert_rows(conn, stream_state_changes, [change], driver=True)
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
        driver=True,
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
        driver=True,
    )
    late = [
        {
            "pipeline": pipeline,
            "stage": count.stage,
            "reason": reason,
            "window_start": start,
            "window_end": end,
            "records": n,
            "updated_at": now,
        }
        for count in counts
        for (reason, start, end), n in sorted(count.late_windows.items())
    ]
    if late:
        key = ("pipeline", "stage", "reason", "window_start", "window_end")
        update = {
            **_excluded(conn, "updated_at"),
            **_added(conn, stream_late_windows, "records"),
        }
        insert_rows(conn, stream_late_windows, late, on_conflict=(key, update), driver=True)


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


def read_late_windows(
    conn: Connection, pipeline: str | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    """Late records per window, the latest windows first (`limit` of them), with the window
    bounds in epoch seconds (None for records that had no event time)."""
    t = stream_late_windows.c
    query = select(stream_late_windows).order_by(
        t.window_start.desc(), t.pipeline, t.stage, t.reason
    )
    if pipeline is not None:
        query = query.where(t.pipeline == pipeline)
    out = []
    for row in conn.execute(query.limit(limit)).mappings():
        item = dict(row)
        timed = item["reason"] != "null_time"
        item["window_start"] = item["window_start"] / 1e6 if timed else None
        item["window_end"] = item["window_end"] / 1e6 if timed else None
        out.append(item)
    return out


def read_changes(
    conn: Connection, pipeline: str, partition: int, upto: int
) -> list[tuple[int, bytes]]:
    """The changelog rows of batches up to `upto`, in seq order (for compaction)."""
    d = stream_state_changes.c
    where = and_(d.pipeline == pipeline, d.partition == partition, d.seq <= upto)
    rows = conn.execute(select(d.seq, d.data).where(where).order_by(d.seq))
    return [(seq, bytes(data)) for seq, data in rows]


def read_bases(
    conn: Connection, pipeline: str, partition: int, slots: Sequence[str]
) -> dict[str, bytes]:
    """The `stream_state` rows of these slots that exist."""
    s = stream_state.c
    rows = conn.execute(
        select(s.slot, s.data).where(
            and_(s.pipeline == pipeline, s.partition == partition, s.slot.in_(list(slots)))
        )
    )
    return {slot: bytes(data) for slot, data in rows}


def compact_changes(
    conn: Connection,
    pipeline: str,
    partition: int,
    folded: Sequence[int],
    bases: Mapping[str, bytes],
) -> bool:
    """Replace keyed slots' bases by `bases`, which fold in the changelog rows of batches
    `folded` (read with `read_changes`), and delete those rows. Changes nothing and returns
    False when the rows up to the last of them are no longer exactly those (another compaction
    or a reset came first): then `bases` were computed from state that is gone."""
    if not folded:
        return False
    d = stream_state_changes.c
    where = and_(d.pipeline == pipeline, d.partition == partition, d.seq <= max(folded))
    present = conn.execute(select(d.seq).where(where).order_by(d.seq)).scalars().all()
    if list(present) != sorted(folded):
        return False
    if conn.execute(delete(stream_state_changes).where(where)).rowcount != len(folded):
        raise RuntimeError("the changelog changed during compaction")  # rolls the transaction back
    insert_rows(
        conn,
        stream_state,
        [
            {"pipeline": pipeline, "partition": partition, "slot": slot, "data": data}
            for slot, data in bases.items()
        ],
        on_conflict=(("pipeline", "partition", "slot"), _excluded(conn, "data")),
    )
    return True


def reset_pipeline(conn: Connection, pipeline: str) -> None:
    """Forget a pipeline's offsets and state (it starts over from the log's retention start)."""
    for table in (stream_checkpoints, stream_state, stream_state_changes):
        conn.execute(delete(table).where(table.c.pipeline == pipeline))
