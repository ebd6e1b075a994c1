"""kill -9 the coordinator at random moments while objects keep arriving: nothing is lost and
every object produces exactly one output."""

import random
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from headrace.ledger import Ledger, NewInvocation
from headrace.ledger.schema import attempts, events, invocations, objects
from tests.e2e_helpers import Up

pytestmark = pytest.mark.slow

APP_DIR = Path(__file__).parent / "apps" / "basic"
N_OBJECTS = 240
KILLS = 4


def test_kill9_during_ingest_loses_nothing_and_duplicates_nothing(tmp_path):
    rng = random.Random(20261124)
    home = tmp_path / "home"
    env = {"HEADRACE_HOME": str(home), "HEADRACE_POLL_INTERVAL": "0.2", "HEADRACE_WORKERS": "2"}
    inbox = home / "buckets" / "inbox" / "copy"
    inbox.mkdir(parents=True)
    expected = {
        f"obj-{i:04d}.dat": f"payload {i} {rng.random()}".encode() * 50 for i in range(N_OBJECTS)
    }

    def write_all():
        for name, data in expected.items():
            # written in place by a plain program, as another tool would
            with open(inbox / name, "wb") as fh:
                fh.write(data[: len(data) // 2])
                fh.flush()
                fh.write(data[len(data) // 2 :])
            time.sleep(rng.uniform(0, 0.03))

    up = Up(APP_DIR, env, tmp_path / "up.log").start()
    writer = threading.Thread(target=write_all)
    writer.start()
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.3, 1.5))
            up.kill9()
            time.sleep(rng.uniform(0, 0.3))
            up.start()
        writer.join()
        outbox = home / "buckets" / "outbox" / "copy"
        deadline = time.time() + 120
        while time.time() < deadline:
            # pathlib's glob matches hidden names too: a temp file of a write in progress is
            # not an output
            names = [p.name for p in outbox.iterdir()] if outbox.exists() else []
            done = [n for n in names if n.endswith(".dat") and not n.startswith(".")]
            if len(done) == N_OBJECTS and len(names) == N_OBJECTS:
                break
            time.sleep(0.2)
        ledger = Ledger(f"sqlite:///{home / 'ledger.db'}")
        deadline = time.time() + 60
        while time.time() < deadline:
            if ledger.count_by_status("copy") == {"succeeded": N_OBJECTS}:
                break
            time.sleep(0.2)
        assert up.alive(), up.output()
        assert up.terminate() == 0
    finally:
        writer.join()
        if up.alive():
            up.kill9()

    # every object produced exactly one output, with the right content, and nothing else
    outputs = {p.name: p.read_bytes() for p in outbox.iterdir()}
    assert sorted(outputs) == sorted(expected), "missing or extra outputs (temp files left?)"
    assert outputs == expected
    # exactly one event and one successful invocation per object version
    with ledger.engine.connect() as conn:
        n_objects = conn.execute(select(func.count()).select_from(objects)).scalar_one()
        n_events = conn.execute(select(func.count()).select_from(events)).scalar_one()
        per_event = conn.execute(
            select(invocations.c.event_id, func.count()).group_by(invocations.c.event_id)
        ).all()
        ok_attempts = conn.execute(
            select(attempts.c.invocation_id, func.count())
            .where(attempts.c.status == "ok")
            .group_by(attempts.c.invocation_id)
        ).all()
        statuses = conn.execute(select(attempts.c.status).distinct()).scalars().all()
    ledger.close()
    assert n_objects == N_OBJECTS and n_events == N_OBJECTS
    assert len(per_event) == N_OBJECTS and {n for _, n in per_event} == {1}
    # completed once: a re-run after a crash follows an abandoned attempt, never a second ok
    assert len(ok_attempts) == N_OBJECTS and {n for _, n in ok_attempts} == {1}
    assert set(statuses) <= {"ok", "abandoned"}


def test_sigterm_lets_running_invocations_finish(tmp_path):
    home = tmp_path / "home"
    env = {"HEADRACE_HOME": str(home), "HEADRACE_POLL_INTERVAL": "0.2"}
    up = Up(APP_DIR, env, tmp_path / "up.log").start()
    ledger = Ledger(f"sqlite:///{home / 'ledger.db'}")
    try:
        (inv,) = ledger.enqueue([NewInvocation("sleepy", {"seconds": 2}, max_attempts=1)])
        deadline = time.time() + 30
        while ledger.get_invocation(inv)["status"] != "running" and time.time() < deadline:
            time.sleep(0.05)
        started = time.time()
        assert up.terminate() == 0, up.output()
        # it waited for the running invocation instead of abandoning it
        assert time.time() - started > 1.0
        row = ledger.get_invocation(inv)
        assert row["status"] == "succeeded", row
        assert [a["status"] for a in ledger.list_attempts(invocation_id=inv)] == ["ok"]
    finally:
        ledger.close()
        if up.alive():
            up.kill9()
