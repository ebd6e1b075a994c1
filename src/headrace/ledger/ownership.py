"""Which coordinator drives a workflow execution or polls a stream source.

Several coordinators may share one ledger (PostgreSQL). Invocations are shared out row by row
(`Ledger.claim`, SKIP LOCKED); an execution's interpreter and a source's position live in one
process's memory, so each is owned by one coordinator at a time through a renewable lease here.
A lease is free when its holder released it, when the holder was a process of this host that no
longer exists (a `kill -9` frees it at once), or, for a holder on another host, when it was not
renewed for `ttl` seconds. Holders renew theirs on every look (`take`).

Rows are (kind, name): kind "execution" (name: the execution id) or "source" (the source name).
Pipelines have their own leases, with flush requests beside them (`ledger.pipeline_leases`).

The table lives on its own MetaData, created when first used.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable

from sqlalchemy import (
    Column,
    Connection,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from headrace.ledger import Ledger
from headrace.ledger.db import create_tables
from headrace.ledger.liveness import holder_alive

__all__ = ["KINDS", "ensure_tables", "holders", "release", "take"]

KINDS = ("execution", "source")

metadata = MetaData()

ownership = Table(
    "ownership",
    metadata,
    Column("kind", String(16), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("owner", String(255), nullable=False),  # the coordinator id
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("expires_at", Float, nullable=False),
)

_ready: set[str] = set()  # ledger URLs whose table exists


def ensure_tables(ledger: Ledger) -> None:
    if ledger.url not in _ready:
        create_tables(metadata, ledger.engine)
        _ready.add(ledger.url)


def take(conn: Connection, kind: str, names: Iterable[str], owner: str, *, ttl: float) -> set[str]:
    """Take or renew the leases of `names` for `owner`; returns the names `owner` holds now.

    Names held by another live owner are left to it, and so are rows another coordinator has
    locked this moment (it is renewing or taking them): asked again next time."""
    if kind not in KINDS:
        raise ValueError(f"ownership kind {kind!r}: use one of {', '.join(KINDS)}")
    wanted = sorted(set(names))
    if not wanted:
        return set()
    now = time.time()
    mine = {
        "owner": owner,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "expires_at": now + ttl,
    }
    held: set[str] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = {
            r["name"]: r
            for r in conn.execute(
                select(ownership)
                .where(ownership.c.kind == kind, ownership.c.name.in_(chunk))
                .order_by(ownership.c.name)
                # a row another coordinator is looking at is left for this time: no waiting
                # inside a turn, so no deadlock with the turn's other locks
                .with_for_update(skip_locked=True)
            ).mappings()
        }
        busy = {
            r.name: r.owner
            for r in conn.execute(
                select(ownership.c.name, ownership.c.owner).where(
                    ownership.c.kind == kind,
                    ownership.c.name.in_([n for n in chunk if n not in rows]),
                )
            )
        }
        held.update(n for n, o in busy.items() if o == owner)  # ours; renewed next time
        free = [n for n, r in rows.items() if r["owner"] == owner or not _alive(r, now)]
        if free:
            conn.execute(
                update(ownership)
                .where(ownership.c.kind == kind, ownership.c.name.in_(free))
                .values(**mine)
            )
            held.update(free)
        for name in chunk:
            if name in rows or name in busy:
                continue
            try:
                with conn.begin_nested():
                    conn.execute(insert(ownership).values(kind=kind, name=name, **mine))
                held.add(name)
            except IntegrityError:  # another coordinator inserted it first: it holds it
                pass
    return held


def holders(conn: Connection, kind: str) -> dict[str, str]:
    """name → owner of the live leases of `kind`."""
    now = time.time()
    rows = conn.execute(select(ownership).where(ownership.c.kind == kind)).mappings()
    return {r["name"]: r["owner"] for r in rows if _alive(r, now)}


def release(
    conn: Connection, owner: str, kind: str | None = None, names: Iterable[str] = ()
) -> None:
    """Give up `owner`'s leases (of `kind`, of `names` when given)."""
    cond = ownership.c.owner == owner
    if kind is not None:
        cond = and_(cond, ownership.c.kind == kind)
    chosen = list(names)
    if chosen:
        cond = and_(cond, ownership.c.name.in_(chosen))
    conn.execute(delete(ownership).where(cond))


def _alive(row: dict, now: float) -> bool:
    if row["host"] == socket.gethostname():
        # a live process here holds it however long its turn takes, a dead one not at all
        return holder_alive(row["host"], row["pid"], None)
    return row["expires_at"] >= now
