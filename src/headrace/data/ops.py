"""The per-block operations of a plan: what a worker does to one block of rows.

Each operation knows the columns it produces from the columns it gets (so the plan can tell
which columns the read needs) and applies itself to an Arrow table. Operations that call user
code wrap its failure in a UserFunctionError naming the operation, the input and the traceback.
"""

from __future__ import annotations

import dis
import inspect
import itertools
import linecache
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa

from headrace.data.batches import (
    column_from,
    from_batch,
    keep_input_types,
    table_of_rows,
    to_batch,
)
from headrace.data.errors import DatasetError, UserFunctionError
from headrace.data.rowfilters import apply_filter, apply_filters, elementwise, row_filter
from headrace.data.rowfilters import columns_of as filter_columns
from headrace.data.strategy import ActorPoolStrategy, TaskPoolStrategy

Columns = list[str] | None  # None: not known before running


def function_name(fn: Any) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def columns_read(fn: Any) -> set[str] | None:
    """The columns a function of one batch reads, when its bytecode shows it reads nothing else
    of the batch than `batch["name"]` subscripts; None when it does anything else with it."""
    if not inspect.isfunction(fn):
        return None
    code = fn.__code__
    if code.co_argcount < 1 or code.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS):
        return None
    param = code.co_varnames[0]
    if param in code.co_cellvars:
        return None  # a nested function holds the batch
    instructions = list(dis.get_instructions(code))
    found: set[str] = set()
    for i, ins in enumerate(instructions):
        if ins.argval != param or not ins.opname.startswith(("LOAD_FAST", "STORE_", "DELETE_")):
            continue
        if not ins.opname.startswith("LOAD_FAST") or ins.opname == "LOAD_FAST_LOAD_FAST":
            return None
        key, subscript = instructions[i + 1 : i + 3] if i + 2 < len(instructions) else (None, None)
        if (
            key is None
            or key.opname != "LOAD_CONST"
            or not isinstance(key.argval, str)
            or subscript.opname != "BINARY_SUBSCR"
        ):
            return None
        found.add(key.argval)
    return found


@dataclass
class Where:
    """What a task works on, for error messages."""

    text: str
    task: int = 0
    source: str | None = None


def source_file(fn: Any) -> str | None:
    """The file a user function or class was written in (for tracebacks in workers, where
    functions sent by value report their file as `<dynamic-code>`)."""
    try:
        return inspect.getsourcefile(
            fn if inspect.isfunction(fn) or isinstance(fn, type) else type(fn)
        )
    except TypeError:
        return None


def _format_user_traceback(exc: BaseException, source: str | None) -> str:
    tb = exc.__traceback__
    frames = traceback.extract_tb(tb.tb_next if tb else None)
    for frame in frames:
        if frame.filename == "<dynamic-code>" and source:
            frame.filename = source
            frame._line = None  # read again from the real file
            linecache.checkcache(source)
            frame._line = linecache.getline(source, frame.lineno or 0).rstrip("\n")
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    lines.extend(traceback.format_exception_only(type(exc), exc))
    return "".join(lines)


def _call_user(operation: str, where: Where, fn: Callable, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        lines = [_format_user_traceback(exc, where.source)]
        raise UserFunctionError(
            operation,
            f"the function raised {type(exc).__name__}: {exc} (input: {where.text})",
            "fix the function or the rows it fails on; the traceback below is the function's",
            user_traceback="".join(lines),
        ) from None


class Op:
    """One per-block operation."""

    name = "Op"
    user_code = False

    def __post_init__(self) -> None:
        self.uid = uuid.uuid4().hex

    def columns_out(self, columns: Columns) -> Columns:
        return columns

    def columns_needed(self, required: set[str] | None, columns_in: Columns) -> set[str] | None:
        """The input columns this operation needs so that its output has `required`
        (None: all of them)."""
        return None

    def apply(self, table: pa.Table, where: Where, state: dict[str, Any]) -> pa.Table:
        raise NotImplementedError


@dataclass(eq=False)
class AddColumn(Op):
    column: str
    fn: Callable[[Any], Any]
    batch_format: str | None = "pandas"
    user_code = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.name = f"AddColumn({self.column})"
        self.reads = columns_read(self.fn)
        self.elementwise = elementwise(self.fn)
        self.source_file = source_file(self.fn)

    def columns_out(self, columns: Columns) -> Columns:
        if columns is None:
            return None
        return columns if self.column in columns else [*columns, self.column]

    def columns_needed(self, required: set[str] | None, columns_in: Columns) -> set[str] | None:
        if required is None or self.reads is None:
            return None
        return (required - {self.column}) | self.reads

    def apply(self, table: pa.Table, where: Where, state: dict[str, Any]) -> pa.Table:
        # a function that only subscripts the batch sees only those columns: the others need
        # no conversion to pandas
        view = table
        if self.reads is not None and self.reads <= set(table.column_names):
            view = table.select([c for c in table.column_names if c in self.reads])
        batch = to_batch(view, self.batch_format)
        where = replace(where, source=self.source_file)
        value = _call_user(self.name, where, self.fn, batch)
        if self.batch_format in ("pandas", "default") and type(value).__name__ == "Series":
            value.index = batch.index
        column = column_from(value, table.num_rows, self.column, self.name)
        if self.column in table.column_names:
            return table.set_column(table.column_names.index(self.column), self.column, column)
        return table.append_column(self.column, column)


def _missing(columns: Iterable[str], present: Columns, operation: str) -> None:
    if present is None:
        return
    missing = [c for c in columns if c not in present]
    if missing:
        raise DatasetError(
            operation,
            f"no column(s) {missing} in the dataset (columns: {present})",
            "check the names",
        )


@dataclass(eq=False)
class DropColumns(Op):
    columns: list[str]

    def __post_init__(self) -> None:
        super().__post_init__()
        self.name = "DropColumns"

    def columns_out(self, columns: Columns) -> Columns:
        _missing(self.columns, columns, self.name)
        return None if columns is None else [c for c in columns if c not in self.columns]

    def columns_needed(self, required: set[str] | None, columns_in: Columns) -> set[str] | None:
        if required is None:
            return None if columns_in is None else set(columns_in) - set(self.columns)
        return required - set(self.columns)

    def apply(self, table: pa.Table, where: Where, state: dict[str, Any]) -> pa.Table:
        return table.drop_columns([c for c in self.columns if c in table.column_names])


@dataclass(eq=False)
class SelectColumns(Op):
    columns: list[str]

    def __post_init__(self) -> None:
        super().__post_init__()
        self.name = "SelectColumns"

    def columns_out(self, columns: Columns) -> Columns:
        _missing(self.columns, columns, self.name)
        return list(self.columns)

    def columns_needed(self, required: set[str] | None, columns_in: Columns) -> set[str] | None:
        return set(self.columns)

    def apply(self, table: pa.Table, where: Where, state: dict[str, Any]) -> pa.Table:
        _missing(self.columns, table.column_names, self.name)
        return table.select(self.columns)


@dataclass(eq=False)
class RenameColumns(Op):
    mapping: dict[str, str]

    def __post_init__(self) -> None:
        super().__post_init__()
        self.name = "RenameColumns"

    def columns_out(self, columns: Columns) -> Columns:
        _missing(self.mapping, columns, self.name)
        return None if columns is None else [self.mapping.get(c, c) for c in columns]

    def columns_needed(self, required: set[str] | None, columns_in: Columns) -> set[str] | None:
        if required is None:
            return None
        back = {new: old for old, new in self.mapping.items()}
        return {back.get(c, c) for c in required}

    def apply(self, table: pa.Table, where: Where, state: dict[str, Any]) -> pa.Table:
        return table.rename_columns([self.mapping.get(c, c) for c in table.column_names])


def _slices(table: pa.Table, size: int | None) -> Iterable[tuple[int, pa.Table]]:
    if not size or table.num_rows <= size:
        yield 0, table
        return
    for start in range(0, table.num_rows, size):
        yield start, table.slice(start, size)


@dataclass(eq=False)
class MapBatches(Op):
    fn: Any
    batch_size: int | None = None
    batch_format: str | None = "default"
    compute: TaskPoolStrategy | ActorPoolStrategy = field(default_factory=TaskPoolStrategy)
    fn_args: tuple = ()
    fn_kwargs: dict[str, Any] = field(default_factory=dict)
    fn_constructor_args: tuple = ()
    fn_constructor_kwargs: dict[str, Any] = field(default_factory=dict)
    zero_copy_batch: bool = True
    num_cpus: float | None = None
    memory: float | None = None  # bytes per worker: Ray's reservation; locally, an actor's limit
    user_code = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.name = f"MapBatches({function_name(self.fn)})"
        self.source_file = source_file(self.fn)
        plain = not (self.fn_args or self.fn_kwargs)
        self.row_filter = (
            row_filter(self.fn) if plain and self.batch_format in ("default", "pandas") else None
        )

    @property
    def is_actor(self) -> bool:
        return isinstance(self.compute, ActorPoolStrategy)

    def columns_out(self, columns: Columns) -> Columns:
        return columns if self.row_filter is not None else None

    def columns_needed(self, required: set[str] | None, columns_in: Columns) -> set[str] | None:
        if self.row_filter is None or required is None:
            return None
        return required | filter_columns(self.row_filter)

    def callable(self, state: dict[str, Any], where: Where) -> Callable:
        if not isinstance(self.fn, type):
            return self.fn
        instance = state.get(self.uid)
        if instance is None:  # one instance per worker, made on its first batch
            instance = _call_user(
                f"{self.name} constructor",
                replace(where, text="constructing the class"),
                self.fn,
                *self.fn_constructor_args,
                **self.fn_constructor_kwargs,
            )
            state[self.uid] = instance
        return instance

    def apply(self, table: pa.Table, where: Where, state: dict[str, Any]) -> pa.Table:
        where = replace(where, source=self.source_file)
        if self.row_filter is not None and self.batch_format == "default":
            kept = apply_filter(self.row_filter, table)
            if kept is not None:
                return kept
        fn = self.callable(state, where)
        out = []
        for start, piece in _slices(table, self.batch_size):
            batch = to_batch(piece, self.batch_format)
            if not self.zero_copy_batch and self.batch_format is None:
                batch = pa.concat_tables([batch]).combine_chunks()
            here = replace(where, text=_rows(where, start, piece.num_rows, table.num_rows))
            result = _call_user(self.name, here, fn, batch, *self.fn_args, **self.fn_kwargs)
            if inspect.isgenerator(result):
                out.extend(keep_input_types(from_batch(r, self.name), piece.schema) for r in result)
            else:
                out.append(keep_input_types(from_batch(result, self.name), piece.schema))
        return _concat(out, self.name)


def _rows(where: Where, start: int, rows: int, total: int) -> str:
    if start == 0 and rows == total:
        return where.text
    return f"the batch of rows {start}-{start + rows - 1} within {where.text}"


def _concat(tables: list[pa.Table], operation: str) -> pa.Table:
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DatasetError(
            operation,
            f"returned batches whose columns differ: {exc}",
            "return the same columns, of the same types, for every batch",
        ) from None


@dataclass(eq=False)
class MapRows(Op):
    """map (one row to one row), flat_map (one row to a list of rows) or filter (keep the row
    when the function returns True)."""

    kind: str
    fn: Any
    fn_args: tuple = ()
    fn_kwargs: dict[str, Any] = field(default_factory=dict)
    fn_constructor_args: tuple = ()
    fn_constructor_kwargs: dict[str, Any] = field(default_factory=dict)
    compute: TaskPoolStrategy | ActorPoolStrategy = field(default_factory=TaskPoolStrategy)
    user_code = True

    def __post_init__(self) -> None:
        super().__post_init__()
        label = {"map": "Map", "flat_map": "FlatMap", "filter": "Filter"}[self.kind]
        self.name = f"{label}({function_name(self.fn)})"
        self.source_file = source_file(self.fn)

    @property
    def is_actor(self) -> bool:
        return isinstance(self.compute, ActorPoolStrategy)

    def columns_out(self, columns: Columns) -> Columns:
        return columns if self.kind == "filter" else None

    def apply(self, table: pa.Table, where: Where, state: dict[str, Any]) -> pa.Table:
        where = replace(where, source=self.source_file)
        fn = MapBatches.callable(self, state, where)  # type: ignore[arg-type]
        rows = table.to_pylist()
        if self.kind == "filter":
            keep = []
            for i, row in enumerate(rows):
                here = replace(where, text=f"row {i} of the block read from {where.text}")
                verdict = _call_user(self.name, here, fn, row)
                if not isinstance(verdict, bool | np.bool_):
                    raise DatasetError(
                        self.name,
                        f"returned {type(verdict).__name__} ({verdict!r}) for {here.text}, "
                        "not True or False",
                        "return a bool: True keeps the row, False drops it",
                    )
                keep.append(bool(verdict))
            return table.filter(pa.array(keep, pa.bool_())) if rows else table
        out: list[Any] = []
        for i, row in enumerate(rows):
            here = replace(where, text=f"row {i} of the block read from {where.text}")
            result = _call_user(self.name, here, fn, row, *self.fn_args, **self.fn_kwargs)
            if self.kind == "map":
                out.append(result)
            else:
                if not isinstance(result, Iterable) or isinstance(result, Mapping):
                    raise DatasetError(
                        self.name,
                        f"returned {type(result).__name__}, not a list of rows",
                        "return a list of dicts",
                    )
                out.extend(itertools.chain(result))
        return table_of_rows(out, self.name)


def apply_chain(table: pa.Table, ops: list[Op], where: Where, state: dict[str, Any]) -> pa.Table:
    """Run `ops` on one block. Consecutive row filters on the default batch (see
    `rowfilters`) are combined into one mask, so the block is copied once, not per filter."""
    i = 0
    while i < len(ops):
        op = ops[i]
        if (
            isinstance(op, MapBatches)
            and op.row_filter is not None
            and op.batch_format == "default"
        ):
            exprs = [op.row_filter]
            j = i + 1
            while (
                j < len(ops)
                and isinstance(ops[j], MapBatches)
                and ops[j].row_filter is not None  # type: ignore[attr-defined]
                and ops[j].batch_format == "default"  # type: ignore[attr-defined]
            ):
                exprs.append(ops[j].row_filter)  # type: ignore[attr-defined]
                j += 1
            kept = apply_filters(exprs, table)
            if kept is not None:
                table = kept
                i = j
                continue
        table = op.apply(table, where, state)
        i += 1
    return table
