"""Point-in-time correct training sets: each entity row gets, from every requested group, the
feature values of the latest record whose event time is at or before the row's timestamp, never
a later one, and nulls when that record is older than the group's TTL or when the group has no
record for the entity before that time.

One DuckDB query does it, an `ASOF LEFT JOIN` per group over the groups' Delta tables (read as
Arrow datasets, so only the needed columns are scanned). The rows come back in input order with
every input column unchanged, the features appended.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from headrace.errors import FeatureStoreError
from headrace.features.group import FeatureGroup

ROW = "__row"
TS = "__ts"
SUBJECT = "historical feature query"

_database: tuple[int, duckdb.DuckDBPyConnection] | None = None


def _connection() -> duckdb.DuckDBPyConnection:
    """A connection of its own (views and registrations are local to it) on one in-memory
    database per process: opening a database costs ~11 ms, a cursor on it nothing."""
    global _database
    if _database is None or _database[0] != os.getpid():  # a forked child starts its own
        _database = (os.getpid(), duckdb.connect())
    return _database[1].cursor()


@dataclass
class GroupSelection:
    """The features wanted from one group and where its rows are (an Arrow dataset, or the
    paths of its Parquet files)."""

    group: FeatureGroup
    features: list[str]
    rows: pads.Dataset | list[str]


def parse_feature_refs(
    refs: Sequence[str], groups: Mapping[str, FeatureGroup]
) -> dict[str, list[str]]:
    """`["group:feature", "group:*"]` as {group: [features]} in the order asked."""
    if isinstance(refs, str):
        refs = [refs]
    wanted: dict[str, list[str]] = {}
    for ref in refs:
        name, sep, feature = ref.partition(":")
        if not sep or not feature:
            raise FeatureStoreError(
                SUBJECT,
                f"{ref!r} is not a feature reference",
                "write 'group:feature', or 'group:*' for every feature of a group",
            )
        group = groups.get(name)
        if group is None:
            raise FeatureStoreError(
                SUBJECT,
                f"{ref!r} names the unknown feature group {name!r}",
                f"register it first; known groups: {sorted(groups)}",
            )
        chosen = wanted.setdefault(name, [])
        names = group.feature_names if feature == "*" else [feature]
        for f in names:
            if f not in group.feature_names:
                raise FeatureStoreError(
                    SUBJECT,
                    f"feature group {name!r} has no feature {f!r}",
                    f"use one of {list(group.feature_names)}",
                )
            if f not in chosen:
                chosen.append(f)
    if not wanted:
        raise FeatureStoreError(SUBJECT, "no features were asked for", "name at least one")
    return wanted


def as_arrow(rows: Any) -> pa.Table:
    """Entity rows from a pyarrow Table, a polars or pandas DataFrame (or any Arrow stream)."""
    if isinstance(rows, pa.Table):
        return rows
    if type(rows).__module__.startswith("pandas"):
        return pa.Table.from_pandas(rows, preserve_index=False)
    if hasattr(rows, "to_arrow"):  # polars
        return rows.to_arrow()
    try:
        return pa.table(rows)
    except (TypeError, ValueError, pa.ArrowException) as exc:
        raise FeatureStoreError(
            SUBJECT,
            f"cannot read entity rows of type {type(rows).__name__}",
            "pass a pyarrow Table or a polars/pandas DataFrame",
        ) from exc


def _entity_times(rows: pa.Table, column: str) -> pa.ChunkedArray:
    if column not in rows.column_names:
        raise FeatureStoreError(
            SUBJECT,
            f"the entity rows have no timestamp column {column!r} (they have {rows.column_names})",
            "pass timestamp_column= naming the column with each row's point in time",
        )
    col = rows.column(column)
    t = col.type
    if pa.types.is_timestamp(t):
        return col.cast(pa.timestamp(t.unit, tz="UTC")).cast(pa.timestamp("us", "UTC"), safe=False)
    if pa.types.is_date(t):
        return col.cast(pa.timestamp("us")).cast(pa.timestamp("us", "UTC"))
    raise FeatureStoreError(
        SUBJECT,
        f"the timestamp column {column!r} has type {t}",
        "give each row's point in time as a timestamp (naive values are read as UTC) or date",
    )


def _output_names(
    selections: Sequence[GroupSelection], taken: Sequence[str], full_feature_names: bool
) -> list[str]:
    names = [
        f"{s.group.name}__{f}" if full_feature_names else f for s in selections for f in s.features
    ]
    seen = set(taken)
    for name in names:
        if name in seen:
            raise FeatureStoreError(
                SUBJECT,
                f"the output column {name!r} would appear twice (an input column or a feature "
                "of another group has that name)",
                "pass full_feature_names=True to name features 'group__feature', or rename",
            )
        seen.add(name)
    return names


def _sql(selections: Sequence[GroupSelection]) -> str:
    """One ASOF LEFT JOIN per group; the result has the row number, then per group the matched
    record's event time (t0, t1, ...: for the TTL) and its features (o0, o1, ...)."""
    select = [f"e.{ROW}"]
    joins = []
    n = 0
    for i, sel in enumerate(selections):
        g = sel.group
        alias = f"g{i}"
        inner = ", ".join(
            [f'"{k}"' for k in g.entity_keys]
            + [f'"{g.event_time}" AS {TS}']
            + [f'"{f}"' for f in sel.features]
        )
        on = " AND ".join(f'e."{k}" = {alias}."{k}"' for k in g.entity_keys)
        joins.append(
            f"ASOF LEFT JOIN (SELECT {inner} FROM {alias}) {alias} "
            f"ON {on} AND e.{TS} >= {alias}.{TS}"
        )
        if g.ttl_us is not None:
            select.append(f"{alias}.{TS} AS t{i}")
        for f in sel.features:
            select.append(f'{alias}."{f}" AS o{n}')
            n += 1
    return f"SELECT {', '.join(select)} FROM entities e " + " ".join(joins)


def _expire(
    features: pa.Table, selections: Sequence[GroupSelection], times: pa.ChunkedArray
) -> list[pa.ChunkedArray]:
    """The feature columns, nulled where the matched record is older than its group's TTL.

    One comparison per group instead of a CASE per feature in SQL, and nothing to do when no
    record is stale (the common case with a TTL longer than the data's span)."""
    columns = []
    for i, sel in enumerate(selections):
        feats = [features.column(f"o{len(columns) + j}") for j in range(len(sel.features))]
        columns += feats
        if sel.group.ttl_us is None:
            continue
        oldest = pc.subtract(times, pa.scalar(sel.group.ttl, pa.duration("us")))
        stale = pc.less(features.column(f"t{i}"), oldest)
        if not pc.any(stale).as_py():
            continue
        start = len(columns) - len(feats)
        for j, col in enumerate(feats):
            columns[start + j] = pc.if_else(stale, pa.scalar(None, col.type), col)
    return columns


_PARALLEL_TAKE_ROWS = 100_000


def _in_input_order(result: pa.Table, n: int) -> pa.Table:
    """The join result without its row numbers, each row back at its entity row's place.

    ASOF LEFT JOIN yields every entity row once, in no set order. The columns are reordered in
    parallel: Arrow's take releases the GIL, and one column at a time on one core was a fifth
    of the whole join's time."""
    position = result.column(ROW).to_numpy()
    order = np.empty(n, dtype=np.int64)
    order[position] = np.arange(n, dtype=np.int64)
    indices = pa.array(order)
    features = result.drop_columns([ROW])
    workers = min(os.cpu_count() or 1, features.num_columns)
    if workers < 2 or n < _PARALLEL_TAKE_ROWS:  # starting threads costs more than small takes
        return features.take(indices)
    with ThreadPoolExecutor(workers) as pool:
        columns = list(pool.map(lambda c: c.take(indices), features.columns))
    return pa.Table.from_arrays(columns, schema=features.schema)


def point_in_time_join(
    entity_rows: Any,
    selections: Sequence[GroupSelection],
    *,
    timestamp_column: str = "event_timestamp",
    full_feature_names: bool = False,
) -> pa.Table:
    """The entity rows with the selected features appended, point-in-time correct."""
    rows = as_arrow(entity_rows)
    times = _entity_times(rows, timestamp_column)
    keys: list[str] = []
    for sel in selections:
        for k in sel.group.entity_keys:
            if k not in rows.column_names:
                raise FeatureStoreError(
                    SUBJECT,
                    f"the entity rows have no column {k!r}, an entity key of feature group "
                    f"{sel.group.name!r}",
                    f"add {k!r} to the entity rows",
                )
            if k not in keys:
                keys.append(k)
    names = _output_names(selections, rows.column_names, full_feature_names)
    n = rows.num_rows
    probe = pa.Table.from_arrays(
        [*(rows.column(k) for k in keys), times, pa.array(np.arange(n, dtype=np.int64))],
        names=[*keys, TS, ROW],
    )
    con = _connection()
    try:
        con.register("entities", probe)
        for i, sel in enumerate(selections):
            if isinstance(sel.rows, list):
                files = ", ".join("'" + path.replace("'", "''") + "'" for path in sel.rows)
                source = f"read_parquet([{files}], union_by_name = true)"
                con.execute(f"CREATE TEMP VIEW g{i} AS SELECT * FROM {source}")
            else:
                con.register(f"g{i}", sel.rows)
        result = con.sql(_sql(selections)).to_arrow_table()
    except duckdb.Error as exc:
        raise FeatureStoreError(
            SUBJECT,
            f"DuckDB could not run the join: {exc}",
            "check the entity key columns have the groups' key types",
        ) from exc
    finally:
        con.close()
    features = _in_input_order(result, n)
    out = rows
    for name, column in zip(names, _expire(features, selections, times), strict=True):
        out = out.append_column(name, column)
    return out
