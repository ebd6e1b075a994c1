"""Feature groups: a named set of features keyed by entity and stamped with an event time.

A group fixes the storage schema of its rows: the entity key columns, the event time (always
stored as `timestamp[us, UTC]`; naive times are read as UTC) and the feature columns. Every batch
written to the store goes through `FeatureGroup.conform`, which casts it to that schema or says
which column of which group is wrong. Key and event time columns may be left out of `features`:
the event time is then a timestamp, and an undeclared key takes its type from the first batch
(any integer becomes int64, any string a string).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from headrace.errors import FeatureStoreError

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
PARTITION_COLUMN = "date"  # the offline Delta table is partitioned by this (UTC day of event time)
RESERVED_COLUMNS = frozenset({PARTITION_COLUMN})
EVENT_TIME_TYPE = pa.timestamp("us", tz="UTC")
UNRESOLVED = pa.null()  # the type of an undeclared entity key until a batch shows it

_FIX_NAME = "use letters, digits and underscores, starting with a letter or underscore"


def _is_key_type(t: pa.DataType) -> bool:
    if pa.types.is_uint64(t):  # does not fit SQLite's signed 64-bit integers
        return False
    return pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_scalar_feature_type(t: pa.DataType) -> bool:
    return (
        (pa.types.is_integer(t) and not pa.types.is_uint64(t))
        or pa.types.is_float32(t)
        or pa.types.is_float64(t)
        or pa.types.is_boolean(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_timestamp(t)
        or pa.types.is_date32(t)
    )


def _is_feature_type(t: pa.DataType) -> bool:
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        inner = t.value_type
        return _is_scalar_feature_type(inner) and not (
            pa.types.is_binary(inner) or pa.types.is_large_binary(inner)
        )
    return _is_scalar_feature_type(t)


def _storage_type(t: pa.DataType) -> pa.DataType:
    """The type a column is stored as: timestamps in microseconds (Delta's unit), zoned (UTC
    when naive, so Delta needs no timestampNtz feature); lists with their items normalised."""
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz=t.tz or "UTC")
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(_storage_type(t.value_type))
    return t


def _as_schema(features: pa.Schema | Mapping[str, pa.DataType], group: str) -> pa.Schema:
    if isinstance(features, pa.Schema):
        return features
    if isinstance(features, Mapping):
        fields = []
        for name, dtype in features.items():
            if not isinstance(dtype, pa.DataType):
                raise FeatureStoreError(
                    f"feature group {group!r}",
                    f"column {name!r} has type {dtype!r}, which is not a pyarrow DataType",
                    "give types as pyarrow types, for example pa.float64() or pa.int64()",
                )
            fields.append(pa.field(name, dtype))
        return pa.schema(fields)
    raise FeatureStoreError(
        f"feature group {group!r}",
        f"features must be a pyarrow Schema or a dict of name -> pyarrow type, not "
        f"{type(features).__name__}",
        "pass pa.schema([...]) or {'user_id': pa.int64(), 'ts': pa.timestamp('us'), ...}",
    )


@dataclass(frozen=True)
class FeatureGroup:
    """A named group of features, written and read together.

    `features` is the schema of the rows written to the group: the features, and the entity
    key column(s) and event time column with their types (either may be left out: the event time
    is then a timestamp, a key's type comes from the first batch). `ttl` is how long a value
    stays valid after its event time, online and in point-in-time joins.
    """

    name: str
    entity_keys: tuple[str, ...] | list[str] | str
    event_time: str
    features: pa.Schema | Mapping[str, pa.DataType]
    ttl: timedelta | None = None
    online: bool = True
    offline: bool = True
    description: str = ""
    schema: pa.Schema = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        subject = f"feature group {self.name!r}"
        if not isinstance(self.name, str) or not NAME_RE.match(self.name):
            raise FeatureStoreError(subject, "the name is not a valid identifier", _FIX_NAME)
        keys = (self.entity_keys,) if isinstance(self.entity_keys, str) else self.entity_keys
        keys = tuple(keys)
        if not keys or not all(isinstance(k, str) for k in keys):
            raise FeatureStoreError(
                subject, "entity_keys must be one column name or a list of them", None
            )
        if len(set(keys)) != len(keys):
            raise FeatureStoreError(subject, f"entity_keys {list(keys)} repeat a column", None)
        object.__setattr__(self, "entity_keys", keys)
        declared = _as_schema(self.features, self.name)
        object.__setattr__(self, "features", declared)
        if len(set(declared.names)) != len(declared.names):
            raise FeatureStoreError(subject, "the schema names a column twice", None)
        for col in declared.names:
            if not NAME_RE.match(col) or col.startswith("__"):
                raise FeatureStoreError(
                    subject,
                    f"column {col!r} is not a valid name",
                    _FIX_NAME + " (a leading '__' is reserved)",
                )
            if col in RESERVED_COLUMNS:
                raise FeatureStoreError(
                    subject,
                    f"column {col!r} is reserved: the offline table is partitioned by it",
                    f"rename the column {col!r}",
                )
        for key in keys:
            if key not in declared.names:
                continue  # typed by the first batch written
            ktype = declared.field(key).type
            if not _is_key_type(ktype):
                raise FeatureStoreError(
                    subject,
                    f"entity key {key!r} has type {ktype}",
                    "use an integer (up to int64) or a string for entity keys",
                )
        if self.event_time in keys:
            raise FeatureStoreError(
                subject, f"{self.event_time!r} is both an entity key and the event time", None
            )
        if self.event_time in declared.names:
            ttype = declared.field(self.event_time).type
        else:
            ttype = EVENT_TIME_TYPE
        if not pa.types.is_timestamp(ttype):
            raise FeatureStoreError(
                subject,
                f"event time column {self.event_time!r} has type {ttype}",
                "declare it as a timestamp, for example pa.timestamp('us', tz='UTC')",
            )
        feature_fields = [f for f in declared if f.name not in keys and f.name != self.event_time]
        if not feature_fields:
            raise FeatureStoreError(
                subject, "the schema has no feature columns besides the keys and event time", None
            )
        for f in feature_fields:
            if not _is_feature_type(f.type):
                raise FeatureStoreError(
                    subject,
                    f"feature {f.name!r} has type {f.type}, which the stores cannot hold",
                    "use integers (up to int64/uint32), float32/64, bool, string, binary, "
                    "timestamp, date32, or a list of those (binary excepted)",
                )
        if self.ttl is not None and (
            not isinstance(self.ttl, timedelta) or self.ttl <= timedelta(0)
        ):
            raise FeatureStoreError(subject, f"ttl {self.ttl!r} is not a positive timedelta", None)
        if not (self.online or self.offline):
            raise FeatureStoreError(
                subject, "online and offline are both False: nothing would store it", None
            )
        storage = [
            pa.field(k, declared.field(k).type if k in declared.names else UNRESOLVED) for k in keys
        ]
        storage = [f.with_nullable(False) for f in storage]
        storage.append(pa.field(self.event_time, EVENT_TIME_TYPE, nullable=False))
        storage += [pa.field(f.name, _storage_type(f.type)) for f in feature_fields]
        object.__setattr__(self, "schema", pa.schema(storage))

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The feature columns, in schema order (keys and event time excluded)."""
        return tuple(self.schema.names[len(self.entity_keys) + 1 :])

    @property
    def undeclared_keys(self) -> tuple[str, ...]:
        """Entity keys whose type no batch has shown yet."""
        return tuple(k for k in self.entity_keys if self.schema.field(k).type == UNRESOLVED)

    @property
    def ttl_us(self) -> int | None:
        return None if self.ttl is None else self.ttl // timedelta(microseconds=1)

    def conform(self, table: Any) -> pa.Table:
        """`table` cast to the group's storage schema, its columns in schema order.

        Extra columns are dropped. A missing column, a value that does not fit its type, or a
        null entity key or event time raises FeatureStoreError naming the group and column.
        """
        if not isinstance(table, pa.Table):
            try:
                table = pa.table(table)
            except (TypeError, ValueError, pa.ArrowException) as exc:
                raise FeatureStoreError(
                    f"feature group {self.name!r}",
                    f"cannot read a {type(table).__name__} as an Arrow table: {exc}",
                    "pass a pyarrow Table (or a polars/pandas DataFrame)",
                ) from exc
        if self.undeclared_keys:
            self._resolve_keys(table)
        columns = []
        for fld in self.schema:
            if fld.name not in table.column_names:
                raise FeatureStoreError(
                    f"feature group {self.name!r}",
                    f"the batch has no column {fld.name!r} (it has {table.column_names})",
                    f"add {fld.name!r} ({fld.type}) to the batch",
                )
            col = table.column(fld.name)
            if col.type != fld.type:
                col = self._cast(col, fld)
            if not fld.nullable and col.null_count:
                raise FeatureStoreError(
                    f"feature group {self.name!r}",
                    f"column {fld.name!r} has {col.null_count} null value(s)",
                    "entity keys and the event time must be set on every row",
                )
            columns.append(col)
        return pa.Table.from_arrays(columns, schema=self.schema)

    def _resolve_keys(self, table: pa.Table) -> None:
        schema = self.schema
        for key in self.undeclared_keys:
            if key not in table.column_names:
                continue  # conform reports the missing column
            t = table.schema.field(key).type
            # a string_view column is read as string; a declared key may not be one
            if not (_is_key_type(t) or pa.types.is_string_view(t)):
                raise FeatureStoreError(
                    f"feature group {self.name!r}",
                    f"entity key {key!r} has type {t}",
                    "send entity keys as integers (up to int64) or strings",
                )
            resolved = pa.int64() if pa.types.is_integer(t) else pa.string()
            index = schema.get_field_index(key)
            schema = schema.set(index, schema.field(key).with_type(resolved))
        object.__setattr__(self, "schema", schema)  # the group's key types, from now on

    def _cast(self, col: pa.ChunkedArray, fld: pa.Field) -> pa.ChunkedArray:
        source = col.type
        if pa.types.is_timestamp(source) and pa.types.is_timestamp(fld.type):
            # Arrow keeps instants as UTC epoch values: a naive column relabelled as UTC is
            # read as UTC, a zoned one keeps its instant. Delta stores microseconds, so finer
            # times are truncated to the microsecond.
            return col.cast(pa.timestamp(source.unit, tz=fld.type.tz)).cast(fld.type, safe=False)
        try:
            return pc.cast(col, fld.type, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise FeatureStoreError(
                f"feature group {self.name!r}",
                f"column {fld.name!r} has type {source} and cannot be cast to {fld.type}: {exc}",
                f"send {fld.name!r} as {fld.type} (or fix the group's schema)",
            ) from exc
