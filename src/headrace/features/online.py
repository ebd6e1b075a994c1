"""Online stores: the newest record of every entity, for low-latency reads.

The interface of the kind: `OnlineStore` is the protocol the feature store talks to, and the
helpers here are what every backend shares (newest row per entity, the value encoding, key and
writer-argument checks). One file per backend: `online_sqlite` (`SQLiteOnlineStore`, the
embedded default) and `online_redis` (`RedisOnlineStore`, the shared one). `FeatureStore` picks
one from its `online=` argument (`headrace.features.store.open_online_store`).

Writes are batches already conformed to the group's schema. A batch is first reduced to the
newest row per entity (by event time; the later row of the batch wins a tie), then upserted so
that a stored record is only replaced by one whose event time is at least as recent: writes that
arrive out of order keep the newest. A batch written with (writer, sequence) is applied together
with the writer's sequence in one transaction, and skipped when that sequence is already there.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

import polars as pl
import pyarrow as pa

from headrace.errors import FeatureStoreError
from headrace.features.group import FeatureGroup

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_DATE = date(1970, 1, 1)
TIME_COLUMN = "__event_time"  # event time in the online stores, microseconds since the epoch

Key = tuple[Any, ...]
Record = tuple[Any, ...]  # the group's feature values, in order, then the event time (us)


@runtime_checkable
class OnlineStore(Protocol):
    """Keeps the newest record per entity of each feature group."""

    def ensure_group(self, group: FeatureGroup) -> None:
        """Create (or widen with new features) the group's storage."""

    def write(
        self, group: FeatureGroup, table: pa.Table, *, writer: str | None, sequence: int | None
    ) -> int | None:
        """Upsert a conformed batch; the number of entities sent, None when the (writer,
        sequence) was already applied."""

    def read(self, group: FeatureGroup, keys: Sequence[Key]) -> list[Record | None]:
        """The stored record of each key (features decoded, event time last, in µs)."""

    def applied_sequence(self, group: str, writer: str) -> int | None:
        """The highest sequence of `writer` applied to `group`, None if none."""

    def count(self, group: str) -> int:
        """How many entities the group holds."""

    def drop(self, group: str) -> None:
        """Delete the group's records and writer sequences."""

    def close(self) -> None: ...


# -- shared helpers --------------------------------------------------------------------------


def newest_per_entity(group: FeatureGroup, table: pa.Table) -> pa.Table:
    """The newest row of each entity in `table` (the later row wins equal event times)."""
    if table.num_rows <= 1:
        return table
    cols = [*group.entity_keys, group.event_time]
    index = (
        pl.from_arrow(table.select(cols))
        .with_row_index("__row")
        .sort([group.event_time, "__row"])
        .unique(subset=list(group.entity_keys), keep="last")
        .get_column("__row")
    )
    if len(index) == table.num_rows:
        return table
    return table.take(index.to_arrow())


def event_times_us(table: pa.Table, group: FeatureGroup) -> list[int]:
    return table.column(group.event_time).cast(pa.int64()).to_pylist()


def column_values(col: pa.ChunkedArray) -> list[Any]:
    """A column as Python values in the online stores' encoding: times as integers (µs since
    the epoch, days for dates), lists as JSON text; nulls as None."""
    t = col.type
    if pa.types.is_timestamp(t):
        return col.cast(pa.int64()).to_pylist()
    if pa.types.is_date32(t):
        return col.cast(pa.int32()).to_pylist()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        encoded = []
        for value in col.to_pylist():
            encoded.append(None if value is None else json.dumps(value, default=_json_default))
        return encoded
    return col.to_pylist()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value - EPOCH) // timedelta(microseconds=1)
    if isinstance(value, date):
        return (value - EPOCH_DATE).days
    raise TypeError(f"cannot encode {type(value).__name__}")


def decode_list(inner: pa.DataType) -> Callable[[Any], Any]:
    item = scalar_decoder(inner)

    def decode(text: Any) -> Any:
        values = json.loads(text)
        return values if item is None else [None if v is None else item(v) for v in values]

    return decode


def scalar_decoder(t: pa.DataType) -> Callable[[Any], Any] | None:
    if pa.types.is_boolean(t):
        return bool
    if pa.types.is_timestamp(t):
        return lambda us: EPOCH + timedelta(microseconds=us)
    if pa.types.is_date32(t):
        return lambda days: EPOCH_DATE + timedelta(days=days)
    return None


def normalise_keys(group: FeatureGroup, keys: Any) -> list[Key]:
    """Keys given as dicts, tuples or (single-key groups) scalars, as tuples in key order."""
    names = group.entity_keys
    if isinstance(keys, (str, bytes, int, dict, tuple)):
        keys = [keys]
    out: list[Key] = []
    for key in keys:
        if isinstance(key, dict):
            try:
                out.append(tuple(key[k] for k in names))
            except KeyError as exc:
                raise FeatureStoreError(
                    f"feature group {group.name!r}",
                    f"the key {key!r} has no value for entity key {exc.args[0]!r}",
                    f"give every entity key: {list(names)}",
                ) from None
        elif isinstance(key, tuple):
            if len(key) != len(names):
                raise FeatureStoreError(
                    f"feature group {group.name!r}",
                    f"the key {key!r} has {len(key)} value(s), the group has entity keys "
                    f"{list(names)}",
                    "give one value per entity key, in that order",
                )
            out.append(key)
        elif len(names) == 1:
            out.append((key,))
        else:
            raise FeatureStoreError(
                f"feature group {group.name!r}",
                f"the key {key!r} is a single value, the group has entity keys {list(names)}",
                "pass a dict or a tuple with every entity key",
            )
    return out


def writer_args(writer: str | None, sequence: int | None, group: str) -> None:
    if (writer is None) != (sequence is None):
        raise FeatureStoreError(
            f"feature group {group!r}",
            "writer and sequence must be given together",
            "pass both (an idempotent write) or neither",
        )
    if sequence is not None and (
        isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 0
    ):
        raise FeatureStoreError(
            f"feature group {group!r}", f"sequence {sequence!r} is not an integer >= 0", None
        )
