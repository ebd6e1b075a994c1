"""Where each stream source is, and the poll it may not have finished delivering.

A row per source: its `state()` (the objects a file source has read, an HTTP source's backoff)
and the sequence number of its next poll. A poll that returned records is written here, with
the source's state after it, before any of its records is appended anywhere (`begin_poll`);
its appends carry (the row's producer, the poll's sequence), so appending them again writes
nothing. Once every record is delivered the poll is cleared (`finish_poll`). A coordinator
that died in between finds the poll here and delivers it again: nothing the source already
read is read twice, nothing it returned is lost.

The producer is the source name and a token made when the row was, so a ledger made afresh
beside an old stream log never meets the log's idempotency records of the old one.

The table lives on its own MetaData, created when first used.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)

from headrace.ledger import Ledger
from headrace.ledger.db import create_tables, to_json

__all__ = ["PendingPoll", "Position", "begin_poll", "ensure_tables", "finish_poll", "load", "save"]

metadata = MetaData()

source_positions = Table(
    "source_positions",
    metadata,
    Column("source", String(255), primary_key=True),
    Column("producer", String(255), nullable=False),  # source name + a token of this row
    Column("state", Text, nullable=False),  # JSON: the source's state()
    Column("sequence", Integer, nullable=False),  # the next poll's
    Column("pending_sequence", Integer),  # a poll written but maybe not delivered, and ...
    Column("pending_records", LargeBinary),  # ... its records (Arrow IPC), ...
    Column("pending_rejected", Text),  # ... and the records it set aside, JSON [[record, why]]
)


@dataclass(frozen=True)
class PendingPoll:
    sequence: int
    records: bytes | None
    rejected: list[tuple[Any, str]]


@dataclass(frozen=True)
class Position:
    producer: str
    state: dict[str, Any] | None  # None: never saved
    sequence: int
    pending: PendingPoll | None


_ready: set[str] = set()  # ledger URLs whose table exists


def ensure_tables(ledger: Ledger) -> None:
    if ledger.url not in _ready:
        create_tables(metadata, ledger.engine)
        _ready.add(ledger.url)


def load(conn: Connection, source: str) -> Position:
    """The source's row, made (with a new producer token) when there is none."""
    row = (
        conn.execute(select(source_positions).where(source_positions.c.source == source))
        .mappings()
        .first()
    )
    if row is None:
        producer = f"source:{source}:{uuid.uuid4().hex[:12]}"
        conn.execute(
            insert(source_positions).values(
                source=source, producer=producer, state="null", sequence=0
            )
        )
        return Position(producer, None, 0, None)
    pending = None
    if row["pending_sequence"] is not None:
        rejected = json.loads(row["pending_rejected"] or "[]")
        pending = PendingPoll(
            row["pending_sequence"],
            row["pending_records"],
            [(record, reason) for record, reason in rejected],
        )
    return Position(row["producer"], json.loads(row["state"]), row["sequence"], pending)


def save(conn: Connection, source: str, state: dict[str, Any]) -> None:
    """The source's state after a poll that returned nothing to deliver."""
    conn.execute(
        update(source_positions)
        .where(source_positions.c.source == source)
        .values(state=to_json(state))
    )


def begin_poll(
    conn: Connection,
    source: str,
    sequence: int,
    state: dict[str, Any],
    records: bytes | None,
    rejected: list[tuple[Any, str]],
) -> None:
    """Poll `sequence` returned `records` (and set `rejected` aside); `state` is after it."""
    conn.execute(
        update(source_positions)
        .where(source_positions.c.source == source)
        .values(
            state=to_json(state),
            sequence=sequence + 1,
            pending_sequence=sequence,
            pending_records=records,
            pending_rejected=to_json([[record, reason] for record, reason in rejected]),
        )
    )


def finish_poll(conn: Connection, source: str, sequence: int) -> None:
    """Every record of poll `sequence` is delivered."""
    conn.execute(
        update(source_positions)
        .where(
            source_positions.c.source == source,
            source_positions.c.pending_sequence == sequence,
        )
        .values(pending_sequence=None, pending_records=None, pending_rejected=None)
    )
