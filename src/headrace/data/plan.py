"""The lazy logical plan of a Dataset: a tree of nodes that an engine executes.

Nodes say what, not how: a read of a source, per-block operations (`MapOp` over an `Op`), and
the operations that need all their input before they yield (sort, shuffle, repartition,
aggregate) or that combine streams (limit, union). `optimize` pushes the columns the rest of
the plan needs down into the read, so a column dropped later is never read.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa

from headrace.data.ops import Columns, Op, Where
from headrace.data.sources import Source


@dataclass(frozen=True, eq=False)
class Node:
    def children(self) -> tuple[Node, ...]:
        return ()

    def label(self) -> str:
        return type(self).__name__


@dataclass(frozen=True, eq=False)
class Read(Node):
    source: Source
    columns: tuple[str, ...] | None = None
    prefilters: tuple[Any, ...] = ()
    """Row filters the source may apply while reading (a hint: the filter operations stay in
    the plan above, and applying a row filter twice keeps the same rows)."""

    def label(self) -> str:
        return self.source.name


@dataclass(frozen=True, eq=False)
class MapOp(Node):
    input: Node
    op: Op

    def children(self) -> tuple[Node, ...]:
        return (self.input,)

    def label(self) -> str:
        return self.op.name


@dataclass(frozen=True, eq=False)
class Sort(Node):
    input: Node
    keys: tuple[str, ...]
    descending: tuple[bool, ...]

    def children(self) -> tuple[Node, ...]:
        return (self.input,)


@dataclass(frozen=True, eq=False)
class Limit(Node):
    input: Node
    n: int

    def children(self) -> tuple[Node, ...]:
        return (self.input,)


@dataclass(frozen=True, eq=False)
class Union(Node):
    inputs: tuple[Node, ...]

    def children(self) -> tuple[Node, ...]:
        return self.inputs


@dataclass(frozen=True, eq=False)
class RandomShuffle(Node):
    input: Node
    seed: int | None = None

    def children(self) -> tuple[Node, ...]:
        return (self.input,)


@dataclass(frozen=True, eq=False)
class Repartition(Node):
    input: Node
    num_blocks: int

    def children(self) -> tuple[Node, ...]:
        return (self.input,)


@dataclass(frozen=True)
class Agg:
    """One aggregation: kind is count, sum, mean, min, max or std; `on` a column (None for
    count); `name` the output column (Ray's `sum(x)` by default)."""

    kind: str
    on: str | None = None
    name: str | None = None
    ignore_nulls: bool = True
    ddof: int = 1

    @property
    def output(self) -> str:
        return self.name or (f"{self.kind}({self.on or ''})")


@dataclass(frozen=True, eq=False)
class Aggregate(Node):
    input: Node
    keys: tuple[str, ...]
    aggs: tuple[Agg, ...] = field(default=())

    def children(self) -> tuple[Node, ...]:
        return (self.input,)


def columns_of(node: Node) -> Columns:
    """The output column names of a node, when known without running anything."""
    if isinstance(node, Read):
        return list(node.columns) if node.columns is not None else node.source.schema().names
    if isinstance(node, MapOp):
        return node.op.columns_out(columns_of(node.input))
    if isinstance(node, Union):
        return columns_of(node.inputs[0])
    if isinstance(node, Aggregate):
        return [*node.keys, *(a.output for a in node.aggs)]
    children = node.children()
    return columns_of(children[0]) if children else None


def _needed(node: Node, required: set[str] | None) -> Node:
    if isinstance(node, Read):
        if required is None:
            return node
        schema = node.source.schema()
        if not required & set(schema.names):
            # a block with no columns has no rows in Arrow: keep the cheapest column
            fixed = [f.name for f in schema if pa.types.is_primitive(f.type)]
            required = {(fixed or schema.names)[0]}
        return replace(node, columns=tuple(n for n in schema.names if n in required))
    if isinstance(node, MapOp):
        child_required = node.op.columns_needed(required, columns_of(node.input))
        return replace(node, input=_needed(node.input, child_required))
    if isinstance(node, Sort):
        inner = None if required is None else required | set(node.keys)
        return replace(node, input=_needed(node.input, inner))
    if isinstance(node, Limit | RandomShuffle | Repartition):
        return replace(node, input=_needed(node.input, required))  # type: ignore[call-arg]
    if isinstance(node, Aggregate):
        inner = set(node.keys) | {a.on for a in node.aggs if a.on}
        return replace(node, input=_needed(node.input, inner or None))
    if isinstance(node, Union):
        return replace(node, inputs=tuple(_needed(c, required) for c in node.inputs))
    return node


def _is_row_filter(node: Node) -> bool:
    return isinstance(node, MapOp) and getattr(node.op, "row_filter", None) is not None


def _sink(node: MapOp) -> Node:
    """Move the row filter `node` as far down as it keeps its meaning: before a sort (the
    same rows in the same, stable, order), before an element-wise add_column whose column it
    does not read and before column selections; into the read as a prefilter hint."""
    from headrace.data.ops import AddColumn, DropColumns, SelectColumns
    from headrace.data.rowfilters import columns_of as filter_columns

    child = node.input
    reads = filter_columns(node.op.row_filter)  # type: ignore[attr-defined]
    if isinstance(child, Sort):
        return replace(child, input=_sink(MapOp(child.input, node.op)))
    if _is_row_filter(child):  # row filters commute: sink past it, into the read
        return replace(child, input=_sink(MapOp(child.input, node.op)))  # type: ignore[attr-defined]
    if isinstance(child, MapOp):
        op = child.op
        movable = (
            (isinstance(op, AddColumn) and op.elementwise and op.column not in reads)
            or (isinstance(op, DropColumns) and not reads & set(op.columns))
            or (isinstance(op, SelectColumns) and reads <= set(op.columns))
        )
        if movable:
            return replace(child, input=_sink(MapOp(child.input, node.op)))
    if isinstance(child, Read):
        hint = (*child.prefilters, node.op.row_filter)  # type: ignore[attr-defined]
        return replace(node, input=replace(child, prefilters=hint))
    return node


def _push_filters(node: Node) -> Node:
    if isinstance(node, Read):
        return node
    if isinstance(node, Union):
        return replace(node, inputs=tuple(_push_filters(c) for c in node.inputs))
    node = replace(node, input=_push_filters(node.children()[0]))  # type: ignore[call-arg]
    if _is_row_filter(node):
        return _sink(node)  # type: ignore[arg-type]
    return node


def optimize(node: Node) -> Node:
    return _needed(_push_filters(node), None)


def describe(node: Node, indent: int = 0) -> str:
    lines = ["  " * indent + node.label()]
    for child in node.children():
        lines.append(describe(child, indent + 1))
    return "\n".join(lines)


def metadata_count(node: Node) -> int | None:
    """The number of rows, when the plan runs no user code and the source's metadata says."""
    if isinstance(node, Read):
        return node.source.num_rows()
    if isinstance(node, MapOp) and not node.op.user_code and node.op.name != "WriteFiles":
        return metadata_count(node.input)
    if isinstance(node, Sort | RandomShuffle | Repartition):
        return metadata_count(node.input)
    if isinstance(node, Limit):
        inner = metadata_count(node.input)
        return None if inner is None else min(inner, node.n)
    if isinstance(node, Union):
        counts = [metadata_count(c) for c in node.inputs]
        return None if any(c is None for c in counts) else sum(counts)  # type: ignore[misc]
    return None


def metadata_schema_node(node: Node) -> Any:
    """The read below a chain of column-only operations, or None."""
    while isinstance(node, MapOp | Sort | Limit | RandomShuffle | Repartition):
        if isinstance(node, MapOp) and node.op.user_code:
            return None
        node = node.children()[0]
    return node if isinstance(node, Read) else None


def metadata_schema(node: Node) -> pa.Schema | None:
    """The output schema when no user code runs between the read and `node`: the source's
    schema through the column operations, applied to an empty table."""
    if metadata_schema_node(node) is None:
        return None
    chain: list[Op] = []
    while not isinstance(node, Read):
        if isinstance(node, MapOp):
            chain.insert(0, node.op)
        node = node.children()[0]
    table = node.source.schema().empty_table()
    if node.columns is not None:
        table = table.select(list(node.columns))
    for op in chain:
        table = op.apply(table, Where("the schema"), {})
    return table.schema
