"""A source that reads each new object under a bucket, folder or URL once, as an Arrow table.

Works on any fsspec URL (`file://` or a plain path, `memory://`, `s3://` with s3fs installed).
Every poll lists the objects under `prefix` whose names end with one of `suffix`; an object
version (key + size + mtime or etag/version id) not read before is read whole into Arrow, with a
`_source_key` column naming the object. `state()` lists the versions read, so a restored source
never reads one twice, and a new version of a key (an overwrite) is read again.

A file still being written must not be read half way. A version is read once it is *stable*:
seen unchanged by two consecutive polls, or last modified at least `settle_seconds` ago (so
objects already there at start are read on the first poll). Writers that rename into place
(headrace's own `Bucket.put`, `aws s3 cp`) are always safe; one that pauses for longer than both
windows mid-write is not, and no listing-based reader can tell.

An object that cannot be parsed is recorded as a failure naming its key, and skipped until a
new version of it appears.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import fsspec
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from headrace.errors import StreamError
from headrace.storage.store import remote_signature
from headrace.streams.sources import Backoff, SourceHealth, new_stats

FORMATS = ("jsonl", "json", "csv", "parquet")
SOURCE_KEY_COLUMN = "_source_key"

_FORMAT_BY_SUFFIX = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4")
# Objects arriving one by one are mostly small, and for them starting the JSON reader's threads
# costs more than it saves (500 files of 100 rows, one poll: 475 ms threaded, 265 ms not).
_JSON_THREADS_FROM = 8 << 20


class _Listed(NamedTuple):
    version: str
    mtime: float | None
    path: str


class ObjectSource:
    """Reads new objects under `bucket_path_or_url` + `prefix`; see the module docstring.

    `format` forces one of "jsonl", "json", "csv", "parquet"; by default it follows each key's
    suffix (a trailing .gz/.bz2/.xz/.zst is decompressed first). At most `max_objects` objects
    are read per poll; when more are waiting, `next_poll_at` is now.
    """

    def __init__(
        self,
        name: str,
        bucket_path_or_url: str,
        *,
        prefix: str = "",
        suffix: str | Sequence[str] = (".jsonl", ".json", ".csv", ".parquet"),
        format: str | None = None,
        interval: float = 1.0,
        settle_seconds: float = 2.0,
        max_objects: int = 100,
        max_backoff: float = 60.0,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        subject = f"object source '{name}'"
        if format is not None and format not in FORMATS:
            raise StreamError(
                subject, f"format {format!r} is not supported", f"use one of {', '.join(FORMATS)}"
            )
        if interval <= 0:
            raise StreamError(subject, f"interval must be > 0 seconds, got {interval!r}")
        if max_objects < 1:
            raise StreamError(subject, f"max_objects must be >= 1, got {max_objects!r}")
        try:
            self._fs, root = fsspec.core.url_to_fs(
                str(bucket_path_or_url), **dict(storage_options or {})
            )
        except (ImportError, ValueError) as exc:
            raise StreamError(
                subject,
                f"cannot open {bucket_path_or_url!r} ({exc})",
                "install the fsspec package for that URL scheme (s3fs for s3://) or fix the URL",
            ) from None
        self.name = name
        self.url = str(bucket_path_or_url)
        self.prefix = prefix.lstrip("/")
        self.suffix = (suffix,) if isinstance(suffix, str) else tuple(suffix)
        self.format = format
        self.interval = float(interval)
        self.settle_seconds = float(settle_seconds)
        self.max_objects = int(max_objects)
        self._root = root.rstrip("/")
        self._read: dict[str, str] = {}  # key -> version returned by poll()
        self._unreadable: dict[str, str] = {}  # key -> version that failed to parse
        self._last_look: dict[str, str] = {}  # key -> version seen by the previous poll, unread
        self.stats: dict[str, Any] = new_stats(objects_read=0, objects_pending=0, unreadable=0)
        backoff = Backoff(base=self.interval, cap=max_backoff, floor=self.interval)
        self._health = SourceHealth(self.stats, backoff, self.interval)

    # ---------------------------------------------------------------- Source protocol

    @property
    def next_poll_at(self) -> float:
        return self._health.next_poll_at

    @property
    def failures(self) -> list[dict[str, Any]]:
        """The last 100 failures, oldest first: at, kind, error, key."""
        return list(self._health.failures)

    def poll(self) -> pa.Table | None:
        started = self._health.begin_poll()
        if started is None:
            return None
        try:
            listing = self._list()
        except Exception as exc:  # any store error (network, permissions) is a failed poll
            delay = self._health.back_off()
            self._health.failed(
                "list",
                f"listing {self._url_of(self.prefix)} failed: {type(exc).__name__}: {exc}",
                retry_in=round(delay, 3),
            )
            return None
        self._health.succeeded()

        # Forget keys that are gone, so the state stays as large as the bucket, no larger.
        self._read = {k: v for k, v in self._read.items() if k in listing}
        self._unreadable = {k: v for k, v in self._unreadable.items() if k in listing}

        now = time.time()
        looks: dict[str, str] = {}
        ready: list[tuple[float, str, _Listed]] = []
        for key, obj in listing.items():
            if self._read.get(key) == obj.version or self._unreadable.get(key) == obj.version:
                continue
            looks[key] = obj.version
            settled = obj.mtime is not None and now - obj.mtime >= self.settle_seconds
            if settled or self._last_look.get(key) == obj.version:
                ready.append((obj.mtime or 0.0, key, obj))
        self._last_look = looks
        ready.sort()

        tables: list[pa.Table] = []
        schema: pa.Schema | None = None
        taken = 0
        for _, key, obj in ready:
            if taken == self.max_objects:
                self._health.poll_again_at(started)  # more are waiting: come back at once
                break
            taken += 1
            table = self._read_object(key, obj)
            if table is None:
                continue
            if table.num_rows:
                try:
                    merged = (
                        table.schema
                        if schema is None
                        else pa.unify_schemas([schema, table.schema], promote_options="permissive")
                    )
                except (pa.ArrowException, TypeError, ValueError):
                    # its columns clash with an earlier object's: it goes in the next batch
                    self._health.poll_again_at(started)
                    break
                schema = merged
                tables.append(table)
            self._read[key] = obj.version
            del self._last_look[key]
            self.stats["objects_read"] += 1

        self.stats["objects_pending"] = len(self._last_look)
        self.stats["unreadable"] = len(self._unreadable)
        if not tables:
            return None
        result = pa.concat_tables(tables, promote_options="permissive")
        self.stats["records"] += result.num_rows
        return result

    def state(self) -> dict[str, Any]:
        """The object versions read (and found unreadable), by key."""
        return {
            "read": dict(self._read),
            "unreadable": dict(self._unreadable),
            **self._health.state(),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self._read = dict(state.get("read") or {})
        self._unreadable = dict(state.get("unreadable") or {})
        self._last_look = {}
        self._health.restore(state)
        self.stats["unreadable"] = len(self._unreadable)

    def close(self) -> None:
        """Nothing to release: fsspec filesystems are shared and cached by fsspec itself."""

    def __repr__(self) -> str:
        return f"ObjectSource({self.name!r}, {self._url_of(self.prefix)!r})"

    # ---------------------------------------------------------------- internals

    def _url_of(self, key: str) -> str:
        return self._fs.unstrip_protocol(f"{self._root}/{key}" if key else self._root)

    def _list(self) -> dict[str, _Listed]:
        folder = self.prefix.rpartition("/")[0]
        base = f"{self._root}/{folder}" if folder else self._root
        self._fs.invalidate_cache(base)  # object-store listings are cached; we need fresh ones
        found = self._fs.find(base, detail=True)
        start = len(self._root) + 1
        listing: dict[str, _Listed] = {}
        for path, info in found.items():
            key = path[start:]
            if not key.startswith(self.prefix) or info.get("type", "file") != "file":
                continue
            # dot-files and dot-folders are temp files and metadata (headrace's own temp files
            # start with ".headrace-tmp-"), never data
            if any(part.startswith(".") for part in key.split("/")):
                continue
            if not key.endswith(self.suffix):
                continue
            version, _, mtime = remote_signature(info)
            listing[key] = _Listed(version, mtime, path)
        return listing

    def _format_of(self, key: str) -> tuple[str | None, str | None]:
        name = key.lower()
        compression = None
        for ext in _COMPRESSION_SUFFIXES:
            if name.endswith(ext):
                name = name[: -len(ext)]
                compression = "infer"
                break
        if self.format is not None:
            return self.format, compression
        for ext, fmt in _FORMAT_BY_SUFFIX.items():
            if name.endswith(ext):
                return fmt, compression
        return None, compression

    def _read_object(self, key: str, obj: _Listed) -> pa.Table | None:
        fmt, compression = self._format_of(key)
        try:
            if fmt is None:
                raise ValueError(
                    "its format is not known from its name; pass format= "
                    f"({', '.join(FORMATS)}) or narrow suffix="
                )
            with self._fs.open(obj.path, "rb", compression=compression) as f:
                table = _read(f, fmt)
        except Exception as exc:  # a bad object must not stop the source; it is recorded
            self._unreadable[key] = obj.version
            self._last_look.pop(key, None)
            self._health.failed(
                "read",
                f"object {self._url_of(key)} cannot be read as {fmt or 'data'}: "
                f"{type(exc).__name__}: {exc}",
                key=key,
            )
            return None
        if SOURCE_KEY_COLUMN in table.column_names:
            table = table.drop_columns([SOURCE_KEY_COLUMN])
        keys = pa.repeat(pa.scalar(key, pa.string()), table.num_rows)
        return table.append_column(SOURCE_KEY_COLUMN, keys)


def _read(f: Any, fmt: str) -> pa.Table:
    if fmt == "parquet":
        return pq.read_table(f)
    if fmt == "csv":
        return pa_csv.read_csv(f)
    data = f.read()
    if fmt == "json" and data.lstrip()[:1] == b"[":
        return _json_array(data)
    # pyarrow reads newline-delimited objects (and a .json holding one object) natively
    options = pa_json.ReadOptions(use_threads=len(data) >= _JSON_THREADS_FROM)
    return pa_json.read_json(io.BytesIO(data), read_options=options)


def _json_array(data: bytes) -> pa.Table:
    """A JSON array of objects, parsed columnar by polars, with the 32-bit-offset types that
    pyarrow's own readers give, so objects of different formats concatenate."""
    import polars as pl

    table = pl.read_json(io.BytesIO(data)).to_arrow()
    return table.cast(pa.schema([f.with_type(_small_type(f.type)) for f in table.schema]))


def _small_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_large_list(t) or pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        return pa.list_(t.value_field.with_type(_small_type(t.value_type)))
    if pa.types.is_list(t):
        return pa.list_(t.value_field.with_type(_small_type(t.value_type)))
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_small_type(f.type)) for f in t])
    return t
