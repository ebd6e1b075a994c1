"""A driver's block folder (in /dev/shm) is gone when the driver is, whichever way it ends.

Real driver scripts in subprocesses: they exit normally, fail, are interrupted, or are
`kill -9`ed; the folder of a dead driver is swept by the next one, a live one's never.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from headrace.storage.temp_names import machine_tag

# A dataset whose task on the batch holding row 0 waits (in "hold" mode) until the test
# creates `release`, having marked that it runs: the driver is then in the middle of a run.
SCRIPT = """
import os, sys, time
from pathlib import Path
from headrace import data

mode, marks = sys.argv[1], Path(sys.argv[2])

def step(batch):
    if mode == "hold" and 0 in batch["id"].tolist():
        (marks / f"holding-{os.getpid()}").touch()
        deadline = time.time() + 60
        while not (marks / "release").exists() and time.time() < deadline:
            time.sleep(0.05)
    return batch

print(data.range(400).map_batches(step, batch_size=20).count(), flush=True)
if mode == "exception":
    raise RuntimeError("the script failed after its dataset")
"""


def root() -> str:
    """Where drivers put their block folders (as `headrace.data.block_folders.root`)."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return tempfile.gettempdir()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _folders_of(pid: int) -> list[str]:
    """Block folders in the root owned by `pid`, in this version's naming or the older one."""
    pattern = re.compile(rf"headrace-data-(?:[0-9a-f]{{8}}\.)?{pid}(?:\.|$)")
    return [name for name in os.listdir(root()) if pattern.match(name)]


@pytest.fixture
def driver(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(SCRIPT)
    marks = tmp_path / "marks"
    marks.mkdir()
    started: list[subprocess.Popen] = []

    def start(mode: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, str(script), mode, str(marks)],
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        return proc

    def holding(proc: subprocess.Popen) -> None:
        deadline = time.time() + 120
        while not any(marks.glob("holding-*")):
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "the driver never started its task"
            time.sleep(0.05)

    def release() -> None:
        (marks / "release").touch()

    start.holding = holding  # type: ignore[attr-defined]
    start.release = release  # type: ignore[attr-defined]
    yield start
    release()
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        for name in _folders_of(proc.pid):  # a failed test's leftovers
            shutil.rmtree(os.path.join(root(), name), ignore_errors=True)


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


@pytest.mark.parametrize("mode", ["normal", "exception"])
def test_a_driver_that_exits_leaves_no_block_folder(driver, mode):
    proc = driver(mode)
    code, out, err = _finish(proc)
    assert out.strip() == "400", err
    assert (code == 0) == (mode == "normal"), err
    assert _folders_of(proc.pid) == []


def test_an_interrupted_driver_leaves_no_block_folder(driver):
    proc = driver("hold")
    driver.holding(proc)
    assert _folders_of(proc.pid), "the running driver has a block folder"
    proc.send_signal(signal.SIGINT)
    driver.release()  # its worker then finishes the task after the driver gave up on it
    code, _, err = _finish(proc)
    assert code != 0 and "KeyboardInterrupt" in err, err
    assert _folders_of(proc.pid) == []


def test_a_killed_drivers_folder_is_swept_by_the_next_driver(driver):
    victim = driver("hold")
    driver.holding(victim)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    left = _folders_of(victim.pid)
    assert left, "a driver killed mid-run cannot remove its folder"
    # a folder in the older naming (`headrace-data-PID`) of a driver that is gone
    legacy = Path(root()) / f"headrace-data-{_dead_pid()}"
    legacy.mkdir(exist_ok=True)
    (legacy / "block.arrow").write_bytes(b"x")

    after = driver("normal")
    code, out, err = _finish(after)
    assert (code, out.strip()) == (0, "400"), err
    assert _folders_of(victim.pid) == []
    assert not legacy.exists()
    assert _folders_of(after.pid) == []


def test_a_live_drivers_folder_is_never_swept(driver):
    live = driver("hold")
    driver.holding(live)
    (mine,) = _folders_of(live.pid)
    # the same pid with another start time: a driver that died, its pid since reused
    reused = Path(root()) / f"headrace-data-{machine_tag()}.{live.pid}.1"
    reused.mkdir()
    # a folder of another machine (or pid namespace) sharing the root: its pid means nothing here
    foreign = Path(root()) / f"headrace-data-00000000.{_dead_pid()}.1"
    if machine_tag() != "00000000":
        foreign.mkdir()
    try:
        other = driver("normal")
        code, out, err = _finish(other)
        assert (code, out.strip()) == (0, "400"), err
        assert _folders_of(live.pid) == [mine], "the live driver's folder was swept"
        assert not reused.exists()
        assert foreign.exists() or machine_tag() == "00000000"
    finally:
        shutil.rmtree(reused, ignore_errors=True)
        shutil.rmtree(foreign, ignore_errors=True)

    driver.release()
    code, out, err = _finish(live)
    assert (code, out.strip()) == (0, "400"), err
    assert _folders_of(live.pid) == []
