"""Buckets of objects over fsspec, with atomic writes.

A store is a root URL whose top-level folders are buckets. Local folders get a fast path on
plain `os` calls (fsync, rename, stat identity); every other fsspec file system goes through
the generic `fs` calls, so `s3://` works once s3fs is installed, and `memory://` serves tests.

Writers never expose a partial object: data goes to a temp object in the target folder whose
name starts with `.headrace-tmp-` (a reserved, hidden segment that `list` and the watcher skip),
and is renamed into place only once complete.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import logging
import os
import pathlib
import shutil
import stat as _stat
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import fsspec
from fsspec.implementations.local import LocalFileSystem

from headrace.errors import InvalidKey, ObjectNotFound
from headrace.storage.beneath import (
    SymlinkInBucket,
    lstat_at,
    open_at,
    open_file,
    open_parent,
    walk,
)
from headrace.storage.keys import RESERVED_PREFIX, validate_bucket_name, validate_key
from headrace.storage.temp_names import FOREIGN_TEMP_PREFIXES, temp_name

logger = logging.getLogger("headrace.storage")

CHUNK_SIZE = 1 << 20
_WRITE_BUFFER = 256 * 1024
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One version of one object, as S3 would describe it in an event record."""

    bucket: str
    key: str
    size: int
    etag: str
    """Hex MD5 of the content, without quotes."""
    last_modified: float
    """Epoch seconds."""
    version: str
    """Same string while the object is unchanged; a new one after any rewrite."""
    sequencer: str
    """Upper-case hex that grows with each new version of a key, for ordering events."""


def _new_md5() -> Any:
    return hashlib.md5(usedforsecurity=False)


class _LRU:
    """A small thread-safe LRU for MD5s, so repeated `head`/`list` calls don't re-read data."""

    def __init__(self, maxsize: int = 8192) -> None:
        self._data: OrderedDict[tuple, str] = OrderedDict()
        self._lock = threading.Lock()
        self._maxsize = maxsize

    def get(self, key: tuple) -> str | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: tuple, value: str) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._maxsize:
                self._data.popitem(last=False)


_MD5_CACHE = _LRU()


class ObjectChanged(Exception):
    """The object changed while it was being read; its MD5 would describe no real version."""


# ---------------------------------------------------------------------------- local helpers


def _stat_cache_key(path: str, st: os.stat_result) -> tuple:
    # ctime as well as mtime: an in-place rewrite that restores mtime (cp -p, rsync -t) still
    # moves ctime, which user space cannot set.
    return (path, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _same_content(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_ino, a.st_dev, a.st_size, a.st_mtime_ns) == (
        b.st_ino,
        b.st_dev,
        b.st_size,
        b.st_mtime_ns,
    )


def local_version(st: os.stat_result) -> str:
    """Version string of a local file: changes on any rewrite, including rename over it."""
    return f"{st.st_mtime_ns:x}-{st.st_size:x}-{st.st_ino:x}"


def _local_sequencer(st: os.stat_result) -> str:
    # ctime, not mtime: rsync -t and cp -p put an old mtime on a new version, but the kernel
    # sets ctime to "now" on every write and rename, so it grows with each version.
    return f"{max(st.st_mtime_ns, st.st_ctime_ns):016X}"


def info_from_stat(bucket: str, key: str, st: os.stat_result, etag: str) -> ObjectInfo:
    return ObjectInfo(
        bucket=bucket,
        key=key,
        size=st.st_size,
        etag=etag,
        last_modified=st.st_mtime,
        version=local_version(st),
        sequencer=_local_sequencer(st),
    )


def open_local_object(root: str, key: str) -> int:
    """Read descriptor of the regular file `key` under the bucket folder `root`, reached
    without following links (SymlinkInBucket otherwise; IsADirectoryError for anything that
    is not a regular file, FileNotFoundError if missing)."""
    # O_NONBLOCK: a FIFO dropped into a bucket must not block the opener forever; it has no
    # effect on regular files.
    fd = open_file(root, key, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not _stat.S_ISREG(os.fstat(fd).st_mode):
            raise IsADirectoryError(f"{root}/{key}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def hash_local_file(
    root: str, key: str, cancel: threading.Event | None = None
) -> tuple[os.stat_result, str]:
    """Stat and MD5 of the object `key` in the bucket folder `root`, read through one
    descriptor so both describe the same inode; uses the cache when that exact version was
    hashed (or written) before. No link is followed (see `headrace.storage.beneath`).

    Raises ObjectChanged if the file was modified while being read, FileNotFoundError if gone,
    SymlinkInBucket if the key is or lies under a link.
    """
    return _hash_descriptor(open_local_object(root, key), f"{root}/{key}", cancel)


def cached_etag(path: str, st: os.stat_result) -> str | None:
    """The MD5 of the file version `st` at `path` if it was hashed or written before."""
    return _MD5_CACHE.get(_stat_cache_key(path, st))


def _hash_descriptor(
    fd: int, path: str, cancel: threading.Event | None
) -> tuple[os.stat_result, str]:
    """hash_local_file on a descriptor of a regular file; closes it."""
    with open(fd, "rb", buffering=0) as f:
        before = os.fstat(f.fileno())
        if not _stat.S_ISREG(before.st_mode):
            raise IsADirectoryError(path)  # swapped for a folder or FIFO since it was listed
        cache_key = _stat_cache_key(path, before)
        cached = _MD5_CACHE.get(cache_key)
        if cached is not None:
            return before, cached
        md5 = _new_md5()
        buf = bytearray(CHUNK_SIZE)
        view = memoryview(buf)
        while n := f.readinto(buf):
            md5.update(view[:n])
            if cancel is not None and cancel.is_set():
                raise ObjectChanged(path)
        after = os.fstat(f.fileno())
    if not _same_content(before, after) or after.st_ctime_ns != before.st_ctime_ns:
        raise ObjectChanged(path)
    etag = md5.hexdigest()
    _MD5_CACHE.put(cache_key, etag)
    return before, etag


# --------------------------------------------------------------------------- remote helpers

_MTIME_FIELDS = ("mtime", "LastModified", "last_modified", "modified", "updated", "created")
_VERSION_FIELDS = ("VersionId", "version_id", "generation")


def _to_epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.UTC)
        return value.timestamp()
    if isinstance(value, str):
        try:
            return _to_epoch(_dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


def _native_etag(info: Mapping[str, Any]) -> str | None:
    """The store's own MD5 if it has one: S3 gives it for single-part uploads only."""
    for field in ("ETag", "etag", "md5"):
        value = info.get(field)
        if isinstance(value, str):
            value = value.strip('"').lower()
            if len(value) == 32 and set(value) <= _HEX:
                return value
    return None


def remote_signature(info: Mapping[str, Any]) -> tuple[str, int, float | None]:
    """(version, sequencer as int, mtime) of an object from an fsspec info/find entry."""
    size = int(info.get("size") or 0)
    mtime = None
    for field in _MTIME_FIELDS:
        mtime = _to_epoch(info.get(field))
        if mtime is not None:
            break
    mtime_ns = round(mtime * 1e9) if mtime is not None else 0
    parts = [f"{mtime_ns:x}", f"{size:x}"]
    for field in _VERSION_FIELDS:
        value = info.get(field)
        if value not in (None, "", "null"):
            parts.append(str(value))
            break
    else:
        etag = info.get("ETag") or info.get("etag")
        if etag:
            parts.append(str(etag).strip('"'))
    return "-".join(parts), mtime_ns, mtime


# ------------------------------------------------------------------------------ the store


class ObjectStore:
    """A root URL whose top-level folders are buckets."""

    def __init__(self, url: str | os.PathLike[str], **storage_options: Any) -> None:
        url = os.fspath(url)
        if "://" in url or "::" in url:
            fs, root = fsspec.core.url_to_fs(url, **storage_options)
        else:
            fs, root = fsspec.filesystem("file", **storage_options), url
        self.fs: fsspec.AbstractFileSystem = fs
        self._local = isinstance(fs, LocalFileSystem)
        if self._local:
            root = os.path.abspath(root)
            os.makedirs(root, exist_ok=True)
        else:
            root = root.rstrip("/")
        self.root: str = root
        """The root in the fsspec path form of `fs` (no protocol)."""
        # fsspec's own spelling (no percent-encoding), so Bucket.url() values start with it.
        self.url: str = fs.unstrip_protocol(root)

    def __repr__(self) -> str:
        return f"ObjectStore({self.url!r})"

    @property
    def is_local(self) -> bool:
        return self._local

    def local_root(self) -> pathlib.Path | None:
        return pathlib.Path(self.root) if self._local else None

    def bucket(self, name: str, *, create: bool = True) -> Bucket:
        validate_bucket_name(name)
        path = f"{self.root}/{name}"
        if self._local:
            if create:
                os.makedirs(path, exist_ok=True)
            exists = os.path.isdir(path)
        else:
            if create:
                # On object stores a "folder" is only a prefix; makedirs is a no-op there and
                # makes the bucket visible to list_buckets on memory://.
                with contextlib.suppress(FileExistsError):
                    self.fs.makedirs(path, exist_ok=True)
            exists = create or self.fs.isdir(path)
        if not exists:
            raise ObjectNotFound(
                f"bucket {name!r}",
                f"does not exist in {self.url}",
                "create it with store.bucket(name) or check the spelling",
            )
        return Bucket(self, name)

    def list_buckets(self) -> list[str]:
        names: list[str] = []
        if self._local:
            try:
                with os.scandir(self.root) as it:
                    names = [e.name for e in it if e.is_dir()]
            except FileNotFoundError:
                return []
        else:
            with contextlib.suppress(Exception):
                self.fs.invalidate_cache(self.root)
            try:
                entries = self.fs.ls(self.root, detail=True)
            except FileNotFoundError:
                return []
            names = [
                e["name"].rstrip("/").rsplit("/", 1)[-1]
                for e in entries
                if e.get("type") == "directory"
            ]
        return sorted(n for n in names if _is_bucket_name(n))


def _open_remote(fs: fsspec.AbstractFileSystem, path: str) -> BinaryIO:
    if "memory" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        # memory:// hands every reader the same BytesIO, so concurrent readers (the watcher
        # hashing, a function reading) would share one position; give each its own copy.
        return io.BytesIO(fs.cat_file(path))
    return fs.open(path, "rb")


def _is_bucket_name(name: str) -> bool:
    try:
        validate_bucket_name(name)
    except InvalidKey:
        return False
    return True


class Bucket:
    """One bucket of a store. Methods validate keys and raise headrace errors."""

    def __init__(self, store: ObjectStore, name: str) -> None:
        self.store = store
        self.name = name
        self.root = f"{store.root}/{name}"

    def __repr__(self) -> str:
        return f"Bucket({self.store.url!r}, {self.name!r})"

    # -- paths

    def _path(self, key: str) -> str:
        return f"{self.root}/{validate_key(key)}"

    def url(self, key: str) -> str:
        """fsspec URL of the object, for handing to other fsspec-aware code."""
        return self.store.fs.unstrip_protocol(self._path(key))

    def local_path(self, key: str) -> pathlib.Path | None:
        """The file path of the object on a local store (None elsewhere). Opening it by path
        follows links, which the bucket's own methods never do: read objects through those."""
        path = self._path(key)  # validates the key on every store kind
        return pathlib.Path(path) if self.store.is_local else None

    def _not_found(self, key: str, why: str = "does not exist") -> ObjectNotFound:
        return ObjectNotFound(
            f"object {key!r} in bucket {self.name!r}",
            why,
            f"check the key with `list` on {self.store.url}/{self.name}, or write it first",
        )

    def _link_reason(self, key: str, link: str) -> str:
        where = (
            "is a symbolic link"
            if link == key
            else f"lies under {link!r}, which is a symbolic link"
        )
        return f"{where}; headrace never follows links inside a bucket (one could lead out of it)"

    def _linked(self, key: str, exc: SymlinkInBucket) -> ObjectNotFound:
        return ObjectNotFound(
            f"object {key!r} in bucket {self.name!r}",
            self._link_reason(key, exc.link),
            "copy the file into the bucket instead of linking to it",
        )

    def _link_in_the_way(self, key: str, exc: SymlinkInBucket) -> InvalidKey:
        return InvalidKey(
            f"object key {key!r} in bucket {self.name!r}",
            self._link_reason(key, exc.link),
            f"remove the link {exc.link!r} from the bucket folder, or choose another key",
        )

    # -- writes

    def open(self, key: str, mode: str = "rb") -> BinaryIO:
        """Open an object. "wb" gives an atomic writer: the object appears only when it is
        closed without error, and is discarded if the with-block raises."""
        path = self._path(key)
        if mode == "wb":
            if self.store.is_local:
                return _LocalAtomicWriter(self, key, path)  # type: ignore[return-value]
            return _RemoteAtomicWriter(self, key, path)  # type: ignore[return-value]
        if mode != "rb":
            raise ValueError(f"Bucket.open supports mode 'rb' or 'wb', not {mode!r}")
        try:
            if self.store.is_local:
                return open(open_local_object(self.root, key), "rb")
            return _open_remote(self.store.fs, path)
        except SymlinkInBucket as exc:
            raise self._linked(key, exc) from None
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise self._not_found(key) from None

    def put(self, key: str, data: bytes | bytearray | memoryview | BinaryIO) -> ObjectInfo:
        """Write an object atomically from bytes or a binary file object."""
        if isinstance(data, str):
            raise TypeError("Bucket.put takes bytes or a binary file; encode text first")
        writer = self.open(key, "wb")
        with writer:
            if isinstance(data, (bytes, bytearray, memoryview)):
                writer.write(data)
            else:
                while chunk := data.read(CHUNK_SIZE):
                    writer.write(chunk)
        return writer.info  # type: ignore[attr-defined]

    def put_file(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        """Copy a local file into the bucket atomically."""
        with open(path, "rb") as src:
            return self.put(key, src)

    # -- reads

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            if self.store.is_local:
                with open(open_local_object(self.root, key), "rb") as f:
                    return f.read()
            return self.store.fs.cat_file(path)
        except SymlinkInBucket as exc:
            raise self._linked(key, exc) from None
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise self._not_found(key) from None

    def get_file(self, key: str, path: str | os.PathLike[str]) -> None:
        """Copy the object to a local file."""
        with self.open(key, "rb") as src, open(path, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK_SIZE)

    def head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        if self.store.is_local:
            for _ in range(5):
                try:
                    st, etag = hash_local_file(self.root, key)
                except SymlinkInBucket as exc:
                    raise self._linked(key, exc) from None
                except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                    raise self._not_found(key) from None
                except ObjectChanged:
                    continue  # being rewritten in place: try again for a consistent version
                return info_from_stat(self.name, key, st, etag)
            raise self._not_found(key, "is being rewritten in place and never held still")
        try:
            info = self.store.fs.info(path)
        except (FileNotFoundError, NotADirectoryError):
            raise self._not_found(key) from None
        if info.get("type") != "file":
            raise self._not_found(key, "is a prefix (folder), not an object")
        return self.remote_info(key, path, info)

    def remote_info(self, key: str, path: str, info: Mapping[str, Any]) -> ObjectInfo:
        """ObjectInfo from an fsspec info/find entry, hashing the object if the store has no
        MD5 of its own."""
        version, mtime_ns, mtime = remote_signature(info)
        etag = _native_etag(info)
        if etag is None:
            cache_key = (self.store.url, path, version)
            etag = _MD5_CACHE.get(cache_key)
            if etag is None:
                md5 = _new_md5()
                with _open_remote(self.store.fs, path) as f:
                    while chunk := f.read(CHUNK_SIZE):
                        md5.update(chunk)
                etag = md5.hexdigest()
                _MD5_CACHE.put(cache_key, etag)
        return ObjectInfo(
            bucket=self.name,
            key=key,
            size=int(info.get("size") or 0),
            etag=etag,
            last_modified=mtime if mtime is not None else 0.0,
            version=version,
            sequencer=f"{mtime_ns:016X}",
        )

    def exists(self, key: str) -> bool:
        path = self._path(key)
        if self.store.is_local:
            try:
                parent, name = open_parent(self.root, key)
            except OSError:  # missing, a file on the way, or a link: no such object
                return False
            try:
                return _stat.S_ISREG(lstat_at(parent, name).st_mode)
            except OSError:
                return False
            finally:
                os.close(parent)
        return self.store.fs.isfile(path)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Objects whose key starts with `prefix`, sorted by key. Temp objects of writes in
        progress and names that are not valid keys are skipped."""
        if prefix:
            validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
        # Only the folder part of the prefix narrows the walk; the rest filters names.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        out: list[ObjectInfo] = []
        if self.store.is_local:
            for key, st, folder in walk(self.root, base, skip_name=_is_reserved):
                if not (_stat.S_ISREG(st.st_mode) and key.startswith(prefix)):
                    continue  # links and other non-files are not objects
                if not _is_valid_key(key):
                    continue
                etag = cached_etag(f"{self.root}/{key}", st)
                if etag is None:
                    try:
                        fd = open_at(folder, key.rsplit("/", 1)[-1], os.O_RDONLY | os.O_NONBLOCK)
                        st, etag = _hash_descriptor(fd, f"{self.root}/{key}", None)
                    except (OSError, ObjectChanged):
                        continue  # vanished or being rewritten in place: not a settled object
                out.append(info_from_stat(self.name, key, st, etag))
        else:
            for key, path, info in self._walk_remote(base):
                if key.startswith(prefix):
                    with contextlib.suppress(FileNotFoundError):
                        out.append(self.remote_info(key, path, info))
        out.sort(key=lambda i: i.key)
        return out

    def _walk_remote(self, base: str = "") -> Iterator[tuple[str, str, Mapping[str, Any]]]:
        fs = self.store.fs
        start = f"{self.root}/{base}" if base else self.root
        with contextlib.suppress(Exception):
            fs.invalidate_cache(start)
        try:
            found = fs.find(start, detail=True)
        except FileNotFoundError:
            return
        cut = len(self.root) + 1
        for path, info in found.items():
            if info.get("type", "file") != "file" or not path.startswith(self.root + "/"):
                continue
            key = path[cut:]
            if _is_valid_key(key):
                yield key, path, info

    # -- delete

    def delete(self, key: str) -> None:
        path = self._path(key)
        if self.store.is_local:
            try:
                parent, name = open_parent(self.root, key)
            except SymlinkInBucket as exc:
                raise self._linked(key, exc) from None
            except (FileNotFoundError, NotADirectoryError):
                raise self._not_found(key) from None
            try:
                mode = lstat_at(parent, name).st_mode
                if _stat.S_ISLNK(mode):
                    raise self._linked(key, SymlinkInBucket(key))
                if _stat.S_ISDIR(mode):
                    raise FileNotFoundError(path)
                # unlink never follows a link, so a swap after the lstat cannot reach out.
                os.unlink(name, dir_fd=parent)
            except (FileNotFoundError, NotADirectoryError):
                raise self._not_found(key) from None
            finally:
                os.close(parent)
            return
        fs = self.store.fs
        if not fs.isfile(path):
            raise self._not_found(key)
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            raise self._not_found(key) from None


def _is_reserved(name: str) -> bool:
    lowered = name.lower()
    return lowered.startswith(RESERVED_PREFIX) or lowered.startswith(FOREIGN_TEMP_PREFIXES)


def _is_valid_key(key: str) -> bool:
    try:
        validate_key(key)
    except InvalidKey:
        return False
    return True


# --------------------------------------------------------------------------------- writers


class _AtomicWriter:
    """Binary write-only file that becomes the object on a clean close.

    Deliberately not an io.IOBase: IOBase.__del__ calls close(), which here would publish a
    partial object when a writer is dropped without close; ours discards instead.
    """

    mode = "wb"

    def __init__(self, bucket: Bucket, key: str, path: str) -> None:
        self.bucket = bucket
        self.key = key
        self.name = path
        self.info: ObjectInfo | None = None
        self._md5 = _new_md5()
        self._size = 0
        self._closed = False

    # file protocol
    @property
    def closed(self) -> bool:
        return self._closed

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._size

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._closed:
            raise ValueError("write to a closed object writer")
        view = memoryview(data).cast("B")
        self._raw_write(view)
        self._md5.update(view)
        self._size += len(view)
        return len(view)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass  # durability comes from close(); an early flush must not publish anything

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.info = self._commit(self._md5.hexdigest())
        except BaseException:
            self._cleanup()
            raise

    def discard(self) -> None:
        """Throw the written data away; the object is left as it was."""
        if self._closed:
            return
        self._closed = True
        self._cleanup()

    def __enter__(self) -> _AtomicWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.discard()

    # implementation hooks
    def _raw_write(self, view: memoryview) -> None:
        raise NotImplementedError

    def _commit(self, etag: str) -> ObjectInfo:
        raise NotImplementedError

    def _cleanup(self) -> None:
        raise NotImplementedError


def _prefix_conflict(bucket: Bucket, key: str) -> InvalidKey:
    return InvalidKey(
        f"object key {key!r} in bucket {bucket.name!r}",
        "clashes with an existing object or prefix: on a local store a name cannot be both an"
        " object and a folder (e.g. 'a' and 'a/b')",
        "choose a key that does not use an existing object as a folder, or vice versa",
    )


class _LocalAtomicWriter(_AtomicWriter):
    """Temp file and rename inside the target folder, all through one descriptor of that
    folder reached without following links: nothing is written outside the bucket."""

    def __init__(self, bucket: Bucket, key: str, path: str) -> None:
        super().__init__(bucket, key, path)
        self._file: io.BufferedWriter | None = None
        self._dir: int | None = None
        try:
            self._dir, self._final = open_parent(bucket.root, key, create=True)
        except SymlinkInBucket as exc:
            raise bucket._link_in_the_way(key, exc) from None
        except (FileExistsError, NotADirectoryError):
            raise _prefix_conflict(bucket, key) from None
        self._tmp = temp_name(self._final)
        try:
            fd = open_at(self._dir, self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except BaseException:
            self._close_dir()
            raise
        self._file = open(fd, "wb", buffering=_WRITE_BUFFER)  # noqa: SIM115

    def _raw_write(self, view: memoryview) -> None:
        assert self._file is not None
        self._file.write(view)

    def _commit(self, etag: str) -> ObjectInfo:
        f, folder = self._file, self._dir
        assert f is not None and folder is not None
        f.flush()
        # Data on disk before the name points at it: no empty object after a crash.
        os.fsync(f.fileno())
        written = os.fstat(f.fileno())
        f.close()
        self._file = None
        with contextlib.suppress(FileNotFoundError):
            if _stat.S_ISLNK(lstat_at(folder, self._final).st_mode):
                # Renaming over it would not follow it, but would silently destroy someone's
                # link; say so instead.
                raise self.bucket._link_in_the_way(self.key, SymlinkInBucket(self.key))
        try:
            os.replace(self._tmp, self._final, src_dir_fd=folder, dst_dir_fd=folder)
        except (IsADirectoryError, NotADirectoryError):
            raise _prefix_conflict(self.bucket, self.key) from None
        # Rename moves ctime, so stat again for the identity a later `head` will see; if a
        # concurrent writer already replaced the file, describe our own (now gone) version.
        st = written
        with contextlib.suppress(OSError):
            now = lstat_at(folder, self._final)
            if _same_content(now, written):
                st = now
        self._close_dir()
        _MD5_CACHE.put(_stat_cache_key(self.name, st), etag)
        return info_from_stat(self.bucket.name, self.key, st, etag)

    def _close_dir(self) -> None:
        if self._dir is not None:
            with contextlib.suppress(OSError):
                os.close(self._dir)
            self._dir = None

    def _cleanup(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        if self._dir is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp, dir_fd=self._dir)
        self._close_dir()


def _puts_whole_objects(fs: fsspec.AbstractFileSystem) -> bool:
    """Whether a file written on `fs` appears only once closed (an S3 PUT, or the completion
    of a multipart upload), so it needs no temporary name."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return any(p in ("s3", "s3a") for p in protocols)


class _RemoteAtomicWriter(_AtomicWriter):
    def __init__(self, bucket: Bucket, key: str, path: str) -> None:
        super().__init__(bucket, key, path)
        folder, final_name = path.rsplit("/", 1)
        self._fs = bucket.store.fs
        # On S3 the object itself is the temporary: invisible until the upload completes, and
        # a discarded upload is aborted. Elsewhere: a temporary name, then a move.
        self._direct = _puts_whole_objects(self._fs)
        self._tmp = path if self._direct else f"{folder}/{temp_name(final_name)}"
        self._file: Any = self._fs.open(self._tmp, "wb")

    def _raw_write(self, view: memoryview) -> None:
        self._file.write(view)

    def _commit(self, etag: str) -> ObjectInfo:
        self._file.close()
        self._file = None
        if not self._direct:
            # mv is a server-side copy then delete: the final object still appears whole,
            # which is what matters to readers and watchers.
            self._fs.mv(self._tmp, self.name)
        with contextlib.suppress(Exception):
            self._fs.invalidate_cache(self.name)
        info = self._fs.info(self.name)
        version, _, _ = remote_signature(info)
        _MD5_CACHE.put((self.bucket.store.url, self.name, version), etag)
        result = self.bucket.remote_info(self.key, self.name, info)
        if result.etag != etag:  # the store's own ETag differs only if someone overwrote us
            logger.debug("object %s changed right after it was written", self.name)
        return result

    def _cleanup(self) -> None:
        if self._direct:
            if self._file is not None:
                with contextlib.suppress(Exception):
                    self._file.discard()  # aborts the multipart upload of a large object
                # never closed, so never flushed: nothing is uploaded, an older version stays
                self._file.closed = True
                self._file = None
            return
        if self._file is not None:
            with contextlib.suppress(Exception):
                # A discarded fsspec file must not upload; closing memory:// files is harmless.
                if hasattr(self._file, "discard"):
                    self._file.discard()
                self._file.close()
            self._file = None
        with contextlib.suppress(Exception):
            self._fs.rm_file(self._tmp)
