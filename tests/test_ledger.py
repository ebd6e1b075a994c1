import os
import socket
import subprocess
import sys
import threading
import time

from sqlalchemy import insert, select, update

from headrace.ledger import Ledger, NewInvocation
from headrace.ledger.schema import coordinators, invocations


def enqueue(ledger, n, function="f", max_attempts=3):
    return ledger.enqueue(
        [NewInvocation(function, {"i": i}, max_attempts=max_attempts) for i in range(n)]
    )


def test_sqlite_uses_wal(tmp_path):
    led = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    with led.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    led.close()


def test_claim_finish_roundtrip(ledger):
    ids = enqueue(ledger, 5)
    me = ledger.register_coordinator({})
    with ledger.begin() as conn:
        claimed = ledger.claim(conn, "f", 3, me, 30)
    assert len(claimed) == 3 and all(c.attempt == 1 for c in claimed)
    with ledger.begin() as conn:
        assert len(ledger.claim(conn, "f", 10, me, 30)) == 2
        assert ledger.claim(conn, "f", 10, me, 30) == []
    updates = [
        {
            "id": c.id,
            "attempt": 1,
            "status": "succeeded",
            "result": {"ok": True},
            "function": "f",
            "payload": c.payload,
        }
        for c in claimed
    ]
    with ledger.begin() as conn:
        assert ledger.finish(conn, me, updates) == 3
        # a second completion of the same attempts changes nothing
        assert ledger.finish(conn, me, updates) == 0
    counts = ledger.count_by_status("f")
    assert counts == {"succeeded": 3, "running": 2}
    row = ledger.get_invocation(claimed[0].id)
    assert row["result"] == '{"ok":true}' and row["attempts"] == 1
    assert ledger.get_invocation(ids[0][:8])["id"] == ids[0]


def test_an_id_prefix_is_literal_not_a_like_pattern(ledger):
    (only,) = enqueue(ledger, 1)
    assert ledger.get_invocation(only[:6])["id"] == only
    # `%` and `_` would match any id (the only one here) were they LIKE wildcards
    for pattern in ("%", "_", only[:3] + "%", "_" + only[1:6], ""):
        assert ledger.get_invocation(pattern) is None, pattern


def test_only_the_lease_owner_can_finish(ledger):
    (inv,) = enqueue(ledger, 1)
    owner = ledger.register_coordinator({})
    with ledger.begin() as conn:
        (_c,) = ledger.claim(conn, "f", 1, owner, 30)
        stale = {"id": inv, "attempt": 1, "status": "succeeded", "function": "f", "payload": "{}"}
        assert ledger.finish(conn, "someone-else", [stale]) == 0
    assert ledger.get_invocation(inv)["status"] == "running"


def test_retry_then_dead_letter_then_redrive(ledger):
    (inv,) = enqueue(ledger, 1, max_attempts=2)
    me = ledger.register_coordinator({})
    for attempt, status in ((1, "pending"), (2, "dead")):
        with ledger.begin() as conn:
            (c,) = ledger.claim(conn, "f", 1, me, 30)
            assert c.attempt == attempt
            ledger.finish(
                conn,
                me,
                [
                    {
                        "id": inv,
                        "attempt": attempt,
                        "status": status,
                        "error": "ValueError: x",
                        "function": "f",
                        "payload": c.payload,
                        "next_run_at": 0,
                    }
                ],
            )
    dead = ledger.list_dead_letters()
    assert [d["invocation_id"] for d in dead] == [inv] and dead[0]["attempts"] == 2
    assert ledger.redrive(function="f") == [inv]
    assert ledger.list_dead_letters() == []
    row = ledger.get_invocation(inv)
    assert row["status"] == "pending" and row["attempts"] == 0 and row["source"] == "redrive"
    # fails again: a second dead-letter row, the first stays as history
    with ledger.begin() as conn:
        (c,) = ledger.claim(conn, "f", 1, me, 30)
        ledger.finish(
            conn,
            me,
            [
                {
                    "id": inv,
                    "attempt": 1,
                    "status": "dead",
                    "error": "again",
                    "function": "f",
                    "payload": c.payload,
                }
            ],
        )
    assert len(ledger.list_dead_letters(include_redriven=True)) == 2


def test_retry_waits_for_next_run_at(ledger):
    (inv,) = enqueue(ledger, 1)
    me = ledger.register_coordinator({})
    with ledger.begin() as conn:
        ledger.claim(conn, "f", 1, me, 30)
        ledger.finish(
            conn,
            me,
            [
                {
                    "id": inv,
                    "attempt": 1,
                    "status": "pending",
                    "function": "f",
                    "payload": "{}",
                    "next_run_at": time.time() + 60,
                }
            ],
        )
        assert ledger.claim(conn, "f", 1, me, 30) == []
        assert ledger.pending_functions(conn, time.time()) == set()
        assert ledger.pending_functions(conn, time.time() + 61) == {"f"}


def test_dead_coordinator_leases_are_recovered_at_once(ledger):
    enqueue(ledger, 4)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    gone = "gone-coordinator"
    now = time.time()
    with ledger.begin() as conn:
        conn.execute(
            insert(coordinators).values(
                id=gone, host=socket.gethostname(), pid=proc.pid, started_at=now, heartbeat_at=now
            )
        )
        claimed = ledger.claim(conn, "f", 4, gone, 3600)
    assert len(claimed) == 4
    me = ledger.register_coordinator({})
    assert ledger.recover_leases(me) == 4
    assert ledger.count_by_status() == {"pending": 4}
    abandoned = ledger.list_attempts(function="f")
    assert {a["status"] for a in abandoned} == {"abandoned"}
    with ledger.begin() as conn:
        again = ledger.claim(conn, "f", 4, me, 30)
    # an abandoned attempt does not use up a retry
    assert {c.attempt for c in again} == {1}


def test_live_coordinator_keeps_its_leases(ledger):
    enqueue(ledger, 2)
    alive = ledger.register_coordinator({})  # this process: alive
    with ledger.begin() as conn:
        ledger.claim(conn, "f", 2, alive, 3600)
    other = ledger.register_coordinator({})
    assert ledger.recover_leases(other) == 0
    # but an expired lease is taken over even from a live owner
    with ledger.begin() as conn:
        conn.execute(update(invocations).values(lease_expires_at=time.time() - 1))
    assert ledger.recover_leases(other) == 2


def test_heartbeat_extends_leases(ledger):
    enqueue(ledger, 1)
    me = ledger.register_coordinator({})
    with ledger.begin() as conn:
        ledger.claim(conn, "f", 1, me, 1)
    ledger.heartbeat(me, 100)
    with ledger.engine.connect() as conn:
        expires = conn.execute(select(invocations.c.lease_expires_at)).scalar()
    assert expires > time.time() + 90
    assert [c["id"] for c in ledger.live_coordinators(stale_after=10)] == [me]


def test_concurrent_claimers_never_share_an_invocation(ledger):
    enqueue(ledger, 300)
    owners = [ledger.register_coordinator({}) for _ in range(3)]
    got: dict[str, list[str]] = {o: [] for o in owners}

    def worker(owner):
        while True:
            with ledger.begin() as conn:
                batch = ledger.claim(conn, "f", 7, owner, 30)
            if not batch:
                return
            got[owner].extend(c.id for c in batch)

    threads = [threading.Thread(target=worker, args=(o,)) for o in owners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    all_ids = [i for ids in got.values() for i in ids]
    assert len(all_ids) == 300 and len(set(all_ids)) == 300


def test_unknown_pid_on_other_host_is_trusted(ledger):
    from headrace.ledger.liveness import holder_alive

    assert holder_alive("some-other-host", 1, None)
    assert not holder_alive(socket.gethostname(), 1, time.time())
    assert holder_alive(socket.gethostname(), os.getpid(), None)
