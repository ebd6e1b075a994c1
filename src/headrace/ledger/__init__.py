"""The ledger: the coordinator's only durable state.

Each method that changes state is one transaction (or runs inside the caller's transaction when
given a connection), so a crash at any point leaves either the old state or the new one.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, func, insert, or_, select, update
from sqlalchemy.engine import Engine

from headrace.ledger import schema
from headrace.ledger.db import (
    add_indexes,
    create_ledger_engine,
    create_tables,
    insert_rows,
    is_postgres,
    to_json,
)
from headrace.ledger.liveness import holder_alive
from headrace.ledger.schema import (
    attempts,
    coordinators,
    dead_letters,
    events,
    invocations,
    metadata,
    objects,
)

__all__ = ["Claimed", "Ledger", "NewInvocation", "schema"]


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass(slots=True)
class NewInvocation:
    function: str
    payload: Any
    max_attempts: int
    source: str = "api"
    event_id: str | None = None
    idempotency_key: str | None = None
    id: str | None = None
    execution_id: str | None = None
    not_before: float | None = None  # do not run before this time (a delayed retry)
    timeout: float | None = None


@dataclass(slots=True)
class Claimed:
    id: str
    function: str
    payload: str  # JSON text, decoded by the worker
    attempt: int  # the number this attempt will have (1-based)
    max_attempts: int
    created_at: float
    timeout: float | None = None
    leased_at: float | None = None  # the lease's fence: a result counts only under this lease


class Ledger:
    def __init__(self, url: str, *, sync: str = "normal") -> None:
        self.url = url
        self.engine: Engine = create_ledger_engine(url, sync=sync)
        self.postgres = is_postgres(self.engine)
        create_tables(metadata, self.engine)
        add_indexes(metadata, self.engine)
        # reads go through their own engine so that, on SQLite, they never take the write lock
        self.reader: Engine = (
            self.engine if self.postgres else create_ledger_engine(url, sync=sync, writer=False)
        )

    def close(self) -> None:
        self.engine.dispose()
        self.reader.dispose()

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _tx(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is not None:
            yield conn
        else:
            with self.engine.begin() as own:
                yield own

    # -- coordinators -------------------------------------------------------------------------

    def register_coordinator(self, info: dict[str, Any]) -> str:
        cid = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        now = time.time()
        with self.begin() as conn:
            conn.execute(
                insert(coordinators).values(
                    id=cid,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    started_at=now,
                    heartbeat_at=now,
                    info=to_json(info),
                )
            )
        return cid

    def heartbeat(self, cid: str, lease_seconds: float, conn: Connection | None = None) -> None:
        """Keep this coordinator's leases: one statement, however many invocations it holds."""
        now = time.time()
        with self._tx(conn) as c:
            c.execute(update(coordinators).where(coordinators.c.id == cid).values(heartbeat_at=now))
            c.execute(
                update(invocations)
                .where(invocations.c.lease_owner == cid, invocations.c.status == "running")
                .values(lease_expires_at=now + lease_seconds)
            )

    def mark_stopped(self, cid: str) -> None:
        with self.begin() as conn:
            conn.execute(
                update(coordinators).where(coordinators.c.id == cid).values(stopped_at=time.time())
            )

    def live_coordinators(self, stale_after: float) -> list[dict[str, Any]]:
        cutoff = time.time() - stale_after
        with self.reader.connect() as conn:
            rows = conn.execute(
                select(coordinators).where(
                    coordinators.c.stopped_at.is_(None), coordinators.c.heartbeat_at >= cutoff
                )
            ).mappings()
            return [dict(r) for r in rows if holder_alive(r["host"], r["pid"], r["stopped_at"])]

    def recover_leases(self, me: str) -> int:
        """Return to `pending` every running invocation whose owner is gone.

        An owner is gone when its lease expired, or when it ran on this host and its process no
        longer exists (so a restart after `kill -9` resumes at once instead of waiting out the
        lease). The interrupted attempt is recorded as `abandoned` and does not use up a retry.
        """
        now = time.time()
        with self.begin() as conn:
            dead_owners = {
                r.id
                for r in conn.execute(
                    select(coordinators.c.id, coordinators.c.host, coordinators.c.pid).where(
                        coordinators.c.id != me, coordinators.c.stopped_at.is_(None)
                    )
                )
                if not holder_alive(r.host, r.pid, None)
            }
            cond = or_(
                invocations.c.lease_expires_at < now, invocations.c.lease_owner.in_(dead_owners)
            )
            released = self._release(conn, and_(invocations.c.lease_owner != me, cond), now)
            if dead_owners:
                conn.execute(
                    update(coordinators)
                    .where(coordinators.c.id.in_(dead_owners), coordinators.c.stopped_at.is_(None))
                    .values(stopped_at=now)
                )
            return released

    def running_attempts(self) -> set[tuple[str, int]]:
        """(invocation id, attempt number) of every attempt running now, whoever leased it."""
        with self.reader.connect() as conn:
            rows = conn.execute(
                select(invocations.c.id, invocations.c.attempts).where(
                    invocations.c.status == "running"
                )
            )
            return {(r.id, r.attempts + 1) for r in rows}

    def release_leases(self, owner: str) -> int:
        """Give back what `owner` still holds (a drain that ran out of time)."""
        with self.begin() as conn:
            return self._release(conn, invocations.c.lease_owner == owner, time.time())

    def _release(self, conn: Connection, which: Any, now: float) -> int:
        rows = conn.execute(
            select(invocations.c.id, invocations.c.function, invocations.c.attempts)
            .where(invocations.c.status == "running", which)
            # two coordinators recovering the same dead one's work: each row is released once
            .with_for_update(skip_locked=True)
        ).all()
        if not rows:
            return 0
        conn.execute(
            insert(attempts),
            [
                {
                    "invocation_id": r.id,
                    "number": r.attempts + 1,
                    "function": r.function,
                    "status": "abandoned",
                    "finished_at": now,
                    "error": "the coordinator stopped while this attempt ran; it is re-run",
                }
                for r in rows
            ],
        )
        conn.execute(
            update(invocations)
            .where(invocations.c.id.in_([r.id for r in rows]), invocations.c.status == "running")
            .values(status="pending", lease_owner=None, lease_expires_at=None, updated_at=now)
        )
        return len(rows)

    # -- objects and events -------------------------------------------------------------------

    def seen_versions(self, conn: Connection, keys: Sequence[tuple[str, str, str]]) -> set[tuple]:
        if not keys:
            return set()
        found: set[tuple] = set()
        for start in range(0, len(keys), 300):
            chunk = keys[start : start + 300]
            buckets = {k[0] for k in chunk}
            names = {k[1] for k in chunk}
            rows = conn.execute(
                select(objects.c.bucket, objects.c.key, objects.c.version).where(
                    objects.c.bucket.in_(buckets), objects.c.key.in_(names)
                )
            )
            found.update(tuple(r) for r in rows)
        return found & set(keys)

    def record_object(
        self,
        conn: Connection,
        *,
        bucket: str,
        key: str,
        version: str,
        size: int,
        etag: str,
        event_id: str,
    ) -> None:
        conn.execute(
            insert(objects).values(
                bucket=bucket,
                key=key,
                version=version,
                size=size,
                etag=etag,
                seen_at=time.time(),
                event_id=event_id,
            )
        )

    def record_event(
        self,
        conn: Connection,
        *,
        event_id: str,
        source: str,
        detail_type: str,
        subject: str | None,
        payload: Any,
        routed: int,
    ) -> None:
        conn.execute(
            insert(events).values(
                id=event_id,
                source=source,
                detail_type=detail_type,
                subject=subject,
                payload=to_json(payload),
                created_at=time.time(),
                routed=routed,
            )
        )

    def known_events(self, conn: Connection, ids: Sequence[str]) -> set[str]:
        """Which of these event ids the ledger holds already."""
        if not ids:
            return set()
        rows = conn.execute(select(events.c.id).where(events.c.id.in_(list(ids))))
        return {row[0] for row in rows}

    # -- invocations --------------------------------------------------------------------------

    def enqueue(
        self,
        items: Iterable[NewInvocation],
        conn: Connection | None = None,
        *,
        at: float | None = None,
    ) -> list[str]:
        now = time.time()
        rows = []
        for item in items:
            rows.append(
                {
                    "id": item.id or new_id(),
                    "function": item.function,
                    "payload": to_json(item.payload),
                    "status": "pending",
                    "attempts": 0,
                    "max_attempts": item.max_attempts,
                    "next_run_at": item.not_before or (at if at is not None else now),
                    "created_at": now,
                    "updated_at": now,
                    "event_id": item.event_id,
                    "idempotency_key": item.idempotency_key,
                    "source": item.source,
                    "execution_id": item.execution_id,
                    "timeout": item.timeout,
                }
            )
        if rows:
            with self._tx(conn) as c:
                insert_rows(c, invocations, rows)
        return [r["id"] for r in rows]

    def claim(
        self, conn: Connection, function: str, limit: int, owner: str, lease_seconds: float
    ) -> list[Claimed]:
        """Lease up to `limit` ready invocations of `function` for `owner`."""
        now = time.time()
        # Select then update, without RETURNING: SQLite builds older than 3.35 lack it, and
        # some wheels (ecCodes' eckit) load such a build into the process. The writer lock
        # (SQLite) or the row locks (Postgres, SKIP LOCKED) keep the pair atomic.
        pick = (
            select(
                invocations.c.id,
                invocations.c.function,
                invocations.c.payload,
                invocations.c.attempts,
                invocations.c.max_attempts,
                invocations.c.created_at,
                invocations.c.timeout,
            )
            .where(
                invocations.c.status == "pending",
                invocations.c.function == function,
                invocations.c.next_run_at <= now,
            )
            .order_by(invocations.c.next_run_at)
            .limit(limit)
        )
        if self.postgres:
            pick = pick.with_for_update(skip_locked=True)
        rows = conn.execute(pick).all()
        if not rows:
            return []
        conn.execute(
            update(invocations)
            .where(invocations.c.id.in_([r.id for r in rows]))
            .values(
                status="running",
                lease_owner=owner,
                lease_expires_at=now + lease_seconds,
                updated_at=now,
            )
        )
        return [
            Claimed(
                r.id,
                r.function,
                r.payload,
                r.attempts + 1,
                r.max_attempts,
                r.created_at,
                r.timeout,
                leased_at=now,
            )
            for r in rows
        ]

    def pending_functions(self, conn: Connection, now: float) -> set[str]:
        rows = conn.execute(
            select(invocations.c.function)
            .where(invocations.c.status == "pending", invocations.c.next_run_at <= now)
            .distinct()
        )
        return {r[0] for r in rows}

    def held(self, conn: Connection, owner: str, leases: dict[str, float]) -> set[str]:
        """Which of `leases` (invocation id → the `leased_at` of its claim) `owner` still holds.

        A lease is lost when another coordinator took the invocation over (this one looked dead
        or its lease expired); the attempt's result then must not be recorded: the ledger says
        the attempt was abandoned, and another attempt runs or ran."""
        held: set[str] = set()
        ids = list(leases)
        for start in range(0, len(ids), 500):
            pick = select(invocations.c.id, invocations.c.updated_at).where(
                invocations.c.id.in_(ids[start : start + 500]),
                invocations.c.lease_owner == owner,
                invocations.c.status == "running",
            )
            if self.postgres:
                pick = pick.with_for_update()
            held.update(r.id for r in conn.execute(pick) if r.updated_at == leases[r.id])
        return held

    def record_attempts(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        if rows:
            insert_rows(conn, attempts, rows)

    def finish(self, conn: Connection, owner: str, updates: list[dict[str, Any]]) -> int:
        """Apply the end of attempts. Each update: id, attempt, status, result, error, traceback,
        next_run_at, and `leased_at` from the claim when known. Only rows still leased by `owner`
        (under that very lease) change, so a result can never complete an invocation twice."""
        if not updates:
            return 0
        now = time.time()
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        sets = ", ".join(
            f"{c} = {mark}"
            for c in ("status", "attempts", "next_run_at", "result", "error", "traceback")
        )
        sql = (
            f"UPDATE invocations SET {sets}, finished_at = {mark}, lease_owner = NULL, "
            f"lease_expires_at = NULL, updated_at = {mark} "
            f"WHERE id = {mark} AND lease_owner = {mark} AND status = 'running' "
            f"AND updated_at = COALESCE({mark}, updated_at)"
        )
        params = [
            (
                u["status"],
                u["attempt"] if u.get("counted", True) else u["attempt"] - 1,
                u.get("next_run_at") or now,
                None if u.get("result") is None else to_json(u["result"]),
                u.get("error"),
                u.get("traceback"),
                now if u["status"] in ("succeeded", "dead") else None,
                now,
                u["id"],
                owner,
                u.get("leased_at"),
            )
            for u in updates
        ]
        # through the driver, like insert_rows: this runs for every finished attempt
        result = conn.exec_driver_sql(sql, params)
        # a workflow's failed task is the state machine's to handle (Retry/Catch), not the DLQ's
        dead = [u for u in updates if u["status"] == "dead" and u.get("dead_letter", True)]
        if dead:
            conn.execute(
                insert(dead_letters),
                [
                    {
                        "invocation_id": u["id"],
                        "function": u["function"],
                        "payload": u["payload"],
                        "error": u.get("error"),
                        "traceback": u.get("traceback"),
                        "attempts": u["attempt"],
                        "created_at": now,
                    }
                    for u in dead
                ],
            )
        return result.rowcount

    # -- reading ------------------------------------------------------------------------------

    def invocations_by_key(self, conn: Connection, keys: Sequence[str]) -> dict[str, dict]:
        """Invocations by idempotency key (a workflow task's token)."""
        out: dict[str, dict] = {}
        for start in range(0, len(keys), 500):
            rows = conn.execute(
                select(invocations).where(
                    invocations.c.idempotency_key.in_(list(keys[start : start + 500]))
                )
            ).mappings()
            out.update({r["idempotency_key"]: dict(r) for r in rows})
        return out

    def ended(self, conn: Connection, ids: Sequence[str]) -> dict[str, dict]:
        """Which of the invocations `ids` ended (succeeded or dead), whoever recorded it."""
        out: dict[str, dict] = {}
        for start in range(0, len(ids), 500):
            rows = conn.execute(
                select(invocations).where(
                    invocations.c.id.in_(list(ids[start : start + 500])),
                    invocations.c.status.in_(("succeeded", "dead")),
                )
            ).mappings()
            out.update({r["id"]: dict(r) for r in rows})
        return out

    def match_invocation_ids(
        self, given: str, *, dead_lettered: bool = False, limit: int = 5
    ) -> list[str]:
        """Ids of invocations whose id is `given` or starts with it, as people paste the first
        characters `headrace invocations` shows: the exact one alone when it exists, else up to
        `limit` (more than one: the prefix is ambiguous). `dead_lettered`: only invocations
        waiting in the dead-letter list. `%` and `_` in `given` are characters, not wildcards."""
        if not given:
            return []
        if dead_lettered:
            column = dead_letters.c.invocation_id
            base = select(column).where(dead_letters.c.redriven_at.is_(None))
        else:
            column = invocations.c.id
            base = select(column)
        with self.reader.connect() as conn:
            if conn.execute(base.where(column == given).limit(1)).first():
                return [given]
            found = base.where(column.startswith(given, autoescape=True)).order_by(column)
            return [r[0] for r in conn.execute(found.limit(limit))]

    def get_invocation(self, invocation_id: str) -> dict[str, Any] | None:
        with self.reader.connect() as conn:
            row = (
                conn.execute(select(invocations).where(invocations.c.id == invocation_id))
                .mappings()
                .first()
            )
            if row is None and invocation_id:
                # allow a unique prefix, as people paste the first characters of an id; `%` and
                # `_` in it are characters, not wildcards
                rows = (
                    conn.execute(
                        select(invocations)
                        .where(invocations.c.id.startswith(invocation_id, autoescape=True))
                        .limit(2)
                    )
                    .mappings()
                    .all()
                )
                row = rows[0] if len(rows) == 1 else None
            return dict(row) if row else None

    def list_invocations(
        self, *, function: str | None = None, status: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        query = (
            select(invocations, schema.last_attempt_ms())
            .order_by(invocations.c.created_at.desc())
            .limit(limit)
        )
        if function:
            query = query.where(invocations.c.function == function)
        if status:
            query = query.where(invocations.c.status == status)
        with self.reader.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def count_by_status(self, function: str | None = None) -> dict[str, int]:
        query = select(invocations.c.status, func.count()).group_by(invocations.c.status)
        if function:
            query = query.where(invocations.c.function == function)
        with self.reader.connect() as conn:
            return {status: n for status, n in conn.execute(query)}

    def list_attempts(
        self, *, invocation_id: str | None = None, function: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        query = select(attempts).order_by(attempts.c.id.desc()).limit(limit)
        if invocation_id:
            query = query.where(attempts.c.invocation_id == invocation_id)
        if function:
            query = query.where(attempts.c.function == function)
        with self.reader.connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
        rows.reverse()
        return rows

    def list_dead_letters(
        self, *, function: str | None = None, include_redriven: bool = False, limit: int = 100
    ) -> list[dict[str, Any]]:
        query = select(dead_letters).order_by(dead_letters.c.created_at).limit(limit)
        if function:
            query = query.where(dead_letters.c.function == function)
        if not include_redriven:
            query = query.where(dead_letters.c.redriven_at.is_(None))
        with self.reader.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def redrive(self, *, function: str | None = None, ids: Sequence[str] = ()) -> list[str]:
        """Send dead-lettered invocations back to `pending` with a fresh attempt budget."""
        now = time.time()
        with self.begin() as conn:
            query = select(dead_letters.c.invocation_id).where(dead_letters.c.redriven_at.is_(None))
            if function:
                query = query.where(dead_letters.c.function == function)
            if ids:
                query = query.where(dead_letters.c.invocation_id.in_(list(ids)))
            chosen = [r[0] for r in conn.execute(query)]
            if not chosen:
                return []
            conn.execute(
                update(dead_letters)
                .where(dead_letters.c.invocation_id.in_(chosen))
                .values(redriven_at=now)
            )
            conn.execute(
                update(invocations)
                .where(invocations.c.id.in_(chosen), invocations.c.status == "dead")
                .values(
                    status="pending",
                    attempts=0,
                    next_run_at=now,
                    error=None,
                    traceback=None,
                    finished_at=None,
                    updated_at=now,
                    source="redrive",
                )
            )
            return chosen
