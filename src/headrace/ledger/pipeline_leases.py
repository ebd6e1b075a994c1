"""Which process runs a pipeline, and the flushes asked of it.

One process at a time steps a pipeline's partitions: the one holding its lease here (the
coordinator, or `headrace streams flush` while no coordinator holds it). Checkpoints are written
by whoever runs the batch, with no fence of their own, so two runners of one pipeline would
overwrite each other's plans; the lease is what keeps them apart.

A lease is free when its holder released it, when the holder was a process of this host that
no longer exists (a `kill -9` frees it at once; one that is alive keeps it however long a batch
takes), or, for a holder on another host, when it was not renewed for `ttl` seconds. A holder
renews it while it runs.

A flush asked of a pipeline whose lease someone else holds is a row of `pipeline_flushes`: the
holder runs it between two micro-batches, so never beside a batch of its own, and writes the
outcome back for the asker to read.

The tables live on their own MetaData, created when first used.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from headrace.ledger import Ledger
from headrace.ledger.db import create_tables, to_json
from headrace.ledger.liveness import holder_alive

__all__ = [
    "FlushOutcome",
    "Holder",
    "acquire",
    "cancel_flush",
    "ensure_tables",
    "finish_flush",
    "flush_outcome",
    "holder",
    "new_owner",
    "pending_flushes",
    "release",
    "request_flush",
]

metadata = MetaData()

pipeline_leases = Table(
    "pipeline_leases",
    metadata,
    Column("pipeline", String(128), primary_key=True),
    Column("owner", String(255), nullable=False),  # host-pid-token of the holder
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("purpose", String(32), nullable=False),  # "coordinator" | "flush"
    Column("expires_at", Float, nullable=False),
)

pipeline_flushes = Table(
    "pipeline_flushes",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("pipeline", String(128), nullable=False),
    Column("requested_at", Float, nullable=False),
    Column("done_at", Float),
    Column("result", Text),  # JSON, when it succeeded
    Column("error", Text),  # why it failed, when it did
)


@dataclass(frozen=True)
class Holder:
    """Who holds a pipeline's lease."""

    owner: str
    host: str
    pid: int
    purpose: str
    expires_at: float

    def describe(self) -> str:
        what = "the coordinator" if self.purpose == "coordinator" else f"a {self.purpose}"
        return f"{what} pid {self.pid} on {self.host}"


@dataclass(frozen=True)
class FlushOutcome:
    done: bool
    result: dict[str, Any] | None = None
    error: str | None = None


_ready: set[str] = set()  # ledger URLs whose tables exist


def ensure_tables(ledger: Ledger) -> None:
    if ledger.url not in _ready:
        create_tables(metadata, ledger.engine)
        _ready.add(ledger.url)


def new_owner() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def acquire(
    conn: Connection, pipeline: str, owner: str, *, ttl: float, purpose: str
) -> Holder | None:
    """Take or renew the lease of `pipeline` for `owner`; None when it is ours now, else the
    live holder."""
    now = time.time()
    row = (
        conn.execute(
            select(pipeline_leases).where(pipeline_leases.c.pipeline == pipeline).with_for_update()
        )
        .mappings()
        .first()
    )
    mine = {
        "owner": owner,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "purpose": purpose,
        "expires_at": now + ttl,
    }
    if row is None:
        try:
            with conn.begin_nested():
                conn.execute(insert(pipeline_leases).values(pipeline=pipeline, **mine))
        except IntegrityError:  # another process inserted it first: it holds the lease
            row = (
                conn.execute(select(pipeline_leases).where(pipeline_leases.c.pipeline == pipeline))
                .mappings()
                .first()
            )
            return None if row is None else _holder(row)
        return None
    if row["owner"] != owner and _held(row, now):
        return _holder(row)
    conn.execute(
        update(pipeline_leases).where(pipeline_leases.c.pipeline == pipeline).values(**mine)
    )
    return None


def holder(conn: Connection, pipeline: str) -> Holder | None:
    """The live holder of `pipeline`'s lease, or None when it is free."""
    row = (
        conn.execute(select(pipeline_leases).where(pipeline_leases.c.pipeline == pipeline))
        .mappings()
        .first()
    )
    return _holder(row) if row is not None and _held(row, time.time()) else None


def release(conn: Connection, pipelines: Iterable[str], owner: str) -> None:
    conn.execute(
        delete(pipeline_leases).where(
            pipeline_leases.c.pipeline.in_(list(pipelines)), pipeline_leases.c.owner == owner
        )
    )


def request_flush(conn: Connection, pipeline: str) -> str:
    ident = uuid.uuid4().hex
    conn.execute(
        insert(pipeline_flushes).values(id=ident, pipeline=pipeline, requested_at=time.time())
    )
    return ident


def pending_flushes(conn: Connection, pipelines: Iterable[str]) -> list[tuple[str, str]]:
    """(id, pipeline) of the flushes not done yet, oldest first."""
    rows = conn.execute(
        select(pipeline_flushes.c.id, pipeline_flushes.c.pipeline)
        .where(
            pipeline_flushes.c.done_at.is_(None),
            pipeline_flushes.c.pipeline.in_(list(pipelines)),
        )
        .order_by(pipeline_flushes.c.requested_at)
    )
    return [(r.id, r.pipeline) for r in rows]


def finish_flush(
    conn: Connection, ident: str, *, result: dict[str, Any] | None = None, error: str | None = None
) -> None:
    conn.execute(
        update(pipeline_flushes)
        .where(pipeline_flushes.c.id == ident)
        .values(
            done_at=time.time(),
            result=None if result is None else to_json(result),
            error=error,
        )
    )


def cancel_flush(conn: Connection, ident: str, reason: str) -> bool:
    """Mark a flush not run yet as failed with `reason`; False when it was done already."""
    done = conn.execute(
        update(pipeline_flushes)
        .where(pipeline_flushes.c.id == ident, pipeline_flushes.c.done_at.is_(None))
        .values(done_at=time.time(), error=reason)
    )
    return done.rowcount == 1


def flush_outcome(conn: Connection, ident: str) -> FlushOutcome:
    row = conn.execute(select(pipeline_flushes).where(pipeline_flushes.c.id == ident)).first()
    if row is None or row.done_at is None:
        return FlushOutcome(False)
    return FlushOutcome(True, json.loads(row.result) if row.result else None, row.error)


def _held(row: Any, now: float) -> bool:
    if row["host"] == socket.gethostname():
        # a live process here holds it however long its batch takes, a dead one not at all
        return holder_alive(row["host"], row["pid"], None)
    return row["expires_at"] >= now


def _holder(row: Any) -> Holder:
    return Holder(row["owner"], row["host"], row["pid"], row["purpose"], row["expires_at"])
