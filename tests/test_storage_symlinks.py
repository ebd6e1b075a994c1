"""Symbolic links inside a local bucket are not objects and are never followed.

Real links on a real file system: links to files and folders, pointing out of the bucket and
back into it, made before and during a watch; every Bucket operation, the watcher (inotify and
polling) and `headrace put`."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from headrace.app import load_app
from headrace.config import load_settings
from headrace.errors import InvalidKey, ObjectNotFound
from headrace.ledger import Ledger
from headrace.server.coordinator import Coordinator
from headrace.storage import ChangeWatcher, ObjectStore
from tests.e2e_helpers import headrace

pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")

SECRET = b"outside the bucket\n"


@pytest.fixture
def setup(tmp_path):
    """(store, bucket, bucket folder, outside folder holding secret.txt)."""
    store = ObjectStore(tmp_path / "store")
    bucket = store.bucket("landing")
    root = store.local_root() / "landing"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    return store, bucket, root, outside


def _outside_untouched(outside):
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_bytes() == SECRET


# -- links pointing out of the bucket ---------------------------------------------------------


def test_a_file_link_out_of_the_bucket_is_not_an_object(setup):
    _, bucket, root, outside = setup
    os.symlink(outside / "secret.txt", root / "escaped.txt")
    for read in (bucket.get, bucket.head, lambda k: bucket.open(k, "rb")):
        with pytest.raises(ObjectNotFound, match=r"'escaped\.txt' in bucket 'landing': is a sym"):
            read("escaped.txt")
    with pytest.raises(ObjectNotFound, match="never follows links"):
        bucket.get_file("escaped.txt", setup[2].parent / "copy")
    assert not bucket.exists("escaped.txt")
    assert bucket.list() == []
    with pytest.raises(ObjectNotFound, match="symbolic link"):
        bucket.delete("escaped.txt")
    with pytest.raises(InvalidKey, match="is a symbolic link"):
        bucket.put("escaped.txt", b"overwrite?")
    assert os.path.islink(root / "escaped.txt")  # the link is left as it was
    assert not list(root.glob(".headrace-tmp-*"))  # and no temp file is left behind
    _outside_untouched(outside)


def test_a_folder_link_out_of_the_bucket_is_never_entered(setup):
    _, bucket, root, outside = setup
    os.symlink(outside, root / "linkdir", target_is_directory=True)
    with pytest.raises(InvalidKey, match="lies under 'linkdir', which is a symbolic link"):
        bucket.put("linkdir/escaped.txt", b"written through the link")
    with pytest.raises(InvalidKey, match="linkdir"):
        bucket.put("linkdir/new/deeper.txt", b"x")  # no folder is made out there either
    with pytest.raises(ObjectNotFound, match="lies under 'linkdir'"):
        bucket.get("linkdir/secret.txt")
    with pytest.raises(ObjectNotFound, match="lies under 'linkdir'"):
        bucket.head("linkdir/secret.txt")
    with pytest.raises(ObjectNotFound, match="lies under 'linkdir'"):
        bucket.delete("linkdir/secret.txt")
    assert not bucket.exists("linkdir/secret.txt")
    assert bucket.list() == [] and bucket.list("linkdir/") == []
    _outside_untouched(outside)


def test_links_deeper_in_the_bucket_are_refused_too(setup):
    _, bucket, root, outside = setup
    bucket.put("a/b/real.txt", b"real")
    os.symlink(outside, root / "a" / "b" / "out")
    with pytest.raises(InvalidKey, match="lies under 'a/b/out'"):
        bucket.put("a/b/out/x.txt", b"x")
    assert [i.key for i in bucket.list()] == ["a/b/real.txt"]
    assert [i.key for i in bucket.list("a/b/")] == ["a/b/real.txt"]
    _outside_untouched(outside)


# -- links that stay inside the bucket ---------------------------------------------------------


def test_links_inside_the_bucket_are_not_objects_either(setup):
    # One key, one file: a link would make two keys (and two events) for one object, and
    # could be re-pointed out of the bucket at any time.
    _, bucket, root, _ = setup
    bucket.put("data/real.txt", b"real")
    os.symlink("real.txt", root / "data" / "alias.txt")
    os.symlink("data", root / "alias-dir", target_is_directory=True)
    assert [i.key for i in bucket.list()] == ["data/real.txt"]
    with pytest.raises(ObjectNotFound, match="symbolic link"):
        bucket.get("data/alias.txt")
    with pytest.raises(ObjectNotFound, match="lies under 'alias-dir'"):
        bucket.get("alias-dir/real.txt")
    assert bucket.get("data/real.txt") == b"real"


def test_a_bucket_folder_that_is_itself_a_link_works(tmp_path):
    # The operator's way to put a bucket on another disk: configuration, not bucket content.
    disk = tmp_path / "disk" / "landing"
    disk.mkdir(parents=True)
    (tmp_path / "store").mkdir()
    os.symlink(disk, tmp_path / "store" / "landing", target_is_directory=True)
    bucket = ObjectStore(tmp_path / "store").bucket("landing")
    bucket.put("x/y.txt", b"y")
    assert (disk / "x" / "y.txt").read_bytes() == b"y"
    assert [i.key for i in bucket.list()] == ["x/y.txt"] and bucket.get("x/y.txt") == b"y"


# -- races: a folder swapped for a link while in use -------------------------------------------


def test_a_folder_swapped_for_a_link_during_a_write_does_not_redirect_it(setup):
    _, bucket, root, outside = setup
    writer = bucket.open("sub/x.txt", "wb")
    writer.write(b"data")
    os.rename(root / "sub", root / "sub-moved")
    os.symlink(outside, root / "sub", target_is_directory=True)
    writer.close()  # renames inside the folder it opened, wherever that folder now is
    _outside_untouched(outside)
    assert (root / "sub-moved" / "x.txt").read_bytes() == b"data"


def test_a_folder_swapped_for_a_link_after_listing_is_not_read(setup):
    store, bucket, root, outside = setup
    (outside / "x.txt").write_bytes(SECRET)
    bucket.put("sub/x.txt", b"inside")
    watcher = ChangeWatcher(store, ["landing"], use_inotify=False, settle_seconds=0)
    seen = []
    watcher._on_object = seen.append
    listed = list(watcher._list_all())
    assert [o.key for o in listed] == ["sub/x.txt"]
    os.rename(root / "sub", root / "sub-moved")
    os.symlink(outside, root / "sub", target_is_directory=True)
    assert watcher._report_local("landing", "sub/x.txt", listed[0].ref) is None
    assert seen == []


def test_folders_swapped_for_links_during_a_listing_are_not_entered(setup):
    store, bucket, root, outside = setup
    for name in "abcdefgh":
        bucket.put(f"{name}/file.txt", name.encode())
    watcher = ChangeWatcher(store, ["landing"], use_inotify=False)
    listing = watcher._list_all()
    first = next(listing)
    # Swap every other folder for a link out while the walk is under way.
    for name in "abcdefgh":
        if not first.key.startswith(name + "/"):
            os.rename(root / name, root / f"{name}-moved")
            os.symlink(outside, root / name, target_is_directory=True)
    rest = list(listing)
    assert not any(o.key.endswith("secret.txt") for o in rest), [o.key for o in rest]


# -- the watcher -------------------------------------------------------------------------------


class Seen:
    def __init__(self) -> None:
        self.keys: list[str] = []
        self.etags: dict[str, str] = {}
        self._cond = threading.Condition()

    def __call__(self, info) -> None:
        with self._cond:
            self.keys.append(info.key)
            self.etags[info.key] = info.etag
            self._cond.notify_all()

    def wait_key(self, key: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while key not in self.keys:
                left = deadline - time.monotonic()
                assert left > 0, f"{key} not reported; got {self.keys}"
                self._cond.wait(left)


@pytest.mark.parametrize("inotify", [True, False], ids=["inotify", "polling"])
def test_the_watcher_ingests_no_link(setup, inotify, caplog):
    store, _, root, outside = setup
    os.symlink(outside / "secret.txt", root / "before.txt")  # there before the watch
    os.symlink(outside, root / "dir-before", target_is_directory=True)
    seen = Seen()
    caplog.set_level(logging.WARNING, logger="headrace.storage")
    with ChangeWatcher(
        store, ["landing"], poll_interval=0.05, settle_seconds=0.1, use_inotify=inotify
    ) as watcher:
        watcher.start(seen)
        # made during the watch: file and folder links, a link renamed into place, and a
        # folder holding a link moved in
        os.symlink(outside / "secret.txt", root / "during.txt")
        os.symlink(outside, root / "dir-during", target_is_directory=True)
        os.symlink(outside / "secret.txt", root.parent / "staged-link")
        os.rename(root.parent / "staged-link", root / "renamed-link.txt")
        staged = root.parent / "staged-dir"
        staged.mkdir()
        os.symlink(outside / "secret.txt", staged / "inner-link.txt")
        (staged / "real.txt").write_bytes(b"real in moved folder")
        os.rename(staged, root / "moved")
        (root / "plain.txt").write_bytes(b"plain")
        seen.wait_key("plain.txt")
        seen.wait_key("moved/real.txt")
        time.sleep(0.5)  # several more polls: anything else would have shown up by now
    assert sorted(seen.keys) == ["moved/real.txt", "plain.txt"]
    assert hashlib.md5(SECRET).hexdigest() not in seen.etags.values()
    assert "during.txt: a symbolic link is not an object" in caplog.text


# -- the CLI -------------------------------------------------------------------------------------


def test_headrace_put_through_a_linked_folder_is_refused(tmp_path):
    home = tmp_path / "home"
    outside = tmp_path / "outside"
    outside.mkdir()
    (home / "buckets" / "landing").mkdir(parents=True)
    os.symlink(outside, home / "buckets" / "landing" / "linkdir", target_is_directory=True)
    words = tmp_path / "words.txt"
    words.write_text("one two")
    result = headrace(
        "put",
        str(words),
        "landing/linkdir/escaped.txt",
        project=tmp_path,
        env={"HEADRACE_HOME": str(home)},
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("error: object key 'linkdir/escaped.txt' in bucket 'landing'")
    assert "lies under 'linkdir', which is a symbolic link" in line
    assert list(outside.iterdir()) == []


# -- the coordinator ---------------------------------------------------------------------------


def test_the_coordinator_triggers_nothing_for_links(tmp_path):
    """A link to a system file in a watched bucket was ingested and its content read."""
    app_dir = Path(__file__).parent / "apps" / "basic"
    settings = load_settings(app_dir, home=str(tmp_path / "home"), poll_interval=0.1, workers=1)
    buckets = Path(settings.storage_url)
    inbox = buckets / "inbox" / "echo"
    inbox.mkdir(parents=True)
    os.symlink("/etc/passwd", inbox / "system-file.txt")  # there before the start
    coordinator = Coordinator(settings, load_app(settings))
    thread = threading.Thread(target=coordinator.run, kwargs={"drain_timeout": 5})
    thread.start()
    ledger = Ledger(settings.ledger_url)
    try:
        assert coordinator.ready.wait(30)
        os.symlink("/etc", inbox / "etc", target_is_directory=True)  # made while watching
        os.symlink("/etc/hostname", inbox / "hostname.txt")
        (inbox / "real.txt").write_bytes(b"real")
        deadline = time.time() + 30
        while time.time() < deadline:
            rows = ledger.list_invocations(function="echo", limit=100)
            if rows and all(r["status"] in ("succeeded", "dead") for r in rows):
                break
            time.sleep(0.05)
        time.sleep(1.0)  # ten more polls
        rows = ledger.list_invocations(function="echo", limit=100)
        keys = [
            json.loads(r["payload"])["Records"][0]["s3"]["object"]["key"]
            if isinstance(r["payload"], str)
            else r["payload"]["Records"][0]["s3"]["object"]["key"]
            for r in rows
        ]
        assert keys == ["echo/real.txt"]
    finally:
        coordinator.stop()
        thread.join(30)
        ledger.close()
