"""SeaweedFS change notifications as a wake-up beside listing, on a real SeaweedFS server
(tests/seaweed.py): a new object is found without waiting for the next listing, a notifier
that dies is restarted (and listing alone still finds everything meanwhile), nothing is
reported or triggered twice, and the notifier process ends with its coordinator."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from headrace.config import load_settings
from headrace.errors import ConfigError
from headrace.ledger import Ledger
from headrace.ledger.schema import invocations
from headrace.server.coordinator import storage_notifier
from headrace.storage import ChangeWatcher, ObjectStore
from headrace.storage.notifications import open_notifier
from headrace.storage.notifications_seaweedfs import SeaweedNotifier
from tests.e2e_helpers import Up

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

BASIC = Path(__file__).resolve().parents[1] / "tests" / "apps" / "basic"
NEVER = 3600.0  # a listing interval no test outlasts: only a wake-up can find a new object


def _wait(condition, timeout: float = 60.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_a_notification_wakes_the_watcher_and_a_killed_notifier_is_restarted(s3):
    fs, url, server = s3
    store = ObjectStore(url)
    notifier = open_notifier(server.notifications, store.root)
    assert isinstance(notifier, SeaweedNotifier)
    seen = []
    with ChangeWatcher(store, ["inbox"], poll_interval=NEVER, notifier=notifier) as watcher:
        watcher.start(seen.append)
        assert _wait(lambda: notifier.running)
        time.sleep(1.0)  # the start-up listing is done; only a wake-up can find what follows
        fs.pipe(f"{url}/inbox/a.txt", b"first")
        assert _wait(lambda: len(seen) == 1), "the put did not wake the watcher"
        fs.pipe(f"{url}/other/ignored.txt", b"not a watched bucket")
        fs.pipe(f"{url}/inbox/a.txt", b"a second version")
        assert _wait(lambda: len(seen) == 2)
        # the notifier dies: it is started again, and what was written meanwhile is found
        pid = notifier.pid
        os.kill(pid, signal.SIGKILL)
        fs.pipe(f"{url}/inbox/b.txt", b"written while the notifier was down")
        assert _wait(lambda: notifier.restarts >= 1 and notifier.running and notifier.pid != pid)
        assert _wait(lambda: len(seen) == 3)
        fs.pipe(f"{url}/inbox/c.txt", b"after the restart")
        assert _wait(lambda: len(seen) == 4)
        time.sleep(1.5)  # late and duplicated events: nothing is reported twice
    assert not notifier.running
    assert sorted((i.key, i.size) for i in seen) == [
        ("a.txt", 5),
        ("a.txt", 16),
        ("b.txt", 35),
        ("c.txt", 17),
    ]


def test_listing_finds_everything_when_no_notification_arrives(s3):
    fs, url, _ = s3
    store = ObjectStore(url)
    # a filer nobody runs: the feed never delivers, listing alone must do
    notifier = SeaweedNotifier("127.0.0.1:9", store.root)
    seen = []
    with ChangeWatcher(store, ["inbox"], poll_interval=0.3, notifier=notifier) as watcher:
        watcher.start(seen.append)
        for n in range(3):
            fs.pipe(f"{url}/inbox/k{n}.txt", b"x" * (n + 1))
        assert _wait(lambda: len(seen) == 3)
        time.sleep(1.0)
    assert sorted(i.key for i in seen) == ["k0.txt", "k1.txt", "k2.txt"]


def test_notifications_need_s3_storage_and_a_filer_address(tmp_path):
    local = load_settings(
        tmp_path, storage=str(tmp_path / "b"), storage_notifications="seaweedfs://127.0.0.1:8888"
    )
    with pytest.raises(ConfigError, match="local folder"):
        storage_notifier(local, ObjectStore(local.storage_url))
    with pytest.raises(ConfigError, match="does not say where"):
        open_notifier("seaweedfs://", "root")
    with pytest.raises(ConfigError, match="no notification source"):
        open_notifier("minio://127.0.0.1:9000", "root")


def _children(pid: int) -> list[int]:
    """Children of every thread of `pid` (a thread's children are listed under that thread)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _notifier_of(pid: int) -> int | None:
    for child in _children(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"filer.meta.tail" in cmdline:
            return child
    return None


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def test_up_triggers_on_notifications_once_each_and_the_notifier_dies_with_it(s3, tmp_path):
    fs, url, server = s3
    home = tmp_path / "home"
    env = {
        **server.env,
        "HEADRACE_HOME": str(home),
        "HEADRACE_STORAGE": url,
        "HEADRACE_STORAGE_NOTIFICATIONS": server.notifications,
        "HEADRACE_POLL_INTERVAL": str(NEVER),
        "HEADRACE_WORKERS": "2",
    }
    up = Up(BASIC, env, tmp_path / "up.log").start()
    ledger = Ledger(f"sqlite:///{home / 'ledger.db'}")
    try:
        assert _wait(lambda: _notifier_of(up.proc.pid) is not None), up.output()
        names = [f"obj-{i:02d}.dat" for i in range(10)]
        for n, name in enumerate(names):
            fs.pipe(f"{url}/inbox/copy/{name}", name.encode())
            if n == 4:  # the notifier dies mid-run: restarted, nothing missed
                os.kill(_notifier_of(up.proc.pid), signal.SIGKILL)
        assert _wait(lambda: ledger.count_by_status("copy") == {"succeeded": len(names)}, 120), (
            ledger.count_by_status("copy"),
            up.output(),
        )
        time.sleep(1.5)  # duplicated events bring no second trigger
        with ledger.engine.connect() as conn:
            per_event = conn.execute(
                select(invocations.c.event_id, func.count()).group_by(invocations.c.event_id)
            ).all()
        assert len(per_event) == len(names) and {n for _, n in per_event} == {1}
        # the notifier is the coordinator's child: a kill -9 of the coordinator ends it
        child = _notifier_of(up.proc.pid)
        assert child is not None
        up.kill9()
        assert _wait(lambda: _gone(child), 10)
    finally:
        ledger.close()
        if up.alive():
            up.kill9()
