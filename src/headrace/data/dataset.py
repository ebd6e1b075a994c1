"""`Dataset`: Ray Data's method names and semantics over a lazy plan.

Every transformation returns a new Dataset with one more plan node and runs nothing;
consuming methods (`count`, `take`, `show`, `iter_batches`, `to_pandas`, `write_*`, ...)
hand the plan to the engine. `count`, `schema`, `size_bytes` and `input_files` answer from
Parquet footers when no user function stands between the read and the question.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from headrace.data.batches import check_format, to_batch
from headrace.data.context import DataContext, get_engine
from headrace.data.engine import ExecutionStats
from headrace.data.errors import DatasetError
from headrace.data.grouped import (
    Count,
    GroupedData,
    Max,
    Mean,
    Min,
    Std,
    Sum,
    aggregate_node,
)
from headrace.data.ops import (
    AddColumn,
    DropColumns,
    MapBatches,
    MapRows,
    RenameColumns,
    SelectColumns,
)
from headrace.data.plan import (
    Agg,
    Limit,
    MapOp,
    Node,
    RandomShuffle,
    Read,
    Repartition,
    Sort,
    Union,
    columns_of,
    describe,
    metadata_count,
    metadata_schema,
    metadata_schema_node,
)
from headrace.data.runs import recorded, recording
from headrace.data.schema import Schema
from headrace.data.sinks import WriteTarget
from headrace.data.sources import TablesSource
from headrace.data.strategy import compute_strategy


def _names(value: str | list[str], what: str) -> list[str]:
    names = [value] if isinstance(value, str) else list(value)
    if not names or not all(isinstance(n, str) for n in names):
        raise DatasetError(what, f"{value!r} is not a column name or list of names", None)
    return names


def _check_callable(fn: Any, operation: str) -> None:
    if not callable(fn):
        raise DatasetError(
            operation, f"{fn!r} is not callable", "pass a function or a callable class"
        )


class Dataset:
    """A lazy, ordered collection of rows in Arrow blocks."""

    def __init__(self, plan: Node, context: DataContext | None = None) -> None:
        self._plan = plan
        self._context = context or DataContext.get_current()
        self._last_stats: ExecutionStats | None = None

    def _derive(self, plan: Node) -> Dataset:
        return Dataset(plan, self._context)

    def _map(self, op: Any) -> Dataset:
        op.columns_out(columns_of_safe(self._plan))  # names checked now, not at run time
        return self._derive(MapOp(self._plan, op))

    # -- execution -------------------------------------------------------------------------

    def _execute(self, plan: Node | None = None, action: str = "iter_rows") -> Iterator[pa.Table]:
        """The plan's blocks; the execution is recorded as a dataset run in the project's
        ledger under `action`, the method the user called."""
        engine = get_engine(self._context)
        self._last_stats = stats = ExecutionStats(engine.name)
        plan = plan or self._plan
        return recorded(engine.execute(plan, stats), plan, stats, action)

    # -- transformations -------------------------------------------------------------------

    def map_batches(
        self,
        fn: Any,
        *,
        batch_size: int | str | None = None,
        compute: Any = None,
        batch_format: str | None = "default",
        zero_copy_batch: bool = True,
        fn_args: Any = None,
        fn_kwargs: dict[str, Any] | None = None,
        fn_constructor_args: Any = None,
        fn_constructor_kwargs: dict[str, Any] | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        memory: float | None = None,
        concurrency: int | tuple[int, ...] | None = None,
        **ray_remote_args: Any,
    ) -> Dataset:
        """Apply `fn` (a function, or a class constructed once per worker) to batches."""
        operation = f"map_batches({getattr(fn, '__name__', fn)!r})"
        _check_callable(fn, operation)
        check_format(batch_format, operation)
        if batch_size == "auto":
            batch_size = None
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise DatasetError(operation, f"batch_size={batch_size!r}", "use a positive int")
        strategy = compute_strategy(fn, compute, concurrency, operation)
        if memory is not None and (not isinstance(memory, int | float) or memory <= 0):
            raise DatasetError(operation, f"memory={memory!r}", "give bytes per worker, > 0")
        return self._map(
            MapBatches(
                fn,
                batch_size=batch_size,
                batch_format=batch_format,
                compute=strategy,
                fn_args=tuple(fn_args or ()),
                fn_kwargs=dict(fn_kwargs or {}),
                fn_constructor_args=tuple(fn_constructor_args or ()),
                fn_constructor_kwargs=dict(fn_constructor_kwargs or {}),
                zero_copy_batch=zero_copy_batch,
                num_cpus=num_cpus,
                memory=memory,
            )
        )

    def add_column(
        self,
        col: str,
        fn: Callable[[Any], Any],
        *,
        batch_format: str | None = "pandas",
        compute: Any = None,
        concurrency: int | None = None,
        **ray_remote_args: Any,
    ) -> Dataset:
        _check_callable(fn, f"add_column({col!r})")
        check_format(batch_format, f"add_column({col!r})")
        return self._map(AddColumn(col, fn, batch_format))

    def drop_columns(self, cols: list[str] | str, **ray_remote_args: Any) -> Dataset:
        return self._map(DropColumns(_names(cols, "drop_columns")))

    def select_columns(self, cols: list[str] | str, **ray_remote_args: Any) -> Dataset:
        return self._map(SelectColumns(_names(cols, "select_columns")))

    def rename_columns(self, names: dict[str, str] | list[str], **ray_remote_args: Any) -> Dataset:
        if isinstance(names, list):
            current = columns_of_safe(self._plan)
            if current is None or len(current) != len(names):
                raise DatasetError(
                    "rename_columns",
                    f"a list of {len(names)} names for columns {current}",
                    "pass a dict {old: new}, or one new name per column",
                )
            names = dict(zip(current, names, strict=True))
        return self._map(RenameColumns(dict(names)))

    def _rows(self, kind: str, fn: Any, compute: Any, concurrency: Any, **kw: Any) -> Dataset:
        operation = f"{kind}({getattr(fn, '__name__', fn)!r})"
        _check_callable(fn, operation)
        strategy = compute_strategy(fn, compute, concurrency, operation)
        return self._map(
            MapRows(
                kind,
                fn,
                fn_args=tuple(kw.get("fn_args") or ()),
                fn_kwargs=dict(kw.get("fn_kwargs") or {}),
                fn_constructor_args=tuple(kw.get("fn_constructor_args") or ()),
                fn_constructor_kwargs=dict(kw.get("fn_constructor_kwargs") or {}),
                compute=strategy,
            )
        )

    def map(self, fn: Any, *, compute: Any = None, concurrency: Any = None, **kw: Any) -> Dataset:
        """Apply `fn` to each row (a dict); it returns the new row."""
        return self._rows("map", fn, compute, concurrency, **kw)

    def flat_map(
        self, fn: Any, *, compute: Any = None, concurrency: Any = None, **kw: Any
    ) -> Dataset:
        """Apply `fn` to each row; it returns a list of rows."""
        return self._rows("flat_map", fn, compute, concurrency, **kw)

    def filter(
        self, fn: Any = None, *, expr: str | None = None, compute: Any = None, **kw: Any
    ) -> Dataset:
        """Keep the rows for which `fn(row)` is true."""
        if expr is not None:
            raise DatasetError(
                "filter(expr=...)",
                "expressions are not supported",
                "pass a function of the row, or map_batches with a pandas filter",
            )
        return self._rows("filter", fn, compute, kw.pop("concurrency", None), **kw)

    def sort(self, key: str | list[str], descending: bool | list[bool] = False) -> Dataset:
        keys = _names(key, "sort")
        order = [descending] * len(keys) if isinstance(descending, bool) else list(descending)
        if len(order) != len(keys):
            raise DatasetError(
                "sort", f"{len(keys)} keys and {len(order)} descending flags", "give one per key"
            )
        columns = columns_of_safe(self._plan)
        if columns is not None and not set(keys) <= set(columns):
            raise DatasetError(
                f"sort({keys})", f"no such column (columns: {columns})", "sort by existing ones"
            )
        return self._derive(Sort(self._plan, tuple(keys), tuple(order)))

    def limit(self, limit: int) -> Dataset:
        return self._derive(Limit(self._plan, int(limit)))

    def union(self, *other: Dataset) -> Dataset:
        return self._derive(Union((self._plan, *(o._plan for o in other))))

    def random_shuffle(self, *, seed: int | None = None, **ray_remote_args: Any) -> Dataset:
        return self._derive(RandomShuffle(self._plan, seed))

    def repartition(self, num_blocks: int, *, shuffle: bool = False, **kw: Any) -> Dataset:
        plan: Node = self._plan
        if shuffle:
            plan = RandomShuffle(plan, None)
        return self._derive(Repartition(plan, int(num_blocks)))

    def groupby(self, key: str | list[str] | None) -> GroupedData:
        return GroupedData(self, [] if key is None else _names(key, "groupby"))

    # -- aggregates over the whole dataset ---------------------------------------------------

    def aggregate(self, *aggs: Agg) -> dict[str, Any]:
        table = self._derive(aggregate_node(self._plan, (), aggs)).to_arrow()
        return {name: table.column(name)[0].as_py() for name in table.column_names}

    def _one(self, agg: Agg) -> Any:
        return next(iter(self.aggregate(agg).values()))

    def sum(self, on: str) -> Any:
        return self._one(Sum(on))

    def min(self, on: str) -> Any:
        return self._one(Min(on))

    def max(self, on: str) -> Any:
        return self._one(Max(on))

    def mean(self, on: str) -> Any:
        return self._one(Mean(on))

    def std(self, on: str, ddof: int = 1) -> Any:
        return self._one(Std(on, ddof))

    def unique(self, column: str) -> list[Any]:
        seen: dict[Any, None] = {}
        for block in self.select_columns([column])._execute(action="unique"):
            for value in block.column(column).unique().to_pylist():
                seen.setdefault(value, None)
        return list(seen)

    # -- metadata --------------------------------------------------------------------------

    def count(self) -> int:
        known = metadata_count(self._plan)
        if known is not None:  # from the footers: nothing runs, nothing to record
            return known
        engine = get_engine(self._context)
        self._last_stats = stats = ExecutionStats(engine.name)
        with recording(self._plan, stats, "count"):
            stats.rows_out = engine.count(self._plan, stats)
            return stats.rows_out

    def schema(self, fetch_if_missing: bool = True) -> Schema | None:
        known = metadata_schema(self._plan)
        if known is not None:
            return Schema(known)
        if not fetch_if_missing:
            return None
        for block in self._execute(Limit(self._plan, 1), "schema"):
            return Schema(block.schema)
        return None

    def columns(self, fetch_if_missing: bool = True) -> list[str] | None:
        schema = self.schema(fetch_if_missing)
        return None if schema is None else schema.names

    def size_bytes(self) -> int:
        """In-memory size of the data: for an unchanged Parquet read, the uncompressed size
        of its row groups from the footers; otherwise the Arrow size of the computed blocks."""
        read = metadata_schema_node(self._plan)
        if read is not None and read is self._plan:
            known = read.source.size_bytes()
            if known is not None:
                return known
        return sum(block.nbytes for block in self._execute(action="size_bytes"))

    def input_files(self) -> list[str]:
        files: list[str] = []
        stack = [self._plan]
        while stack:
            node = stack.pop()
            if isinstance(node, Read):
                files.extend(f for f in node.source.input_files() if f not in files)
            stack.extend(reversed(node.children()))
        return files

    def num_blocks(self) -> int:
        if isinstance(self._plan, Read):
            return len(self._plan.source.fragments())
        return sum(1 for _ in self._execute(action="num_blocks"))

    def stats(self) -> str:
        if self._last_stats is None:
            return "Dataset not executed yet:\n" + describe(self._plan)
        return str(self._last_stats)

    def explain(self) -> str:
        return describe(self._plan)

    # -- consuming -------------------------------------------------------------------------

    def take(self, limit: int = 20) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for block in self._execute(Limit(self._plan, limit), "take"):
            rows.extend(block.to_pylist())
        return rows[:limit]

    def take_all(self, limit: int | None = None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for block in self._execute(action="take_all"):
            rows.extend(block.to_pylist())
            if limit is not None and len(rows) > limit:
                raise DatasetError(
                    "take_all", f"the dataset has more than {limit} rows", "raise the limit"
                )
        return rows

    def show(self, limit: int = 20) -> None:
        for row in self.take(limit):
            print(row)

    def take_batch(self, batch_size: int = 20, *, batch_format: str | None = "default") -> Any:
        check_format(batch_format, "take_batch")
        blocks = list(self._execute(Limit(self._plan, batch_size), "take_batch"))
        table = pa.concat_tables(blocks) if blocks else _empty(self)
        return to_batch(table, batch_format)

    def iter_batches(
        self,
        *,
        batch_size: int | None = 256,
        batch_format: str | None = "default",
        drop_last: bool = False,
        prefetch_batches: int = 1,
        **kw: Any,
    ) -> Iterator[Any]:
        check_format(batch_format, "iter_batches")
        pending: list[pa.Table] = []
        held = 0
        for block in self._execute(action="iter_batches"):
            if batch_size is None:
                yield to_batch(block, batch_format)
                continue
            pending.append(block)
            held += block.num_rows
            while held >= batch_size:
                table = pa.concat_tables(pending)
                yield to_batch(table.slice(0, batch_size), batch_format)
                rest = table.slice(batch_size)
                pending, held = [rest], rest.num_rows
        if held and not drop_last:
            yield to_batch(pa.concat_tables(pending), batch_format)

    def iter_rows(self) -> Iterator[dict[str, Any]]:
        for block in self._execute():
            yield from block.to_pylist()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.iter_rows()

    def to_arrow(self) -> pa.Table:
        blocks = list(self._execute(action="to_arrow"))
        return pa.concat_tables(blocks, promote_options="permissive") if blocks else _empty(self)

    def to_pandas(self, limit: int | None = None) -> Any:
        table = self.to_arrow()
        if limit is not None and table.num_rows > limit:
            raise DatasetError(
                "to_pandas", f"the dataset has more than {limit} rows", "raise the limit"
            )
        return table.to_pandas()

    def materialize(self) -> Dataset:
        blocks = [b for b in self._execute(action="materialize") if b.num_rows] or [_empty(self)]
        stats = self._last_stats
        done = self._derive(Read(TablesSource(blocks, "Materialized")))
        done._last_stats = stats
        return done

    # -- writing ---------------------------------------------------------------------------

    def _write(
        self,
        path: str,
        file_format: str,
        filesystem: Any,
        mode: str,
        options: Any,
        storage_options: Any = None,
    ) -> None:
        target = WriteTarget(
            path,
            file_format,
            filesystem=filesystem,
            mode=mode,
            storage_options=storage_options,
            options=options,
        )
        engine = get_engine(self._context)
        self._last_stats = stats = ExecutionStats(engine.name)
        label = f"Write{file_format.capitalize() if file_format != 'csv' else 'CSV'}"
        with recording(self._plan, stats, f"write_{file_format}", output=path, last_step=label):
            engine.write(self._plan, target, stats)

    def write_parquet(
        self,
        path: str,
        *,
        filesystem: Any = None,
        mode: str = "append",
        arrow_parquet_args: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        """Write one Parquet file per block into the folder `path`, all or nothing."""
        self._write(
            path,
            "parquet",
            filesystem,
            mode,
            {**(arrow_parquet_args or {})},
            kw.get("storage_options"),
        )

    def write_csv(
        self, path: str, *, filesystem: Any = None, mode: str = "append", **kw: Any
    ) -> None:
        self._write(path, "csv", filesystem, mode, {}, kw.get("storage_options"))

    def write_json(
        self, path: str, *, filesystem: Any = None, mode: str = "append", **kw: Any
    ) -> None:
        self._write(path, "json", filesystem, mode, {}, kw.get("storage_options"))

    def __repr__(self) -> str:
        count = metadata_count(self._plan)
        columns = columns_of_safe(self._plan)
        parts = []
        if count is not None:
            parts.append(f"num_rows={count}")
        if columns is not None:
            parts.append(f"columns={columns}")
        return f"Dataset({', '.join(parts)})" if parts else f"Dataset({self._plan.label()})"


def columns_of_safe(plan: Node) -> list[str] | None:
    try:
        return columns_of(plan)
    except DatasetError:
        raise
    except Exception:
        return None


def _empty(ds: Dataset) -> pa.Table:
    schema = ds.schema(fetch_if_missing=False)
    return schema.base_schema.empty_table() if schema is not None else pa.table({})


__all__ = ["Count", "Dataset", "Max", "Mean", "Min", "Std", "Sum"]
