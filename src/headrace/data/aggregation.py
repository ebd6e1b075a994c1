"""Group aggregations as partials per block and a merge, shared by the dataset engines: the
local engine folds blocks as they arrive, the Ray engine folds them in Ray tasks and merges
here, so both give the same names, types, nulls and order."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from headrace.data.errors import DatasetError
from headrace.data.plan import Agg


def partial_aggregates(block: pa.Table, keys: list[str], aggs: tuple[Agg, ...]) -> pa.Table:
    """One block folded to partial aggregates per key (sums, counts, sums of squares, min/max)."""
    for column in [*keys, *(a.on for a in aggs if a.on)]:
        if column not in block.column_names:
            raise DatasetError(
                "groupby/aggregate",
                f"no column {column!r} (columns: {block.column_names})",
                "check the names",
            )
    columns: dict[str, Any] = {k: block.column(k) for k in keys}
    specs = []
    for i, agg in enumerate(aggs):
        if agg.kind == "count":
            columns[f"_c{i}"] = pa.array(np.ones(block.num_rows, dtype=np.int64))
            specs.append((f"_c{i}", "sum", f"{i}_count"))
            continue
        values = block.column(agg.on)
        if agg.kind in ("min", "max"):
            columns[f"_v{i}"] = values
            specs.append((f"_v{i}", agg.kind, f"{i}_{agg.kind}"))
            continue
        numeric = pc.cast(values, pa.float64()) if agg.kind in ("mean", "std") else values
        columns[f"_v{i}"] = numeric
        columns[f"_n{i}"] = pc.cast(pc.is_valid(values), pa.int64())
        specs.append((f"_v{i}", "sum", f"{i}_sum"))
        if agg.kind in ("mean", "std"):
            specs.append((f"_n{i}", "sum", f"{i}_count"))
        if agg.kind == "std":
            columns[f"_q{i}"] = pc.multiply(numeric, numeric)
            specs.append((f"_q{i}", "sum", f"{i}_sumsq"))
    table = pa.table(columns)
    if not keys:
        out = {}
        for column, fn, name in specs:
            value = getattr(pc, fn)(table.column(column))
            out[name] = pa.array([value.as_py()], value.type)
        return pa.table(out)
    grouped = table.group_by(keys, use_threads=False).aggregate([(c, f) for c, f, _ in specs])
    rename = {f"{c}_{f}": n for c, f, n in specs}
    return grouped.rename_columns([rename.get(c, c) for c in grouped.column_names])


def merge_aggregates(
    partials: list[pa.Table], keys: list[str], aggs: tuple[Agg, ...], *, final: bool
) -> pa.Table:
    """Partials merged; `final` turns them into the aggregates' values, sorted by key."""
    if not partials:
        empty = {k: pa.array([], pa.null()) for k in keys}
        return pa.table({**empty, **{a.output: pa.array([], pa.null()) for a in aggs}})
    table = pa.concat_tables(partials, promote_options="permissive")
    merges = []
    for name in table.column_names:
        if name in keys:
            continue
        kind = name.split("_", 1)[1]
        merges.append((name, {"count": "sum", "sum": "sum", "sumsq": "sum"}.get(kind, kind)))
    if keys:
        merged = table.group_by(keys, use_threads=False).aggregate(merges)
        merged = merged.rename_columns(
            [c.rsplit("_", 1)[0] if c not in keys else c for c in merged.column_names]
        )
    else:
        merged = pa.table({n: [getattr(pc, f)(table.column(n)).as_py()] for n, f in merges})
    if not final:
        return merged
    out: dict[str, Any] = {k: merged.column(k) for k in keys}
    for i, agg in enumerate(aggs):
        col = merged.column
        if agg.kind == "count":
            out[agg.output] = col(f"{i}_count")
        elif agg.kind in ("sum", "min", "max"):
            out[agg.output] = col(f"{i}_{agg.kind}")
        elif agg.kind == "mean":
            out[agg.output] = pc.divide(col(f"{i}_sum"), pc.cast(col(f"{i}_count"), pa.float64()))
        else:
            n = pc.cast(col(f"{i}_count"), pa.float64())
            mean = pc.divide(col(f"{i}_sum"), n)
            var = pc.divide(
                pc.subtract(col(f"{i}_sumsq"), pc.multiply(n, pc.multiply(mean, mean))),
                pc.subtract(n, agg.ddof),
            )
            out[agg.output] = pc.sqrt(pc.max_element_wise(var, 0.0))
    result = pa.table(out)
    if keys:
        result = result.sort_by([(k, "ascending") for k in keys])
    return result
