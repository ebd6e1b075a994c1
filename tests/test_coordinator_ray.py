"""The same app and coordinator on the Ray executor (a local Ray with num_cpus=2)."""

import json
import threading
import time
from pathlib import Path

import pytest

from headrace.app import load_app
from headrace.config import load_settings
from headrace.ledger import Ledger, NewInvocation
from headrace.server.coordinator import Coordinator

pytestmark = pytest.mark.ray

APP_DIR = Path(__file__).parent / "apps" / "basic"


@pytest.mark.slow
def test_same_functions_run_on_ray(tmp_path):
    settings = load_settings(
        APP_DIR, home=str(tmp_path / "home"), executor="ray", workers=2, poll_interval=0.2
    )
    app = load_app(settings)
    coordinator = Coordinator(settings, app)
    thread = threading.Thread(target=coordinator.run, kwargs={"drain_timeout": 10})
    thread.start()
    try:
        assert coordinator.ready.wait(120)
        assert coordinator.executor.name == "ray"
        ledger = Ledger(settings.ledger_url)
        inbox = Path(settings.storage_url) / "inbox"
        (inbox / "copy").mkdir(parents=True)
        for i in range(6):
            (inbox / "copy" / f"{i}.dat").write_bytes(b"ray %d" % i)
        (inv_slow,) = ledger.enqueue([NewInvocation("too_slow", {}, max_attempts=1)])
        (inv_flaky,) = ledger.enqueue([NewInvocation("flaky_once", {}, max_attempts=2)])
        deadline = time.time() + 120
        while time.time() < deadline:
            counts = ledger.count_by_status()
            if counts.get("succeeded", 0) + counts.get("dead", 0) >= 8:
                break
            time.sleep(0.2)
        copies = ledger.list_invocations(function="copy")
        assert len(copies) == 6 and {r["status"] for r in copies} == {"succeeded"}
        outbox = Path(settings.storage_url) / "outbox" / "copy"
        assert sorted(p.name for p in outbox.iterdir()) == [f"{i}.dat" for i in range(6)]
        slow = ledger.get_invocation(inv_slow)
        assert slow["status"] == "dead" and "InvocationTimeout" in slow["error"]
        flaky = ledger.get_invocation(inv_flaky)
        assert flaky["status"] == "succeeded" and json.loads(flaky["result"]) == {"attempt": 2}
        attempts = ledger.list_attempts(function="copy")
        assert all(a["worker"].startswith("ray:") for a in attempts)
        ledger.close()
    finally:
        coordinator.stop()
        thread.join(60)
