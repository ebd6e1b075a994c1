"""The Ray engine: a Dataset's plan run by Ray Data (`ray.data`) on a Ray cluster.

Selected with `engine = "ray"` (a local Ray started on first use, or the cluster that
`RAY_ADDRESS` names) or `engine = "ray://head:10001"` (`DataContext.engine`, the
`HEADRACE_DATA_ENGINE` variable or `data_engine` in headrace.toml). The plan is the one the
local engine runs, node for node:

- reads: one Ray task per fragment (a Parquet row group, a text file, an in-memory table),
  through the same readers as the local engine, so hive partitions, schema checks and errors
  are the same;
- per-block operations: `map_batches` on Arrow batches calling the operation's own `apply`
  (the user's function sees the same batch format as on the local engine); actor-pool
  `map_batches` become Ray actor pools with the same `(min, max)` sizes;
- sort, limit, union, random_shuffle, repartition and aggregations: Ray Data's own.

Order is preserved (`preserve_order`), as on the local engine. Writes stream the blocks back
to this process and write them through the same all-or-nothing target as the local engine, so
a failed write leaves nothing behind; the target must be reachable from here (a bucket path,
`s3://` or a shared folder). Sorts follow Ray's rules: rows with equal keys may come in
another order than on the local engine (Ray's sort is not stable).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from headrace.data.aggregation import merge_aggregates, partial_aggregates
from headrace.data.engine import Engine, ExecutionStats
from headrace.data.errors import DatasetError
from headrace.data.ops import MapBatches, MapRows, Op, Where
from headrace.data.plan import (
    Agg,
    Aggregate,
    Limit,
    MapOp,
    Node,
    RandomShuffle,
    Read,
    Repartition,
    Sort,
    Union,
    metadata_count,
    optimize,
)
from headrace.data.sinks import WriteTarget
from headrace.data.sources import Fragment, Source

# per worker process: what operations keep between blocks (a class's one instance)
_STATE: dict[str, Any] = {}


class _ReadFragments:
    """A Ray task body: read the fragments whose numbers arrive in the batch."""

    def __init__(self, source: Source, fragments: list[Fragment], columns: list[str] | None):
        self.source, self.fragments, self.columns = source, fragments, columns

    def __call__(self, batch: pa.Table) -> pa.Table:
        tables = [
            self.source.read(self.fragments[i], self.columns)
            for i in batch.column("fragment").to_pylist()
        ]
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


class _ApplyOp:
    """A Ray task body: one operation over one Arrow batch."""

    def __init__(self, op: Op) -> None:
        self.op = op

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.op.apply(batch, Where("a block on Ray"), _STATE)


class _Partial:
    """A Ray task body: one block's partial aggregates."""

    def __init__(self, keys: list[str], aggs: tuple[Agg, ...]) -> None:
        self.keys, self.aggs = keys, aggs

    def __call__(self, batch: pa.Table) -> pa.Table:
        return partial_aggregates(batch, self.keys, self.aggs)


class _OpActor:
    """A Ray actor holding one instance of the user's class (made on its first batch)."""

    def __init__(self, op: Op) -> None:
        self.op, self.state = op, {}

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.op.apply(batch, Where("a block on a Ray actor"), self.state)


def _fragments_through(plan: Node) -> int | None:
    """The blocks a plan of one read and whole-block operations yields: one per fragment. A
    `map_batches` with a batch size lets Ray cut and merge blocks: then None (not known)."""
    while isinstance(plan, MapOp):
        if isinstance(plan.op, MapBatches) and plan.op.batch_size is not None:
            return None
        plan = plan.input
    return len(plan.source.fragments()) if isinstance(plan, Read) else None


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ModuleNotFoundError:
        raise DatasetError(
            "engine 'ray'", "Ray is not installed", "pip install 'headrace[ray]'"
        ) from None
    return ray


def _actor_cpus(min_size: int, max_size: int) -> dict[str, float]:
    """CPUs per actor when the user gave none: Ray's one each, unless the pool's minimum
    would take every CPU of the cluster; then a share that leaves room for the tasks feeding
    it (on 2 CPUs, `ActorPoolStrategy(2, 4)` at one CPU each waits forever for its reads)."""
    import ray

    # what is free, not the cluster's total: a Ray job's driver holds the CPUs it reserved
    total = float(ray.cluster_resources().get("CPU", 0.0))
    free = min(total, float(ray.available_resources().get("CPU", total)))
    if free and min_size >= free:
        return {"num_cpus": free / (max_size + 1)}
    return {}


class RayEngine(Engine):
    name = "ray"

    def __init__(self, context: Any, address: str | None = None) -> None:
        self.context = context
        self.address = address

    # -- the three entry points ------------------------------------------------------------

    def execute(self, plan: Node, stats: ExecutionStats) -> Iterator[pa.Table]:
        plan = optimize(plan)
        dataset = self._build(plan)
        # reads and per-block operations keep one block per fragment (preserve_order)
        stage = stats.stage("ray.data", _fragments_through(plan))
        try:
            for block in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                stage.tasks += 1
                stage.rows += block.num_rows
                yield block
        finally:
            stats.seconds = stage.seconds = time.perf_counter() - stats.started

    def count(self, plan: Node, stats: ExecutionStats) -> int:
        known = metadata_count(plan)
        if known is not None:
            return known
        return self._build(optimize(plan)).count()

    def write(self, plan: Node, target: WriteTarget, stats: ExecutionStats) -> list[str]:
        if target.skip:
            return []
        op = target.begin()
        try:
            stats.rows_out = 0
            for task, block in enumerate(self.execute(plan, stats)):
                op.apply(block, Where(f"block {task} from Ray", task=task), {})
                stats.rows_out += block.num_rows
            return target.commit()
        except BaseException:
            target.abort()
            raise

    # -- the plan as a ray.data.Dataset ------------------------------------------------------

    def _start(self) -> Any:
        ray = _ray()
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, ignore_reinit_error=True, log_to_driver=True)
            elif os.environ.get("RAY_ADDRESS"):  # a named cluster, or a Ray job's own
                ray.init(ignore_reinit_error=True)
            else:  # RAY_ADDRESS, when set, names a running cluster; else a local Ray
                ray.init(
                    num_cpus=self.context.num_cpus,
                    include_dashboard=False,
                    ignore_reinit_error=True,
                )
        data_context = ray.data.DataContext.get_current()
        data_context.execution_options.preserve_order = True
        shown = bool(self.context.enable_progress_bars) and sys.stderr.isatty()
        data_context.enable_progress_bars = shown
        data_context.enable_auto_log_stats = False
        return ray

    def _build(self, node: Node) -> Any:
        ray = self._start()
        return self._dataset(ray, node)

    def _dataset(self, ray: Any, node: Node) -> Any:
        if isinstance(node, Read):
            return self._read(ray, node)
        if isinstance(node, MapOp):
            return self._map(self._dataset(ray, node.input), node.op)
        if isinstance(node, Sort):
            return self._dataset(ray, node.input).sort(
                list(node.keys), descending=list(node.descending)
            )
        if isinstance(node, Limit):
            return self._dataset(ray, node.input).limit(node.n)
        if isinstance(node, Union):
            first, *rest = (self._dataset(ray, child) for child in node.inputs)
            return first.union(*rest) if rest else first
        if isinstance(node, RandomShuffle):
            return self._dataset(ray, node.input).random_shuffle(seed=node.seed)
        if isinstance(node, Repartition):
            return self._dataset(ray, node.input).repartition(node.num_blocks)
        if isinstance(node, Aggregate):
            return self._aggregate(ray, node)
        raise DatasetError(
            f"plan node {node.label()}", "the Ray engine cannot run it", "use engine='local'"
        )

    def _read(self, ray: Any, node: Read) -> Any:
        fragments = node.source.fragments()
        columns = list(node.columns) if node.columns is not None else None
        if not fragments:
            schema = node.source.schema()
            if columns is not None:
                schema = pa.schema([schema.field(c) for c in columns])
            return ray.data.from_arrow(schema.empty_table())
        numbers = ray.data.from_items(
            [{"fragment": i} for i in range(len(fragments))], override_num_blocks=len(fragments)
        )
        return numbers.map_batches(
            _ReadFragments(node.source, fragments, columns),
            batch_size=1,
            batch_format="pyarrow",
        )

    def _map(self, dataset: Any, op: Op) -> Any:
        batch_size = op.batch_size if isinstance(op, MapBatches) else None
        options: dict[str, Any] = {"batch_size": batch_size, "batch_format": "pyarrow"}
        num_cpus = getattr(op, "num_cpus", None)
        if num_cpus is not None:
            options["num_cpus"] = num_cpus
        memory = getattr(op, "memory", None)
        if memory:
            options["memory"] = memory
        if isinstance(op, MapBatches | MapRows) and op.is_actor:
            pool = op.compute
            if num_cpus is None:
                options.update(_actor_cpus(pool.min_size, pool.max_size))
            return dataset.map_batches(
                _OpActor,
                fn_constructor_args=(op,),
                compute=_ray().data.ActorPoolStrategy(
                    min_size=pool.min_size, max_size=pool.max_size
                ),
                **options,
            )
        return dataset.map_batches(_ApplyOp(op), **options)

    def _aggregate(self, ray: Any, node: Aggregate) -> Any:
        # each block folded to partial results by a Ray task, merged here: the same partials
        # and merge as the local engine, so the same output (names, types, nulls, order)
        keys = list(node.keys)
        partials = self._dataset(ray, node.input).map_batches(
            _Partial(keys, node.aggs), batch_size=None, batch_format="pyarrow"
        )
        blocks = list(partials.iter_batches(batch_size=None, batch_format="pyarrow"))
        return ray.data.from_arrow(merge_aggregates(blocks, keys, node.aggs, final=True))
