"""An attempt's result is accepted only under the lease it was started with."""

import time

from headrace.ledger import NewInvocation


def _finish(ledger, owner, claim):
    update = {
        "id": claim.id,
        "leased_at": claim.leased_at,
        "attempt": claim.attempt,
        "function": claim.function,
        "payload": claim.payload,
        "status": "succeeded",
        "result": {"attempt": claim.attempt},
    }
    with ledger.begin() as conn:
        held = ledger.held(conn, owner, {claim.id: claim.leased_at})
        return held, ledger.finish(conn, owner, [update])


def test_a_result_under_a_lost_lease_is_refused(ledger):
    a = ledger.register_coordinator({})
    b = ledger.register_coordinator({})
    (inv,) = ledger.enqueue([NewInvocation("f", {}, max_attempts=3)])
    with ledger.begin() as conn:
        (first,) = ledger.claim(conn, "f", 1, a, 0.01)
    time.sleep(0.05)
    assert ledger.recover_leases(b) == 1  # a's lease expired: b takes the invocation over
    with ledger.begin() as conn:
        (second,) = ledger.claim(conn, "f", 1, b, 60)
    assert _finish(ledger, a, first) == (set(), 0)
    assert ledger.get_invocation(inv)["status"] == "running"
    assert _finish(ledger, b, second) == ({inv}, 1)
    assert ledger.get_invocation(inv)["status"] == "succeeded"


def test_the_same_coordinator_cannot_finish_an_older_lease(ledger):
    a = ledger.register_coordinator({})
    (inv,) = ledger.enqueue([NewInvocation("f", {}, max_attempts=3)])
    with ledger.begin() as conn:
        (first,) = ledger.claim(conn, "f", 1, a, 60)
    ledger.release_leases(a)
    time.sleep(0.01)
    with ledger.begin() as conn:
        (second,) = ledger.claim(conn, "f", 1, a, 60)
    assert first.leased_at != second.leased_at
    assert _finish(ledger, a, first) == (set(), 0)
    assert _finish(ledger, a, second) == ({inv}, 1)
