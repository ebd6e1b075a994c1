"""Workers never outlive their coordinator, group signals drain, and what a dying worker leaves
(scratch folders, its last stderr lines) is cleaned up or recorded. Real `headrace up` processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from headrace.ledger import Ledger, NewInvocation
from tests.e2e_helpers import Up

pytestmark = pytest.mark.slow

APP_DIR = Path(__file__).parent / "apps" / "workers"


class SessionUp(Up):
    """`headrace up` as the leader of its own session and process group, as under a shell,
    systemd or `timeout`, so that the tests can signal its whole group."""

    def start(self) -> SessionUp:
        real_popen = subprocess.Popen

        def popen(*args, **kwargs):
            return real_popen(*args, start_new_session=True, **kwargs)

        subprocess.Popen = popen  # type: ignore[misc]
        try:
            return super().start()  # type: ignore[return-value]
        finally:
            subprocess.Popen = real_popen  # type: ignore[misc]

    def signal_group(self, sig: int) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)


def _env(home: Path) -> dict[str, str]:
    return {"HEADRACE_HOME": str(home), "HEADRACE_POLL_INTERVAL": "0.2", "HEADRACE_WORKERS": "2"}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _wait_for(path: Path, timeout: float = 30.0) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


def _wait_status(ledger: Ledger, inv: str, statuses=("succeeded", "dead"), timeout=60.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        row = ledger.get_invocation(inv)
        if row["status"] in statuses:
            return row
        time.sleep(0.05)
    raise AssertionError(f"{inv} still {ledger.get_invocation(inv)['status']}")


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def test_kill9_of_the_coordinator_kills_its_workers_and_the_ledger_agrees(tmp_path):
    home, marks = tmp_path / "home", tmp_path / "marks"
    up = Up(APP_DIR, _env(home), tmp_path / "up.log").start()
    ledger = Ledger(f"sqlite:///{home / 'ledger.db'}")
    try:
        (inv,) = ledger.enqueue(
            [NewInvocation("slow_output", {"marks": str(marks), "seconds": 2.5}, max_attempts=3)]
        )
        worker = int(_wait_for(marks / f"{inv}-1.pid"))
        # the fork server and the other workers are not children of the worker: find them now
        family = [p for p in _descendants(up.proc.pid) if p != worker]
        assert _alive(worker) and family
        up.kill9()
        killed = time.time()
        while _alive(worker) and time.time() - killed < 5:
            time.sleep(0.01)
        assert not _alive(worker), "the worker outlived its coordinator"
        assert time.time() - killed < 1.0, f"the worker lived {time.time() - killed:.2f} s on"
        deadline = time.time() + 2
        while any(_alive(p) for p in family) and time.time() < deadline:
            time.sleep(0.01)
        assert not [p for p in family if _alive(p)], "a worker or the fork server lived on"
        up.start()
        row = _wait_status(ledger, inv)
        assert row["status"] == "succeeded", row
        # the output was written once, by the attempt the ledger has as the successful one
        outputs = (marks / f"{inv}.out").read_text().splitlines()
        attempts = ledger.list_attempts(invocation_id=inv)
        assert sorted(a["status"] for a in attempts) == ["abandoned", "ok"], attempts
        (ok,) = [a for a in attempts if a["status"] == "ok"]
        assert outputs == [f"attempt {ok['number']}"]
        # the killed attempt's scratch folder went at start-up
        assert not list((home / "tmp").iterdir())
        assert up.terminate() == 0, up.output()
    finally:
        ledger.close()
        if up.alive():
            up.kill9()


def test_kill9_of_the_coordinator_kills_the_job_processes_its_workers_started(tmp_path):
    home = tmp_path / "home"
    up = Up(APP_DIR, _env(home), tmp_path / "up.log").start()
    url = f"sqlite:///{home / 'ledger.db'}"
    ledger = Ledger(url)
    try:
        payload = {"ledger": url, "home": str(tmp_path / "jobs"), "pidfile": str(tmp_path / "job")}
        ledger.enqueue([NewInvocation("runs_a_job", payload, max_attempts=1)])
        job = int(_wait_for(tmp_path / "job"))
        assert _alive(job)
        up.kill9()
        killed = time.time()
        while _alive(job) and time.time() - killed < 5:
            time.sleep(0.01)
        assert time.time() - killed < 1.0, "the job process outlived its coordinator"
    finally:
        ledger.close()
        if up.alive():
            up.kill9()


def test_sigterm_to_the_process_group_drains_like_sigterm_to_the_coordinator(tmp_path):
    home, marks = tmp_path / "home", tmp_path / "marks"
    up = SessionUp(APP_DIR, _env(home), tmp_path / "up.log").start()
    ledger = Ledger(f"sqlite:///{home / 'ledger.db'}")
    try:
        (inv,) = ledger.enqueue(
            [NewInvocation("drain_me", {"marks": str(marks), "seconds": 2}, max_attempts=1)]
        )
        _wait_for(marks / f"{inv}.pid")
        started = time.time()
        up.signal_group(signal.SIGTERM)  # what systemd, `timeout` and `kill -TERM -PGID` do
        assert up.proc.wait(60) == 0, up.output()
        assert time.time() - started > 1.0, "it did not wait for the running invocation"
        row = ledger.get_invocation(inv)
        assert row["status"] == "succeeded", (row, up.output())
        assert [a["status"] for a in ledger.list_attempts(invocation_id=inv)] == ["ok"]
        assert "draining" in up.output()
    finally:
        ledger.close()
        if up.alive():
            up.kill9()


def test_ctrl_c_drains_and_a_second_ctrl_c_stops_now(tmp_path):
    home, marks = tmp_path / "home", tmp_path / "marks"
    up = SessionUp(APP_DIR, _env(home), tmp_path / "up.log").start()
    ledger = Ledger(f"sqlite:///{home / 'ledger.db'}")
    try:
        (inv,) = ledger.enqueue(
            [NewInvocation("drain_me", {"marks": str(marks), "seconds": 30}, max_attempts=1)]
        )
        worker = int(_wait_for(marks / f"{inv}.pid"))
        up.signal_group(signal.SIGINT)  # Ctrl-C at the terminal signals the foreground group
        time.sleep(1.0)
        assert up.alive() and _alive(worker), "the first Ctrl-C must drain, not stop"
        up.signal_group(signal.SIGINT)
        started = time.time()
        assert up.proc.wait(10) == 0, up.output()
        assert time.time() - started < 5
        assert not _alive(worker)
        # stopped, not failed: the attempt is abandoned and the next coordinator runs it again
        row = ledger.get_invocation(inv)
        assert row["status"] == "pending", row
        assert [a["status"] for a in ledger.list_attempts(invocation_id=inv)] == ["abandoned"]
        assert not list((home / "tmp").iterdir())
    finally:
        ledger.close()
        if up.alive():
            up.kill9()


@pytest.fixture(scope="module")
def up_workers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("workers")
    home = tmp / "home"
    # a scratch folder a crashed worker of an earlier run left, and one of an attempt that a
    # live coordinator sharing this home still runs
    stale = home / "tmp" / "0123456789abcdef-1"
    stale.mkdir(parents=True)
    (stale / "left.bin").write_bytes(b"x" * 100)
    ledger = Ledger(f"sqlite:///{home / 'ledger.db'}")
    other = ledger.register_coordinator({"pid": os.getpid()})  # this test process: alive
    (held,) = ledger.enqueue([NewInvocation("drain_me", {}, max_attempts=1)])
    with ledger.begin() as conn:
        assert ledger.claim(conn, "drain_me", 1, other, 3600)
    live = home / "tmp" / f"{held}-1"
    live.mkdir()
    old = time.time() - 60
    for folder in (stale, live):
        os.utime(folder, (old, old))
    up = Up(APP_DIR, _env(home), tmp / "up.log").start()
    yield up, ledger, tmp / "marks", {"stale": stale, "live": live}
    ledger.close()
    if up.alive():
        assert up.terminate() == 0, up.output()


def test_stale_scratch_folders_are_removed_at_start_up(up_workers):
    _, _, _, folders = up_workers
    assert not folders["stale"].exists()
    assert folders["live"].exists(), "the folder of another coordinator's running attempt went"


@pytest.mark.parametrize(
    ("function", "signal_name", "lines"),
    [
        ("native_abort", "SIGABRT", ["corrupted size vs. prev_size", "reading message 3"]),
        ("native_segfault", "SIGSEGV", ["about to read address 0"]),
    ],
)
def test_a_native_crash_records_the_workers_last_stderr_lines(
    up_workers, function, signal_name, lines
):
    up, ledger, _, _ = up_workers
    (inv,) = ledger.enqueue([NewInvocation(function, {}, max_attempts=1)])
    row = _wait_status(ledger, inv)
    assert row["status"] == "dead"
    assert row["error"].startswith("WorkerCrashed:") and signal_name in row["error"], row
    for line in lines:
        assert line in row["error"], row["error"]
    (attempt,) = ledger.list_attempts(invocation_id=inv)
    assert attempt["status"] == "crashed" and lines[0] in attempt["error"]
    assert up.alive()


@pytest.mark.parametrize("function", ["crash_with_scratch", "timeout_with_scratch"])
def test_the_scratch_folder_of_a_dead_worker_is_removed(up_workers, function):
    up, ledger, _, _ = up_workers
    (inv,) = ledger.enqueue([NewInvocation(function, {}, max_attempts=1)])
    row = _wait_status(ledger, inv)
    assert row["status"] == "dead"
    home = up.home
    deadline = time.time() + 5
    while (home / "tmp" / f"{inv}-1").exists() and time.time() < deadline:
        time.sleep(0.05)
    assert not (home / "tmp" / f"{inv}-1").exists()


def test_the_scratch_limit_stops_a_handler_while_it_writes(up_workers):
    up, ledger, marks, _ = up_workers
    (inv,) = ledger.enqueue([NewInvocation("scratch_hog", {"marks": str(marks)}, max_attempts=1)])
    row = _wait_status(ledger, inv, timeout=60)
    assert row["status"] == "dead" and row["error"].startswith("TmpSpaceExceeded:"), row
    assert "5 MB limit" in row["error"] and "its worker was stopped" in row["error"]
    assert "fix:" in row["error"]
    assert not (marks / f"{inv}.finished").exists(), "it wrote its 2 GiB before it was stopped"
    written = float(row["error"].split("wrote ")[1].split(" MB")[0])
    assert written < 100, row["error"]
    assert not (up.home / "tmp" / f"{inv}-1").exists()
    logs = json.dumps(ledger.list_attempts(invocation_id=inv))
    assert "TmpSpaceExceeded" in logs


def test_no_worker_is_left_after_a_drain(up_workers):
    up, *_ = up_workers
    family = _descendants(up.proc.pid)
    assert family
    assert up.terminate() == 0, up.output()
    deadline = time.time() + 5
    while any(_alive(p) for p in family) and time.time() < deadline:
        time.sleep(0.05)
    assert not [p for p in family if _alive(p)]
