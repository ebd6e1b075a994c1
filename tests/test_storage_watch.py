"""Tests of headrace.storage.ChangeWatcher with real files, real inotify and memory://."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter

import pytest

from headrace.storage import ChangeWatcher, ObjectInfo, ObjectStore

# watchdog's own noise when `mkdir -p` races its recursive watch set-up (harmless).
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")

POLL = 0.05
SETTLE = 0.2
# Long enough for the poller to have seen and settled anything that is there.
QUIET = SETTLE + 4 * POLL


class Collector:
    """on_object callback that records reports and lets tests wait for them."""

    def __init__(self) -> None:
        self.items: list[tuple[float, ObjectInfo]] = []
        self._cond = threading.Condition()

    def __call__(self, info: ObjectInfo) -> None:
        with self._cond:
            self.items.append((time.monotonic(), info))
            self._cond.notify_all()

    @property
    def infos(self) -> list[ObjectInfo]:
        with self._cond:
            return [i for _, i in self.items]

    def keys(self) -> Counter:
        return Counter((i.bucket, i.key) for i in self.infos)

    def wait_for(self, predicate, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate([i for _, i in self.items]):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out; got {[i for _, i in self.items]}")
                self._cond.wait(left)

    def wait_key(self, key: str, count: int = 1, timeout: float = 5.0) -> list[ObjectInfo]:
        self.wait_for(lambda infos: sum(i.key == key for i in infos) >= count, timeout)
        return [i for i in self.infos if i.key == key]


@pytest.fixture
def local(tmp_path):
    store = ObjectStore(tmp_path / "store")
    store.bucket("raw")
    return store


@pytest.fixture
def start_watcher():
    watchers: list[ChangeWatcher] = []

    def start(store, buckets=None, **kwargs) -> tuple[ChangeWatcher, Collector]:
        kwargs.setdefault("poll_interval", POLL)
        kwargs.setdefault("settle_seconds", SETTLE)
        watcher = ChangeWatcher(store, buckets, **kwargs)
        collector = Collector()
        watcher.start(collector)
        watchers.append(watcher)
        return watcher, collector

    yield start
    for w in watchers:
        w.stop()


def write_slowly(path, chunks, pause) -> float:
    """Write chunks with pauses; returns the time just before the close."""
    with open(path, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
            f.flush()
            time.sleep(pause)
        closing_at = time.monotonic()
    return closing_at


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# --------------------------------------------------------------------------- inotify path


def test_inotify_reports_a_copy_fast_and_once(local, tmp_path, start_watcher):
    # A poll interval far beyond the test's wait proves the inotify path did the work.
    watcher, got = start_watcher(local, poll_interval=60)
    assert watcher.inotify_active
    time.sleep(0.1)  # let the start-up scan finish
    src = tmp_path / "src.csv"
    src.write_bytes(b"a,b\n1,2\n")
    shutil.copy(src, local.local_root() / "raw" / "in.csv")
    [info] = got.wait_key("in.csv", timeout=2)
    assert (info.bucket, info.size, info.etag) == ("raw", 8, md5(b"a,b\n1,2\n"))
    time.sleep(QUIET)
    assert got.keys() == Counter({("raw", "in.csv"): 1})


def test_slow_writer_is_reported_once_after_close(local, start_watcher):
    _, got = start_watcher(local)
    path = local.local_root() / "raw" / "slow.bin"
    chunks = [b"x" * 1000, b"y" * 2000, b"z" * 3000]
    closing_at = write_slowly(path, chunks, pause=SETTLE / 3)
    [info] = got.wait_key("slow.bin")
    time.sleep(QUIET)
    [(reported_at, info)] = got.items
    assert reported_at >= closing_at
    assert info.size == 6000
    assert info.etag == md5(b"".join(chunks))


def test_rename_into_place_is_reported_once(local, tmp_path, start_watcher):
    _, got = start_watcher(local, poll_interval=60)
    bucket_dir = local.local_root() / "raw"
    staged = bucket_dir / ".staging.tmp"  # hidden: ignored while being written
    staged.write_bytes(b"renamed")
    os.rename(staged, bucket_dir / "renamed.txt")
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"from outside")
    os.rename(outside, bucket_dir / "moved-in.txt")
    got.wait_for(lambda infos: len(infos) >= 2, timeout=2)
    time.sleep(QUIET)
    assert got.keys() == Counter({("raw", "renamed.txt"): 1, ("raw", "moved-in.txt"): 1})


def test_folder_renamed_into_place_reports_its_files(local, tmp_path, start_watcher):
    _, got = start_watcher(local, poll_interval=60)
    staging = tmp_path / "batch"
    (staging / "sub").mkdir(parents=True)
    (staging / "one.txt").write_bytes(b"1")
    (staging / "sub" / "two.txt").write_bytes(b"2")
    (staging / ".hidden").write_bytes(b"h")
    os.rename(staging, local.local_root() / "raw" / "batch")
    got.wait_for(lambda infos: len(infos) >= 2, timeout=2)
    time.sleep(QUIET)
    assert got.keys() == Counter({("raw", "batch/one.txt"): 1, ("raw", "batch/sub/two.txt"): 1})


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
def test_rsync_into_a_bucket_reports_each_file_once(local, tmp_path, start_watcher):
    # rsync writes each file as a hidden ".name.XXXXXX" and renames it into place.
    _, got = start_watcher(local)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(10):
        (src / "sub" / f"f{i}.bin").write_bytes(os.urandom(100_000))
    subprocess.run(["rsync", "-a", f"{src}/", f"{local.local_root()}/raw/"], check=True)
    got.wait_for(lambda infos: len(infos) >= 10)
    time.sleep(QUIET)
    assert got.keys() == Counter({("raw", f"sub/f{i}.bin"): 1 for i in range(10)})
    for info in got.infos:
        assert info.etag == md5((src / info.key).read_bytes())


def test_headrace_puts_and_rewrites_are_new_versions(local, start_watcher):
    _, got = start_watcher(local)
    bucket = local.bucket("raw")
    first = bucket.put("k.txt", b"one")
    got.wait_key("k.txt")
    second = bucket.put("k.txt", b"two")
    reports = got.wait_key("k.txt", count=2)
    time.sleep(QUIET)
    assert [r.version for r in got.infos] == [first.version, second.version]
    assert reports[1] == second
    assert int(reports[1].sequencer, 16) > int(reports[0].sequencer, 16)


def test_in_place_rewrite_is_a_new_version(local, start_watcher):
    _, got = start_watcher(local)
    path = local.local_root() / "raw" / "same.txt"
    path.write_bytes(b"aaaa")
    got.wait_key("same.txt")
    path.write_bytes(b"bbbb")
    reports = got.wait_key("same.txt", count=2)
    assert [r.etag for r in reports] == [md5(b"aaaa"), md5(b"bbbb")]
    assert reports[0].version != reports[1].version


def test_nested_prefixes_and_new_buckets(local, start_watcher):
    _, got = start_watcher(local)
    deep = local.local_root() / "raw" / "2024" / "05" / "01"
    deep.mkdir(parents=True)
    (deep / "file.grib2").write_bytes(b"GRIB")
    local.bucket("late-bucket").put("x/y.txt", b"late")
    got.wait_for(lambda infos: len(infos) >= 2)
    time.sleep(QUIET)
    assert got.keys() == Counter(
        {("raw", "2024/05/01/file.grib2"): 1, ("late-bucket", "x/y.txt"): 1}
    )


def test_hidden_temp_and_out_of_bucket_files_are_ignored(local, start_watcher):
    _, got = start_watcher(local)
    root = local.local_root()
    bucket_dir = root / "raw"
    (bucket_dir / ".swp").write_bytes(b"vim")
    (bucket_dir / ".headrace-tmp-0123-x").write_bytes(b"tmp")
    (bucket_dir / "d" / ".git").mkdir(parents=True)
    (bucket_dir / "d" / ".git" / "config").write_bytes(b"cfg")
    (root / "not-in-a-bucket.txt").write_bytes(b"root file")
    (root / ".headrace").mkdir()
    (root / ".headrace" / "ledger.db").write_bytes(b"db")
    (root / "Bad_Bucket").mkdir()
    (root / "Bad_Bucket" / "f").write_bytes(b"bad bucket")
    with local.bucket("raw").open("pending.bin", "wb") as f:
        f.write(b"...")
        time.sleep(QUIET)  # a write in progress is invisible to the watcher
    (bucket_dir / "visible.txt").write_bytes(b"v")
    got.wait_for(lambda infos: len(infos) >= 2)
    time.sleep(QUIET)
    assert got.keys() == Counter({("raw", "pending.bin"): 1, ("raw", "visible.txt"): 1})


def test_invalid_key_names_are_logged_and_skipped(local, start_watcher, caplog):
    caplog.set_level(logging.WARNING, logger="headrace.storage")
    _, got = start_watcher(local)
    bucket_dir = local.local_root() / "raw"
    (bucket_dir / "bad\nname.txt").write_bytes(b"bad")
    time.sleep(QUIET)
    (bucket_dir / "good.txt").write_bytes(b"good")
    got.wait_key("good.txt")
    time.sleep(QUIET)
    assert got.keys() == Counter({("raw", "good.txt"): 1})
    assert any("bad\\nname.txt" in r.getMessage() for r in caplog.records)


def test_key_too_long_is_skipped(local, start_watcher, caplog):
    caplog.set_level(logging.WARNING, logger="headrace.storage")
    _, got = start_watcher(local)
    folder = local.local_root() / "raw" / "/".join(["d" * 250] * 5)
    folder.mkdir(parents=True)
    (folder / "f.txt").write_bytes(b"too long a key")
    (local.local_root() / "raw" / "ok.txt").write_bytes(b"ok")
    got.wait_key("ok.txt")
    time.sleep(QUIET)
    assert got.keys() == Counter({("raw", "ok.txt"): 1})
    assert any("more than the limit" in r.getMessage() for r in caplog.records)


def test_many_files_copied_quickly_each_once(local, tmp_path, start_watcher):
    _, got = start_watcher(local)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(300):
        (src / f"f{i:03}.bin").write_bytes(os.urandom(64 + i))
    dest = local.local_root() / "raw" / "bulk"
    dest.mkdir()
    for i in range(300):
        shutil.copy(src / f"f{i:03}.bin", dest / f"f{i:03}.bin")
    got.wait_for(lambda infos: len(infos) >= 300, timeout=10)
    time.sleep(QUIET)
    counts = got.keys()
    assert len(counts) == 300
    assert set(counts.values()) == {1}
    for info in got.infos[:20]:
        assert info.etag == md5((src / info.key.split("/")[1]).read_bytes())


def test_callback_errors_do_not_stop_the_watcher(local, start_watcher, caplog):
    seen: list[str] = []

    def flaky(info: ObjectInfo) -> None:
        seen.append(info.key)
        if len(seen) == 1:
            raise RuntimeError("callback bug")

    watcher = ChangeWatcher(local, poll_interval=POLL, settle_seconds=SETTLE)
    watcher.start(flaky)
    try:
        bucket = local.bucket("raw")
        bucket.put("first", b"1")
        deadline = time.monotonic() + 3
        while "first" not in seen and time.monotonic() < deadline:
            time.sleep(0.01)
        bucket.put("second", b"2")
        while "second" not in seen and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        watcher.stop()
    assert seen == ["first", "second"]
    assert any("callback bug" in (r.exc_text or "") for r in caplog.records)


def test_vanishing_files_do_not_break_the_watcher(local, start_watcher):
    _, got = start_watcher(local)
    bucket_dir = local.local_root() / "raw"
    for i in range(50):
        p = bucket_dir / f"gone{i}.txt"
        p.write_bytes(b"short-lived")
        p.unlink()
    (bucket_dir / "stays.txt").write_bytes(b"here")
    got.wait_key("stays.txt")
    time.sleep(QUIET)
    assert set(got.keys()) <= {("raw", "stays.txt")} | {("raw", f"gone{i}.txt") for i in range(50)}
    assert got.keys()[("raw", "stays.txt")] == 1


# ------------------------------------------------------------------------------- polling


def test_polling_only_reports_copies_and_rewrites(local, tmp_path, start_watcher):
    watcher, got = start_watcher(local, use_inotify=False)
    assert not watcher.inotify_active
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload")
    shutil.copy(src, local.local_root() / "raw" / "c.bin")
    [info] = got.wait_key("c.bin")
    assert info.etag == md5(b"payload")
    local.bucket("raw").put("c.bin", b"payload v2")
    reports = got.wait_key("c.bin", count=2)
    time.sleep(QUIET)
    assert [r.etag for r in reports] == [md5(b"payload"), md5(b"payload v2")]
    assert len(got.infos) == 2


def test_polling_waits_for_a_growing_file_to_settle(local, start_watcher):
    _, got = start_watcher(local, use_inotify=False, settle_seconds=0.3)
    path = local.local_root() / "raw" / "growing.bin"
    closing_at = write_slowly(path, [b"a" * 100] * 6, pause=0.1)
    [info] = got.wait_key("growing.bin")
    reported_at = got.items[0][0]
    assert reported_at >= closing_at
    assert info.size == 600


def test_hard_link_is_caught_by_polling(local, tmp_path, start_watcher):
    _, got = start_watcher(local)
    src = tmp_path / "linked.bin"
    src.write_bytes(b"linked content")
    os.link(src, local.local_root() / "raw" / "linked.bin")
    [info] = got.wait_key("linked.bin")
    assert info.etag == md5(b"linked content")


def test_startup_scan_reports_existing_objects(local, start_watcher):
    bucket = local.bucket("raw")
    bucket.put("old/a.txt", b"a")
    bucket.put("old/b.txt", b"b")
    for key in ("old/a.txt", "old/b.txt"):
        path = bucket.local_path(key)
        os.utime(path, (time.time() - 60, time.time() - 60))
    bucket.put("fresh.txt", b"fresh")
    started = time.monotonic()
    _, got = start_watcher(local, poll_interval=0.5, settle_seconds=1.0)
    got.wait_for(lambda infos: {"old/a.txt", "old/b.txt"} <= {i.key for i in infos}, timeout=1)
    assert time.monotonic() - started < 0.8  # old objects don't wait for settle_seconds
    got.wait_key("fresh.txt", timeout=3)  # fresh ones are reported once settled
    time.sleep(0.6)
    assert got.keys() == Counter({("raw", k): 1 for k in ("old/a.txt", "old/b.txt", "fresh.txt")})


def test_scan_without_start_returns_new_objects_once(local):
    bucket = local.bucket("raw")
    bucket.put("a", b"1")
    os.utime(bucket.local_path("a"), (time.time() - 10, time.time() - 10))
    watcher = ChangeWatcher(local, settle_seconds=1)
    assert [i.key for i in watcher.scan()] == ["a"]
    assert watcher.scan() == []


def test_bucket_filter(local, start_watcher):
    local.bucket("other").put("x", b"x")
    _, got = start_watcher(local, ["raw", "new-one"])
    assert "new-one" in local.list_buckets()  # watched buckets are created
    local.bucket("raw").put("r", b"r")
    local.bucket("new-one").put("n", b"n")
    local.bucket("other").put("y", b"y")
    got.wait_for(lambda infos: len(infos) >= 2)
    time.sleep(QUIET)
    assert got.keys() == Counter({("raw", "r"): 1, ("new-one", "n"): 1})


def test_memory_store_polling(start_watcher):
    store = ObjectStore(f"memory://watch-{uuid.uuid4().hex}")
    try:
        bucket = store.bucket("raw")
        written = bucket.put("before.txt", b"before")
        watcher, got = start_watcher(store)
        assert not watcher.inotify_active
        assert got.wait_key("before.txt") == [written]
        bucket.put("a/b.txt", b"one")
        store.fs.pipe_file(f"{bucket.root}/direct.txt", b"written by fsspec")
        got.wait_for(lambda infos: len(infos) >= 3)
        time.sleep(0.01)
        bucket.put("a/b.txt", b"two")
        reports = got.wait_key("a/b.txt", count=2)
        time.sleep(QUIET)
        assert [r.etag for r in reports] == [md5(b"one"), md5(b"two")]
        assert got.keys() == Counter(
            {("raw", "before.txt"): 1, ("raw", "a/b.txt"): 2, ("raw", "direct.txt"): 1}
        )
    finally:
        store.fs.rm(store.root, recursive=True)


def test_stop_is_quick(local, start_watcher):
    watcher, _ = start_watcher(local)
    time.sleep(0.1)
    started = time.monotonic()
    watcher.stop()
    assert time.monotonic() - started < 1.0
    assert not [t for t in threading.enumerate() if t.name.startswith("headrace-watch")]


def test_deleted_bucket_folder_is_watched_again(local, start_watcher):
    # settle_seconds far beyond the wait: only inotify can report the file in time.
    watcher, got = start_watcher(local, ["raw"], settle_seconds=30)
    bucket_dir = local.local_root() / "raw"
    shutil.rmtree(bucket_dir)
    deadline = time.monotonic() + 3
    while not bucket_dir.is_dir() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(5 * POLL)
    assert watcher.inotify_active
    (bucket_dir / "after.txt").write_bytes(b"after")
    [info] = got.wait_key("after.txt", timeout=2)
    assert info.etag == md5(b"after")


def test_fifo_in_a_bucket_does_not_block_the_watcher(local, start_watcher):
    _, got = start_watcher(local)
    bucket_dir = local.local_root() / "raw"
    os.mkfifo(bucket_dir / "pipe")
    (bucket_dir / "after.txt").write_bytes(b"x")
    got.wait_key("after.txt")
    time.sleep(QUIET)
    assert got.keys() == Counter({("raw", "after.txt"): 1})
