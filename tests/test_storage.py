"""Tests of headrace.storage: key rules, buckets on file:// and memory://, atomic writes."""

from __future__ import annotations

import gc
import hashlib
import io
import os
import threading
import uuid

import pytest

from headrace.errors import InvalidKey, ObjectNotFound
from headrace.storage import ObjectStore, validate_bucket_name, validate_key
from headrace.storage.temp_names import TEMP_PREFIX

# ------------------------------------------------------------------------------ key rules

VALID_KEYS = [
    "a",
    "a/b/c.txt",
    "2024/05/01/forecast.grib2",
    "with space.txt",
    "ünïcode/ファイル.bin",
    ".hidden",  # valid key; the watcher ignores it, list shows it
    "..a/b..",
    "C:x",  # a colon is fine in S3 keys; only drive-absolute forms are rejected
    "/".join(["x" * 200] * 5)[:1024],
]


@pytest.mark.parametrize("key", VALID_KEYS)
def test_valid_keys_are_returned_unchanged(key):
    assert validate_key(key) == key


INVALID_KEYS = [
    ("", "empty"),
    ("a\x00b", "control character"),
    ("a\nb", "control character"),
    ("tab\there", "control character"),
    ("del\x7f", "control character"),
    ("/abs/path", "absolute"),
    ("C:/x", "absolute"),
    ("C:\\x", "backslash"),
    ("a\\b", "backslash"),
    ("../x", "'..'"),
    ("a/../b", "'..'"),
    ("./a", "'.'"),
    ("a/.", "'.'"),
    ("a//b", "empty segment"),
    ("a/", "empty segment"),
    ("x" * 1025, "more than the limit"),
    ("é" * 513, "more than the limit"),  # 1026 bytes in UTF-8
    (".headrace-tmp-123-x", "reserved"),
    ("a/.headrace/b", "reserved"),
    (".HEADRACE", "reserved"),
    ("y" * 256, "longer than 255 bytes"),
    ("bad\udcffname", "UTF-8"),
]


@pytest.mark.parametrize(("key", "reason"), INVALID_KEYS)
def test_invalid_keys_name_key_reason_and_fix(key, reason):
    with pytest.raises(InvalidKey) as excinfo:
        validate_key(key)
    message = str(excinfo.value)
    # the key as written; a long one by its start (see the test of abbreviation below)
    assert (repr(key) if len(key) <= 100 else repr(key)[:40]) in message
    assert reason in message
    assert "(fix: " in message


def test_non_string_key_is_rejected():
    with pytest.raises(InvalidKey, match="not a str"):
        validate_key(b"bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["abc", "raw-data", "my.bucket.2", "a" * 63, "0ab"])
def test_valid_bucket_names(name):
    assert validate_bucket_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["ab", "a" * 64, "Raw", "raw_data", "-raw", "raw-", ".raw", "raw.", "a..b", "192.168.1.1", ""],
)
def test_invalid_bucket_names(name):
    with pytest.raises(InvalidKey) as excinfo:
        validate_bucket_name(name)
    assert repr(name) in str(excinfo.value)
    assert "(fix: " in str(excinfo.value)


# ---------------------------------------------------------------------------- store fixture


@pytest.fixture(params=["file", "memory"])
def store(request, tmp_path):
    if request.param == "file":
        yield ObjectStore(f"file://{tmp_path}/store")
        return
    root = f"memory://test-{uuid.uuid4().hex}"
    s = ObjectStore(root)
    try:
        yield s
    finally:
        if s.fs.exists(s.root):
            s.fs.rm(s.root, recursive=True)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def visible_names(store, bucket) -> list[str]:
    """Every file under the bucket as the file system sees it, temp files included."""
    return sorted(p.rsplit("/", 1)[-1] for p in store.fs.find(bucket.root))


# ------------------------------------------------------------------------------ basic I/O


def test_put_get_head_list_delete(store):
    b = store.bucket("raw")
    info = b.put("a/b/c.txt", b"hello")
    assert (info.bucket, info.key, info.size, info.etag) == ("raw", "a/b/c.txt", 5, md5(b"hello"))
    assert b.get("a/b/c.txt") == b"hello"
    assert b.head("a/b/c.txt") == info
    assert b.exists("a/b/c.txt")
    assert not b.exists("a/b")
    b.put("a/z.txt", b"z")
    b.put("top.bin", b"")
    assert [i.key for i in b.list()] == ["a/b/c.txt", "a/z.txt", "top.bin"]
    assert [i.key for i in b.list("a/")] == ["a/b/c.txt", "a/z.txt"]
    assert [i.key for i in b.list("a/b")] == ["a/b/c.txt"]
    assert [i.key for i in b.list("t")] == ["top.bin"]
    assert b.list("nothing/") == []
    assert b.head("top.bin").etag == md5(b"")
    b.delete("a/b/c.txt")
    assert not b.exists("a/b/c.txt")
    assert [i.key for i in b.list()] == ["a/z.txt", "top.bin"]


def test_missing_objects_raise_object_not_found(store):
    b = store.bucket("raw")
    b.put("dir/file", b"x")
    for call in (b.get, b.head, b.delete, b.open):
        with pytest.raises(ObjectNotFound) as excinfo:
            call("nope.txt")
        assert "'nope.txt'" in str(excinfo.value)
        assert "'raw'" in str(excinfo.value)
    with pytest.raises(ObjectNotFound):
        b.head("dir")  # a prefix is not an object
    with pytest.raises(ObjectNotFound):
        b.get("dir")


def test_invalid_keys_are_rejected_by_every_method(store):
    b = store.bucket("raw")
    for call in (b.get, b.head, b.delete, b.exists, b.url, b.local_path):
        with pytest.raises(InvalidKey):
            call("../escape")
    with pytest.raises(InvalidKey):
        b.put("/abs", b"x")
    with pytest.raises(InvalidKey):
        b.list("../")


def test_open_read_and_write(store):
    b = store.bucket("raw")
    with b.open("w.bin", "wb") as f:
        f.write(b"part1-")
        f.write(memoryview(b"part2"))
        assert f.tell() == 11
    assert f.info.etag == md5(b"part1-part2")
    with b.open("w.bin") as f:
        assert f.read() == b"part1-part2"
    with pytest.raises(ValueError, match="mode"):
        b.open("w.bin", "a")


def test_put_from_file_objects_and_paths(store, tmp_path):
    b = store.bucket("raw")
    payload = os.urandom(3 * 1024 * 1024 + 17)  # several chunks
    info = b.put("stream.bin", io.BytesIO(payload))
    assert info.size == len(payload) and info.etag == md5(payload)
    src = tmp_path / "src.bin"
    src.write_bytes(payload[:1000])
    assert b.put_file("copied.bin", src).etag == md5(payload[:1000])
    dst = tmp_path / "out.bin"
    b.get_file("stream.bin", dst)
    assert dst.read_bytes() == payload
    with pytest.raises(TypeError):
        b.put("text.txt", "not bytes")  # type: ignore[arg-type]


def test_version_is_stable_until_rewrite(store):
    b = store.bucket("raw")
    first = b.put("k", b"one")
    assert b.head("k").version == first.version
    assert b.head("k").version == first.version
    second = b.put("k", b"two")
    assert second.version != first.version
    assert b.head("k") == second
    assert int(second.sequencer, 16) >= int(first.sequencer, 16)
    third = b.put("k", b"two")  # same content, still a new version
    assert third.version != second.version
    assert third.etag == second.etag


def test_buckets(store):
    assert store.list_buckets() == []
    store.bucket("raw")
    store.bucket("out.v2")
    assert store.list_buckets() == ["out.v2", "raw"]
    with pytest.raises(ObjectNotFound, match="'missing'"):
        store.bucket("missing", create=False)
    assert store.bucket("raw", create=False).name == "raw"
    with pytest.raises(InvalidKey):
        store.bucket("Bad_Name")


def test_urls_and_local_paths(store):
    b = store.bucket("raw")
    assert store.url.startswith(("file:///", "memory://"))
    assert b.url("k") == f"{store.url}/raw/k"
    b.put("x/y.txt", b"1")
    url = b.url("x/y.txt")
    assert url.endswith("/raw/x/y.txt")
    assert url.startswith(store.url)
    if store.local_root() is None:
        assert url.startswith("memory://")
        assert b.local_path("x/y.txt") is None
    else:
        assert url.startswith("file:///")
        path = b.local_path("x/y.txt")
        assert path is not None and path.read_bytes() == b"1"
        assert path.parent.parent.parent == store.local_root()


def test_relative_and_plain_paths_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = ObjectStore("rel/store")
    assert store.local_root() == tmp_path / "rel" / "store"
    assert store.url == f"file://{tmp_path}/rel/store"
    plain = ObjectStore(str(tmp_path / "plain"))
    plain.bucket("raw").put("k", b"v")
    assert (tmp_path / "plain" / "raw" / "k").read_bytes() == b"v"


def test_local_object_cannot_also_be_a_prefix(tmp_path):
    b = ObjectStore(tmp_path).bucket("raw")
    b.put("a", b"x")
    with pytest.raises(InvalidKey, match="clashes"):
        b.put("a/b", b"y")
    b.put("d/e", b"y")
    with pytest.raises(InvalidKey, match="clashes"):
        b.put("d", b"z")
    assert [i.key for i in b.list()] == ["a", "d/e"]
    assert not [n for n in os.listdir(tmp_path / "raw") if n.startswith(TEMP_PREFIX)]


def test_head_sees_in_place_rewrite_of_same_size(tmp_path):
    b = ObjectStore(tmp_path).bucket("raw")
    path = tmp_path / "raw" / "f"
    path.write_bytes(b"aaaa")
    first = b.head("f")
    assert first.etag == md5(b"aaaa")
    path.write_bytes(b"bbbb")  # same inode, same size: only the timestamps move
    second = b.head("f")
    assert second.etag == md5(b"bbbb")


# ---------------------------------------------------------------------------- atomicity


def test_exception_inside_open_leaves_nothing(store):
    b = store.bucket("raw")
    with pytest.raises(RuntimeError), b.open("new.bin", "wb") as f:
        f.write(b"partial")
        raise RuntimeError("boom")
    assert not b.exists("new.bin")
    b.put("old.bin", b"old")
    with pytest.raises(RuntimeError), b.open("old.bin", "wb") as f:
        f.write(b"new but failed")
        raise RuntimeError("boom")
    assert b.get("old.bin") == b"old"
    assert visible_names(store, b) == ["old.bin"]


def test_unclosed_writer_is_discarded_not_published(store):
    b = store.bucket("raw")
    f = b.open("dropped.bin", "wb")
    f.write(b"data")
    del f
    gc.collect()
    assert not b.exists("dropped.bin")
    assert visible_names(store, b) == []


def test_list_hides_writes_in_progress(store):
    b = store.bucket("raw")
    b.put("done.txt", b"1")
    with b.open("sub/pending.txt", "wb") as f:
        f.write(b"x" * 10)
        names = visible_names(store, b)
        assert any(n.startswith(TEMP_PREFIX) for n in names)  # the temp object is there...
        assert [i.key for i in b.list()] == ["done.txt"]  # ...but list doesn't show it
        assert not b.exists("sub/pending.txt")
    assert [i.key for i in b.list()] == ["done.txt", "sub/pending.txt"]
    assert not any(n.startswith(TEMP_PREFIX) for n in visible_names(store, b))


def test_reader_never_sees_a_partial_object(store):
    b = store.bucket("raw")
    big_a = b"a" * (2 * 1024 * 1024)
    big_b = b"b" * (3 * 1024 * 1024 + 5)
    b.put("big.bin", big_a)
    stop = threading.Event()
    errors: list[str] = []

    def writer():
        try:
            for i in range(12):
                b.put("big.bin", big_b if i % 2 == 0 else big_a)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))
        finally:
            stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    while not stop.is_set() or reads < 5:
        data = b.get("big.bin")
        reads += 1
        if data not in (big_a, big_b):
            errors.append(f"torn read of {len(data)} bytes")
            break
    thread.join()
    assert not errors
    assert b.get("big.bin") in (big_a, big_b)
    assert visible_names(store, b) == ["big.bin"]


def test_concurrent_writers_of_one_key_never_tear(store):
    b = store.bucket("raw")
    payloads = [bytes([65 + i]) * (512 * 1024 + i) for i in range(4)]
    barrier = threading.Barrier(len(payloads))

    def write(p: bytes) -> None:
        barrier.wait()
        for _ in range(3):
            b.put("same.bin", p)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = b.get("same.bin")
    assert final in payloads
    assert b.head("same.bin").etag == md5(final)
    assert visible_names(store, b) == ["same.bin"]


def test_put_info_matches_head_for_local_files(tmp_path):
    # The etag computed while writing is cached under the file's identity, and head must
    # agree with it exactly (same version and sequencer), without re-reading.
    b = ObjectStore(tmp_path).bucket("raw")
    info = b.put("k.bin", os.urandom(100_000))
    assert b.head("k.bin") == info


def test_special_files_are_not_objects(tmp_path):
    b = ObjectStore(tmp_path).bucket("raw")
    b.put("real.txt", b"r")
    os.mkfifo(tmp_path / "raw" / "pipe")
    assert [i.key for i in b.list()] == ["real.txt"]  # and list did not block on the FIFO
    with pytest.raises(ObjectNotFound):
        b.head("pipe")


def test_a_too_long_key_is_abbreviated_in_its_error():
    from headrace.errors import InvalidKey
    from headrace.storage.keys import validate_key

    key = "raw/" + "a" * 1100 + "/end.csv"
    with pytest.raises(InvalidKey) as caught:
        validate_key(key)
    said = str(caught.value)
    assert len(said) < 300, said  # not the whole 1,112 characters again
    assert said.startswith("object key 'raw/aaa") and "..." in said, said
    assert "end.csv'" in said and "is 1112 bytes long in UTF-8" in said, said
