"""Where a pipeline's records go: the raw archive, a feature group, a function, another stream.

Every sink is idempotent under the batch number the runner gives it, because a crash between a
sink's write and the checkpoint commit replays the same batch with the same state:

- `ArchiveSink` buffers records like a delivery stream and names each file after the first offset
  it buffers, so a replay (or a later, larger flush of the same buffer) overwrites the file with a
  superset instead of adding a second copy.
- `FeatureSink` passes (writer, batch) to the feature store, which skips a batch it already has.
- `StreamSink` appends with an idempotent producer sequence.
- `FunctionSink` enqueues its invocation inside the checkpoint transaction itself.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import Connection

from headrace.errors import StreamError
from headrace.ledger import NewInvocation
from headrace.streams.log import INGEST_TIME, OFFSET
from headrace.streams.rows import python_rows


@dataclass(frozen=True)
class BatchRef:
    """Which micro-batch a sink is given: the idempotency key of everything it writes."""

    pipeline: str
    partition: int
    seq: int

    @property
    def writer(self) -> str:
        return f"{self.pipeline}/p{self.partition}"


@dataclass
class SinkContext:
    """What sinks reach outside the pipeline. Filled in by whoever runs the pipeline."""

    pipeline: str
    partition: int
    store: Any = None  # headrace.storage.ObjectStore
    features: Any = None  # headrace.features.FeatureStore
    ledger: Any = None  # headrace.ledger.Ledger
    open_log: Callable[[str], Any] | None = None  # stream name -> StreamLog
    function_attempts: Callable[[str], int] = field(default=lambda name: 3)


class Sink(Protocol):
    name: str

    def bind(self, context: SinkContext) -> None: ...

    def write(self, table: pa.Table, batch: BatchRef) -> None:
        """Effects outside the ledger; must be idempotent under `batch`."""

    def commit(self, conn: Connection, batch: BatchRef) -> None:
        """Effects inside the checkpoint transaction."""

    def flush(self, batch: BatchRef) -> None:
        """End of input or shutdown: write out anything buffered."""

    def snapshot(self) -> dict[str, pa.Table]: ...

    def restore(self, state: dict[str, pa.Table]) -> None: ...


class _Stateless:
    name = "sink"

    def bind(self, context: SinkContext) -> None:
        self.context = context

    def commit(self, conn: Connection, batch: BatchRef) -> None:
        pass

    def flush(self, batch: BatchRef) -> None:
        pass

    def snapshot(self) -> dict[str, pa.Table]:
        return {}

    def restore(self, state: dict[str, pa.Table]) -> None:
        pass


def _without(table: pa.Table, *names: str) -> pa.Table:
    return table.drop_columns([n for n in names if n in table.column_names])


class ArchiveSink(_Stateless):
    """Raw records to compressed Parquet in a bucket, partitioned by event date and hour.

    Buffers by records, bytes and age like a delivery stream (defaults: 100,000 records, 5 MiB,
    60 s). Keys: ``{prefix}date=YYYY-MM-DD/hour=HH/{pipeline}-p{partition}-{first_offset}.parquet``
    (hive layout, so DuckDB and Spark read the partitions as columns).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        time_column: str = INGEST_TIME,
        max_records: int = 100_000,
        max_bytes: int = 5 * 1024 * 1024,
        max_seconds: float = 60.0,
        compression: str = "zstd",
        name: str | None = None,
    ) -> None:
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.bucket = bucket
        self.prefix = prefix
        self.time_column = time_column
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.compression = compression
        self.name = name or f"archive:{bucket}/{prefix}"
        self._buffer: list[pa.Table] = []
        self._buffered_since = 0.0

    def bind(self, context: SinkContext) -> None:
        super().bind(context)
        if context.store is None:
            raise StreamError(
                f"archive sink {self.name!r}", "has no object store", "run it in a pipeline runner"
            )
        self._bucket = context.store.bucket(self.bucket, create=True)

    def write(self, table: pa.Table, batch: BatchRef) -> None:
        if table.num_rows:
            if self.time_column not in table.column_names:
                raise StreamError(
                    f"archive sink {self.name!r}",
                    f"records have no time column {self.time_column!r} to partition by",
                    f"pass time_column= one of {table.column_names}",
                )
            if OFFSET not in table.column_names:
                raise StreamError(
                    f"archive sink {self.name!r}",
                    "records carry no _offset column, so files cannot be named idempotently",
                    "archive records read from a stream log",
                )
            if not self._buffer:
                self._buffered_since = time.time()
            self._buffer.append(table)
        if self._due():
            self.flush(batch)

    def _due(self) -> bool:
        if not self._buffer:
            return False
        rows = sum(t.num_rows for t in self._buffer)
        size = sum(t.nbytes for t in self._buffer)
        age = time.time() - self._buffered_since
        return rows >= self.max_records or size >= self.max_bytes or age >= self.max_seconds

    def flush(self, batch: BatchRef) -> None:
        if not self._buffer:
            return
        table = pa.concat_tables(self._buffer, promote_options="permissive")
        first = pc.min(table[OFFSET]).as_py()
        stamp = table[self.time_column]
        if not pa.types.is_timestamp(stamp.type):
            raise StreamError(
                f"archive sink {self.name!r}",
                f"time column {self.time_column!r} is {stamp.type}, not a timestamp",
                "convert it with a map() before the archive",
            )
        if stamp.type.tz is None:
            stamp = pc.assume_timezone(stamp, "UTC")
        day = pc.strftime(stamp, format="%Y-%m-%d", locale="C")
        hour = pc.strftime(stamp, format="%H", locale="C")
        table = table.append_column("_date", day).append_column("_hour", hour)
        keys = table.select(["_date", "_hour"]).group_by(["_date", "_hour"]).aggregate([])
        for d, h in zip(keys["_date"].to_pylist(), keys["_hour"].to_pylist(), strict=True):
            mask = pc.and_(pc.equal(table["_date"], d), pc.equal(table["_hour"], h))
            part = _without(table.filter(mask), "_date", "_hour")
            key = f"{self.prefix}date={d}/hour={h}/{batch.pipeline}-p{batch.partition}-{first:012d}"
            out = io.BytesIO()
            pq.write_table(part, out, compression=self.compression)
            self._bucket.put(f"{key}.parquet", out.getvalue())
        self._buffer = []

    def snapshot(self) -> dict[str, pa.Table]:
        if not self._buffer:
            return {"buffer": pa.table({})}
        return {"buffer": pa.concat_tables(self._buffer, promote_options="permissive")}

    def restore(self, state: dict[str, pa.Table]) -> None:
        buffered = state.get("buffer")
        self._buffer = [buffered] if buffered is not None and buffered.num_rows else []
        self._buffered_since = time.time()


class FeatureSink(_Stateless):
    """Rows to a feature group's online and offline stores (skipped if the batch is there)."""

    def __init__(self, group: str, *, name: str | None = None) -> None:
        self.group = group
        self.name = name or f"features:{group}"

    def bind(self, context: SinkContext) -> None:
        super().bind(context)
        if context.features is None:
            raise StreamError(
                f"feature sink {self.name!r}", "has no feature store", "run it in a pipeline runner"
            )
        self._store = context.features

    def write(self, table: pa.Table, batch: BatchRef) -> None:
        if table.num_rows:
            self._store.write(self.group, table, writer=batch.writer, sequence=batch.seq)


class StreamSink(_Stateless):
    """Records to another stream log, with an idempotent producer sequence per batch."""

    def __init__(self, stream: str, *, name: str | None = None) -> None:
        self.stream = stream
        self.name = name or f"stream:{stream}"

    def bind(self, context: SinkContext) -> None:
        super().bind(context)
        if context.open_log is None:
            raise StreamError(
                f"stream sink {self.name!r}", "has no log to write to", "run it in a runner"
            )
        self._log = context.open_log(self.stream)

    def write(self, table: pa.Table, batch: BatchRef) -> None:
        if table.num_rows:
            self._log.append(
                _without(table, OFFSET),
                producer=f"{batch.writer}/{self.name}",
                sequence=batch.seq,
            )


class FunctionSink(_Stateless):
    """Each non-empty batch becomes one invocation of a function (payload: the records)."""

    def __init__(self, function: str, *, name: str | None = None) -> None:
        self.function = function
        self.name = name or f"function:{function}"
        self._pending: list[dict[str, Any]] | None = None

    def bind(self, context: SinkContext) -> None:
        super().bind(context)
        if context.ledger is None:
            raise StreamError(
                f"function sink {self.name!r}", "has no ledger", "run it in a pipeline runner"
            )

    def write(self, table: pa.Table, batch: BatchRef) -> None:
        self._pending = python_rows(_without(table, OFFSET)) if table.num_rows else None

    def commit(self, conn: Connection, batch: BatchRef) -> None:
        if not self._pending:
            return
        payload = {
            "pipeline": batch.pipeline,
            "partition": batch.partition,
            "batch": batch.seq,
            "records": self._pending,
        }
        self.context.ledger.enqueue(
            [
                NewInvocation(
                    function=self.function,
                    payload=payload,
                    max_attempts=self.context.function_attempts(self.function),
                    source="stream",
                    idempotency_key=f"stream:{batch.writer}/{batch.seq}/{self.function}",
                )
            ],
            conn,
        )
        self._pending = None


class MemorySink(_Stateless):
    """Keeps a pipeline's output in memory, by batch (tests, notebooks, benchmarks).

    Keyed by batch number, so a replayed batch replaces its earlier copy instead of adding one.
    """

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.batches: dict[int, pa.Table] = {}

    def write(self, table: pa.Table, batch: BatchRef) -> None:
        if table.num_rows:
            self.batches[batch.seq] = table

    def table(self) -> pa.Table:
        tables = [self.batches[k] for k in sorted(self.batches)]
        if not tables:
            return pa.table({})
        return pa.concat_tables(tables, promote_options="permissive")
