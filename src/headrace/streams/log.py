"""The stream log: a durable, partitioned, append-only log of Arrow record batches.

A stream has a fixed number of partitions. Each partition is a sequence of stored batches; every
record in it has a dense offset (0, 1, 2, ...) that never changes. Retention removes whole stored
batches from the front of a partition, so the offsets that remain stay dense and the earliest one
(`start_offset`) only moves forward. Consumer groups commit the next offset they will read.

`StreamLog` holds everything the backends share (validation, `_ingest_time` stamping, key routing,
Arrow IPC encoding, read assembly, the retention rule); a backend stores encoded batches and
offsets: `log_embedded` (SQLite file, the default), `log_redis` (Redis Streams) and `log_nats`
(NATS JetStream). `open_log` picks one by URL.

Key routing: with `append(..., key="col")` each row goes to partition
`fnv1a_32(utf8(text(value))) % partitions`, where `text` is the value cast to an Arrow string
(integers as decimal digits, strings as themselves; binary columns hash their raw bytes) and a null
key hashes like the empty string. FNV-1a 32-bit: start at 0x811C9DC5, for each byte
`h = (h ^ byte) * 0x01000193 mod 2**32`. It depends on nothing but the bytes, so every process,
machine and backend routes a key to the same partition (`headrace.streams.hashing`).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from headrace.errors import StreamError
from headrace.streams.hashing import fnv1a_32

INGEST_TIME = "_ingest_time"
OFFSET = "_offset"
INGEST_TIME_TYPE = pa.timestamp("us", tz="UTC")  # the unit the operators compute in
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_EMPTY_READ = pa.schema([(OFFSET, pa.int64())])
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Appended:
    """Where one append put its rows in one partition: offsets [first_offset, end_offset)."""

    partition: int
    first_offset: int
    end_offset: int

    @property
    def records(self) -> int:
        return self.end_offset - self.first_offset


@dataclass(frozen=True, slots=True)
class EncodedPart:
    """The rows of one append bound for one partition, as Arrow IPC stream bytes."""

    partition: int
    records: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """What retention needs to know about one stored batch."""

    first_offset: int
    end_offset: int
    ingest_ms: int
    size: int


def encode_batch(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def decode_batch(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def key_partitions(column: pa.Array | pa.ChunkedArray, partitions: int) -> np.ndarray:
    """The partition of every row for a key column (see the module docstring for the rule)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    # Hash each distinct key once: batches usually repeat few keys many times.
    distinct = pc.unique(column)
    if not (pa.types.is_binary(distinct.type) or pa.types.is_large_binary(distinct.type)):
        distinct = distinct.cast(pa.string())
    where = pc.index_in(column.cast(distinct.type), value_set=distinct, skip_nulls=False)
    per_distinct = (fnv1a_32(distinct) % np.uint32(partitions)).astype(np.int64)
    return per_distinct[where.to_numpy(zero_copy_only=False)]


def stamp_ingest_time(table: pa.Table, now: datetime) -> pa.Table:
    """Add `_ingest_time` (the append time, µs, UTC) unless the batch already has it."""
    if OFFSET in table.column_names:  # offsets are the log's to assign
        table = table.drop_columns([OFFSET])
    if INGEST_TIME in table.column_names:
        return table
    micros = np.full(table.num_rows, to_micros(now), dtype=np.int64)
    return table.append_column(INGEST_TIME, pa.array(micros, type=INGEST_TIME_TYPE))


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch, exactly (naive means UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(microseconds=1)


def to_millis(moment: datetime) -> int:
    """Milliseconds since the epoch (floored): the ingest time retention compares."""
    return to_micros(moment) // 1000


def retention_cut(
    batches: Iterable[StoredBatch],
    *,
    start: int,
    total_bytes: int,
    cutoff_ms: int | None,
    max_bytes: int | None,
) -> int:
    """The new start offset of a partition: drop whole batches from the front while the front
    batch is older than `cutoff_ms` or the partition holds more than `max_bytes`.

    `batches` are the stored batches in offset order; iteration stops at the first one kept, so a
    backend can feed it a lazy scan.
    """
    remaining = total_bytes
    for batch in batches:
        too_old = cutoff_ms is not None and batch.ingest_ms < cutoff_ms
        too_big = max_bytes is not None and remaining > max_bytes
        if not (too_old or too_big):
            break
        start = batch.end_offset
        remaining -= batch.size
    return start


def merge_adjacent(appended: Iterable[Appended]) -> list[Appended]:
    """One entry per contiguous run of offsets in a partition, sorted by partition."""
    merged: list[Appended] = []
    for item in sorted(appended, key=lambda a: (a.partition, a.first_offset)):
        last = merged[-1] if merged else None
        if last and last.partition == item.partition and last.end_offset == item.first_offset:
            merged[-1] = Appended(item.partition, last.first_offset, item.end_offset)
        else:
            merged.append(item)
    return merged


def format_appended(appended: Iterable[Appended]) -> str:
    """`p:first:end,...`: how backends store the result of an idempotent append."""
    return ",".join(f"{a.partition}:{a.first_offset}:{a.end_offset}" for a in appended)


def parse_appended(text: str) -> list[Appended]:
    if not text:
        return []
    return [Appended(*map(int, item.split(":"))) for item in text.split(",")]


class StreamLog(ABC):
    """A durable, partitioned, append-only log of Arrow record batches.

    Thread-safe. Several processes may open the same stream; appends from all of them get dense,
    non-overlapping offsets.
    """

    name: str
    partitions: int
    retention_seconds: float | None
    retention_bytes: int | None

    def __init__(
        self,
        name: str,
        *,
        retention_seconds: float | None = None,
        retention_bytes: int | None = None,
    ) -> None:
        check_stream_name(name)
        if retention_seconds is not None and retention_seconds <= 0:
            raise StreamError(
                f"stream {name!r}",
                f"retention_seconds={retention_seconds} is not positive",
                "give a number of seconds > 0, or None to keep records by age forever",
            )
        if retention_bytes is not None and retention_bytes < 0:
            raise StreamError(
                f"stream {name!r}",
                f"retention_bytes={retention_bytes} is negative",
                "give a size in bytes >= 0, or None for no size limit",
            )
        self.name = name
        self.retention_seconds = retention_seconds
        self.retention_bytes = retention_bytes
        self._next_round_robin = 0
        self._known_schema: pa.Schema | None = None  # what reads of this log unify to
        # the stored batch decoded last: (partition, first offset, its bytes, the table). A
        # consumer reading in slices smaller than the stored batches reads it again and again;
        # a stored batch never changes under its offsets, and its bytes are compared anyway
        self._decoded: tuple[int, int, bytes, pa.Table] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, partitions={self.partitions})"

    def __enter__(self) -> StreamLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------------

    def append(
        self,
        batch: pa.Table | pa.RecordBatch,
        *,
        partition: int | None = None,
        key: str | None = None,
        producer: str | None = None,
        sequence: int | None = None,
    ) -> list[Appended]:
        """Append the rows of `batch`; return where they went, one entry per partition.

        `key` names a column whose values route rows to partitions (module docstring);
        `partition` sends every row to one partition; otherwise a one-partition stream uses
        partition 0 and a larger one rotates partitions per append. With `producer` and
        `sequence`, an append repeating an earlier (producer, sequence) writes nothing and
        returns the earlier result. An empty batch is a no-op and returns [].
        """
        if isinstance(batch, pa.RecordBatch):
            batch = pa.Table.from_batches([batch])
        self._check_append_args(batch, partition, key, producer, sequence)
        if batch.num_rows == 0:
            return []
        now = datetime.now(UTC)
        table = stamp_ingest_time(batch, now)
        known = self._fits(table.schema)
        parts = [
            EncodedPart(p, rows.num_rows, encode_batch(rows))
            for p, rows in self._route(table, partition, key)
        ]
        appended = self._write(parts, producer, sequence, to_millis(now))
        self._known_schema = known
        return appended

    def stored_schema(self) -> pa.Schema | None:
        """The schema of the newest record of each partition, unified (None when empty)."""
        schemas = []
        for partition in range(self.partitions):
            end = self.end_offset(partition)
            if end > self.start_offset(partition):
                schemas.append(self.read(partition, end - 1, 1).drop_columns([OFFSET]).schema)
        return pa.unify_schemas(schemas, promote_options="permissive") if schemas else None

    def _fits(self, schema: pa.Schema) -> pa.Schema:
        """The log's schema with `schema` joined, or a StreamError naming the column whose
        type no read could unify with what the stream holds (every later read would fail)."""
        known = self._known_schema
        if known is None:
            known = self.stored_schema()
        if known is None:
            return schema
        try:
            return pa.unify_schemas([known, schema], promote_options="permissive")
        except (pa.ArrowException, TypeError, ValueError):
            pass
        for field in schema:
            if field.name not in known.names:
                continue
            stored = known.field(field.name)
            try:
                pa.unify_schemas([pa.schema([stored]), pa.schema([field])], "permissive")
            except (pa.ArrowException, TypeError, ValueError):
                raise StreamError(
                    f"append to stream {self.name!r}",
                    f"column {field.name!r} is {field.type} here, but the stream holds "
                    f"{stored.type} (no read could combine them)",
                    f"cast {field.name!r} to {stored.type} before appending, or write to a "
                    "new stream",
                ) from None
        raise StreamError(
            f"append to stream {self.name!r}",
            f"the batch's schema cannot be combined with the stream's ({known})",
            "append batches whose columns keep their types",
        )

    def _check_append_args(
        self,
        batch: pa.Table,
        partition: int | None,
        key: str | None,
        producer: str | None,
        sequence: int | None,
    ) -> None:
        subject = f"append to stream {self.name!r}"
        if not isinstance(batch, pa.Table):
            raise StreamError(
                subject,
                f"a batch must be a pyarrow Table, not {type(batch).__name__}",
                "convert it first, e.g. pa.Table.from_pylist(rows) or polars_df.to_arrow()",
            )
        if partition is not None and key is not None:
            raise StreamError(subject, "both partition and key were given", "give one of them")
        if partition is not None:
            self._check_partition(partition)
        if key is not None and key not in batch.column_names:
            raise StreamError(
                subject,
                f"key column {key!r} is not in the batch ({batch.column_names})",
                "name one of the batch's columns as key",
            )
        if (producer is None) != (sequence is None):
            raise StreamError(
                subject,
                "producer and sequence go together",
                "give both (a producer id and its increasing sequence number) or neither",
            )

    def _route(
        self, table: pa.Table, partition: int | None, key: str | None
    ) -> list[tuple[int, pa.Table]]:
        if key is not None and self.partitions > 1:
            try:
                targets = key_partitions(table.column(key), self.partitions)
            except pa.ArrowException as exc:
                raise StreamError(
                    f"append to stream {self.name!r}",
                    f"key column {key!r} of type {table.schema.field(key).type} has no text form",
                    "route by a string, binary, integer or temporal column",
                ) from exc
            order = np.argsort(targets, kind="stable")
            counts = np.bincount(targets, minlength=self.partitions)
            ordered = table.take(pa.array(order))
            routed, position = [], 0
            for p, count in enumerate(counts.tolist()):
                if count:
                    routed.append((p, ordered.slice(position, count)))
                position += count
            return routed
        if partition is None:
            partition = 0
            if key is None and self.partitions > 1:
                partition = self._next_round_robin
                self._next_round_robin = (partition + 1) % self.partitions
        return [(partition, table)]

    # -- reading -------------------------------------------------------------------------------

    def read(self, partition: int, offset: int, max_records: int) -> pa.Table:
        """Records [offset, offset + max_records) that exist, with an `_offset` int64 column.

        Batches of different schemas are unified (missing columns become nulls, types are
        widened). Past the end the result is empty; below `start_offset` it is a StreamError.
        """
        self._check_partition(partition)
        if offset < 0 or max_records < 0:
            raise StreamError(
                f"stream {self.name!r} partition {partition}",
                f"cannot read {max_records} records at offset {offset}",
                "offsets and max_records are >= 0",
            )
        stop = offset + max_records
        batches = self._fetch(partition, offset, stop) if max_records else []
        start = batches[0][0] if batches else self.start_offset(partition)
        if offset < start:
            raise self.below_retention(partition, offset, start)
        if not batches:
            return _EMPTY_READ.empty_table()
        tables = [self._decode(partition, first, data) for first, data in batches]
        if len(tables) == 1:
            table = tables[0]
        elif all(t.schema == tables[0].schema for t in tables[1:]):
            table = pa.concat_tables(tables)
        else:
            table = pa.concat_tables(tables, promote_options="permissive")
        table = table.slice(offset - batches[0][0], max_records)
        offsets = np.arange(offset, offset + table.num_rows, dtype=np.int64)
        return table.append_column(OFFSET, pa.array(offsets))

    def _decode(self, partition: int, first: int, data: bytes) -> pa.Table:
        held = self._decoded
        if held is not None and held[0] == partition and held[1] == first and held[2] == data:
            return held[3]
        table = decode_batch(data)
        self._decoded = (partition, first, data, table)
        return table

    def below_retention(self, partition: int, offset: int, start: int) -> StreamError:
        return StreamError(
            f"stream {self.name!r} partition {partition}",
            f"offset {offset} was removed by retention; the earliest available offset is {start}",
            f"reset the consumer to offset {start} (or to the end) and read on from there",
        )

    def _check_partition(self, partition: int) -> None:
        if not isinstance(partition, int) or not 0 <= partition < self.partitions:
            raise StreamError(
                f"stream {self.name!r}",
                f"partition {partition!r} does not exist (the stream has {self.partitions})",
                f"use a partition number from 0 to {self.partitions - 1}",
            )

    def _retention_cutoff_ms(self, now: datetime | None) -> int | None:
        if self.retention_seconds is None:
            return None
        return to_millis(now or datetime.now(UTC)) - int(self.retention_seconds * 1000)

    # -- what a backend provides -----------------------------------------------------------------

    @abstractmethod
    def _write(
        self, parts: list[EncodedPart], producer: str | None, sequence: int | None, now_ms: int
    ) -> list[Appended]:
        """Store the parts at the end of their partitions (all or nothing where the backend can),
        recording the result under (producer, sequence) when given, or return the recorded one."""

    @abstractmethod
    def _fetch(self, partition: int, offset: int, stop: int) -> list[tuple[int, bytes]]:
        """(first_offset, data) of the stored batches overlapping [offset, stop), in order.

        When `offset` is below the start, the list begins at the earliest batch."""

    @abstractmethod
    def start_offset(self, partition: int) -> int:
        """The earliest offset still stored (the end offset when retention removed all)."""

    @abstractmethod
    def end_offset(self, partition: int) -> int:
        """The offset the next appended record will get."""

    @abstractmethod
    def commit(self, group: str, partition: int, offset: int) -> None:
        """Record `offset` as the next offset consumer `group` will read in `partition`."""

    @abstractmethod
    def committed(self, group: str, partition: int) -> int | None:
        """The offset `group` last committed in `partition`, or None."""

    @abstractmethod
    def enforce_retention(self, *, now: datetime | None = None) -> int:
        """Remove batches past retention in every partition; return the records removed."""

    @abstractmethod
    def drop(self) -> None:
        """Delete the stream with all its data and consumer offsets, then close."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the data stays."""


def check_stream_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise StreamError(
            f"stream {name!r}",
            "the name is not 1-100 letters, digits, '_' or '-'",
            "rename the stream, e.g. 'weather_obs'",
        )
    return name


def check_offset_args(log: StreamLog, group: str, partition: int, offset: int | None) -> None:
    log._check_partition(partition)
    if not isinstance(group, str) or not group:
        raise StreamError(
            f"stream {log.name!r}",
            f"consumer group {group!r} is not a non-empty string",
            "name the consumer group",
        )
    if offset is not None and (not isinstance(offset, int) or offset < 0):
        raise StreamError(
            f"stream {log.name!r} partition {partition}",
            f"cannot commit offset {offset!r} for group {group!r}",
            "commit the next offset to read, an int >= 0",
        )


def partition_mismatch(name: str, where: str, stored: int, asked: int) -> StreamError:
    return StreamError(
        f"stream {name!r} at {where}",
        f"it was created with {stored} partitions, not {asked}",
        f"open it with partitions={stored} (or None), or use a new stream name",
    )


def open_log(
    url: str | Path,
    name: str,
    *,
    partitions: int | None = None,
    retention_seconds: float | None = None,
    retention_bytes: int | None = None,
) -> StreamLog:
    """Open (creating if needed) stream `name` in the log at `url`.

    `url`: `embedded:///path/to/dir` or a plain folder path (one SQLite file per stream),
    `redis://host:port/db`, or `nats://host:port`. `partitions` is fixed when the stream is created
    (default 1); giving a different number for an existing stream is a StreamError, None accepts
    the stored one. Retention applies when `enforce_retention` runs.
    """
    check_stream_name(name)
    if partitions is not None and (not isinstance(partitions, int) or partitions < 1):
        raise StreamError(
            f"stream {name!r}",
            f"partitions={partitions!r} is not a positive int",
            "give partitions >= 1",
        )
    options = {"retention_seconds": retention_seconds, "retention_bytes": retention_bytes}
    text = str(url)
    scheme = urlparse(text).scheme if "://" in text else ""
    if scheme in ("", "embedded", "file"):
        from headrace.streams.log_embedded import EmbeddedLog

        folder = urlparse(text).path if scheme else text
        return EmbeddedLog(Path(folder), name, partitions=partitions, **options)
    if scheme in ("redis", "rediss", "unix"):
        from headrace.streams.log_redis import RedisLog

        return RedisLog(text, name, partitions=partitions, **options)
    if scheme in ("nats", "tls"):
        from headrace.streams.log_nats import NatsLog

        return NatsLog(text, name, partitions=partitions, **options)
    raise StreamError(
        f"stream log URL {text!r}",
        f"the scheme {scheme!r} is not a stream log",
        "use embedded:///path/to/dir, a folder path, redis://host:6379/0 or nats://host:4222",
    )
