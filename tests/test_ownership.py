"""Leases on executions and sources shared by coordinators on one ledger."""

from __future__ import annotations

import subprocess
import sys
import time

from sqlalchemy import update

from headrace.ledger import ownership
from headrace.ledger.ownership import ownership as table


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_one_owner_at_a_time_until_it_dies(ledger):
    ownership.ensure_tables(ledger)
    with ledger.begin() as conn:
        assert ownership.take(conn, "execution", ["e1", "e2"], "A", ttl=60) == {"e1", "e2"}
    with ledger.begin() as conn:
        # A is this very process, alive: B gets only what nobody holds
        assert ownership.take(conn, "execution", ["e1", "e2", "e3"], "B", ttl=60) == {"e3"}
        assert ownership.take(conn, "execution", ["e1"], "A", ttl=60) == {"e1"}  # renewed
        assert ownership.holders(conn, "execution") == {"e1": "A", "e2": "A", "e3": "B"}
    with ledger.begin() as conn:  # A was killed (-9): its leases are free at once
        conn.execute(update(table).where(table.c.owner == "A").values(pid=_dead_pid()))
    with ledger.begin() as conn:
        assert ownership.take(conn, "execution", ["e1", "e2"], "B", ttl=60) == {"e1", "e2"}


def test_a_holder_on_another_host_keeps_its_lease_until_it_expires(ledger):
    ownership.ensure_tables(ledger)
    with ledger.begin() as conn:
        ownership.take(conn, "source", ["feed"], "far", ttl=60)
        conn.execute(update(table).values(host="elsewhere.example"))
    with ledger.begin() as conn:
        assert ownership.take(conn, "source", ["feed"], "near", ttl=60) == set()
        conn.execute(update(table).values(expires_at=time.time() - 1))
    with ledger.begin() as conn:
        assert ownership.take(conn, "source", ["feed"], "near", ttl=60) == {"feed"}
        # kinds are separate: an execution may share a source's name
        assert ownership.take(conn, "execution", ["feed"], "far", ttl=60) == {"feed"}


def test_release_frees_only_the_owners_leases(ledger):
    ownership.ensure_tables(ledger)
    with ledger.begin() as conn:
        ownership.take(conn, "execution", ["e1"], "A", ttl=60)
        ownership.take(conn, "execution", ["e2"], "B", ttl=60)
        ownership.release(conn, "A", "execution")
        assert ownership.holders(conn, "execution") == {"e2": "B"}
        assert ownership.take(conn, "execution", ["e1"], "C", ttl=60) == {"e1"}
