"""Temp files of writers killed midway are removed; those of live writers never are."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa

from headrace import data
from headrace.storage import ObjectStore
from headrace.storage.temp_names import (
    TEMP_PREFIX,
    machine_tag,
    sweep_folder,
    sweep_tree,
    temp_name,
    writer_pid,
)

from .test_coordinator import Running

KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from headrace.storage import ObjectStore
    writer = ObjectStore(sys.argv[1]).bucket(sys.argv[2]).open(sys.argv[3], "wb")
    writer.write(b"half an object")
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def kill_a_writer(root: Path, bucket: str, key: str) -> None:
    """A real writer, killed by SIGKILL halfway through an object."""
    run = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(root), bucket, key])
    assert run.returncode == -9


def hidden(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith(TEMP_PREFIX))


def test_temp_names_say_which_process_on_which_machine_wrote_them():
    name = temp_name("part-0001.parquet")
    assert name.startswith(TEMP_PREFIX) and name.endswith("-part-0001.parquet")
    assert writer_pid(name) == os.getpid()
    assert writer_pid(temp_name()) == os.getpid()
    assert len(temp_name("é" * 300).encode()) < 255
    other_machine = name.replace(machine_tag(), "0" * 8 if machine_tag() != "0" * 8 else "1" * 8)
    assert writer_pid(other_machine) is None
    assert writer_pid(TEMP_PREFIX + "0123456789abcdef0123456789abcdef-old-format") is None


def test_a_killed_writers_temp_is_swept_and_a_live_ones_is_kept(tmp_path):
    store = ObjectStore(tmp_path)
    bucket = store.bucket("out")
    kill_a_writer(tmp_path, "out", "deep/er/obj.dat")
    folder = tmp_path / "out" / "deep" / "er"
    (dead,) = hidden(folder)
    live = bucket.open("deep/er/live.dat", "wb")  # ours, still writing
    live.write(b"in progress")
    foreign = folder / (TEMP_PREFIX + "0123456789abcdef0123456789abcdef-someone")
    foreign.write_bytes(b"an older headrace's or another machine's")
    assert bucket.list() == []  # temps are never objects

    assert sweep_tree(tmp_path / "out") == 1
    assert dead not in hidden(folder)
    assert len(hidden(folder)) == 2  # the live writer's and the unknown one stay
    live.close()
    assert bucket.get("deep/er/live.dat") == b"in progress"
    assert sweep_folder(folder) == 0 and foreign.exists()


def test_the_watcher_sweeps_dead_temps_in_the_buckets_it_scans(tmp_path):
    from headrace.storage import ChangeWatcher

    store = ObjectStore(tmp_path)
    store.bucket("inbox")
    kill_a_writer(tmp_path, "inbox", "a/b.dat")
    assert hidden(tmp_path / "inbox" / "a")
    watcher = ChangeWatcher(store, ["inbox"], poll_interval=0.2)
    assert watcher.scan() == []
    assert hidden(tmp_path / "inbox" / "a") == []


def test_a_coordinator_sweeps_buckets_nobody_watches_at_start(tmp_path):
    home = tmp_path / "home"
    outbox = home / "buckets" / "outbox"
    outbox.mkdir(parents=True)
    kill_a_writer(home / "buckets", "outbox", "copy/obj-0001.dat")
    assert hidden(outbox / "copy")
    running = Running(tmp_path)
    try:
        deadline = time.time() + 30
        while hidden(outbox / "copy") and time.time() < deadline:
            time.sleep(0.05)
        assert hidden(outbox / "copy") == []
    finally:
        running.stop()


def test_a_dataset_write_killed_midway_is_swept_by_the_next_write_beside_it(tmp_path):
    target = tmp_path / "curated" / "table"
    script = textwrap.dedent(
        f"""
        import os, signal
        from headrace.data import sinks
        def die(*args, **kwargs):  # every block written, killed before the rename
            os.kill(os.getpid(), signal.SIGKILL)
        sinks.WriteTarget.commit = die
        from headrace import data
        data.from_items([{{"x": 1}}, {{"x": 2}}]).write_parquet({str(target)!r})
        """
    )
    run = subprocess.run([sys.executable, "-c", script])
    assert run.returncode == -9
    left = hidden(target.parent)
    assert left and not target.exists()

    data.from_arrow(pa.table({"x": [3]})).write_parquet(str(tmp_path / "curated" / "other"))
    assert hidden(target.parent) == []
    assert data.read_parquet(str(tmp_path / "curated" / "other")).count() == 1
