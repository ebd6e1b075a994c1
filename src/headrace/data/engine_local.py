"""The local engine: a streaming executor on Arrow, with user functions in worker processes.

A plan is cut into stages at the operations that need all their input (sort, shuffle,
repartition, aggregate) and at actor-pool map_batches. Within a stage the per-block
operations are fused: a worker reads a Parquet row group itself, runs the stage's operations
on it and hands the result back through shared memory. At most a few blocks per worker are in
flight, and results are yielded in input order, so memory stays bounded by the blocks in
flight, not the dataset. A stage without user code (column selection, renames) runs in this
process; reads there use pyarrow's threads, and Parquet/CSV writes of blocks already here (after
a sort, say) use a thread per CPU rather than a copy to a worker.

Sort, shuffle and repartition hold their input in memory up to `DataContext.sort_memory_bytes`;
past that the blocks go to Parquet files in a spill folder and DuckDB sorts them with that
memory limit and its own temp folder, streaming the result back. Aggregations fold each block
into partial results as it arrives.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from headrace.data import block_folders
from headrace.data.aggregation import merge_aggregates, partial_aggregates
from headrace.data.engine import Engine, ExecutionStats, StageStats
from headrace.data.errors import DatasetError, WorkerLost
from headrace.data.ops import MapBatches, MapRows, Op, Where, apply_chain
from headrace.data.plan import (
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
from headrace.data.progress import Progress
from headrace.data.sinks import WriteFiles, WriteTarget
from headrace.data.sources import Fragment, Source, TablesSource
from headrace.data.transport import discard_block, put_block, take_block
from headrace.data.workers import Pool, task_pool

_task_ids = itertools.count(1)


def _in_worker(op: Op) -> bool:
    return op.user_code or isinstance(op, WriteFiles)


def _threads_suffice(ops: list[Op]) -> bool:
    """Operations on blocks already in this process that run as well in its threads as in a
    worker: no user code, and writers whose encoding releases the GIL (Parquet and CSV; the
    JSON writer goes through pandas). Copying the blocks to a worker would only add work."""
    return not any(o.user_code for o in ops) and all(
        o.file_format in ("parquet", "csv") for o in ops if isinstance(o, WriteFiles)
    )


def _is_actor(op: Op) -> bool:
    return isinstance(op, MapBatches | MapRows) and op.is_actor


class LocalEngine(Engine):
    name = "local"

    def __init__(self, context: Any) -> None:
        self.context = context

    # -- the three entry points ------------------------------------------------------------

    def execute(self, plan: Node, stats: ExecutionStats) -> Iterator[pa.Table]:
        plan = optimize(plan)
        stats.progress = Progress(self.context.enable_progress_bars)
        try:
            yield from self._stream(plan, stats)
        finally:
            stats.progress.close()
            stats.seconds = time.perf_counter() - stats.started

    def count(self, plan: Node, stats: ExecutionStats) -> int:
        known = metadata_count(plan)
        if known is not None:
            return known
        return sum(block.num_rows for block in self.execute(plan, stats))

    def write(self, plan: Node, target: WriteTarget, stats: ExecutionStats) -> list[str]:
        if target.skip:
            return []
        op = target.begin()
        try:
            stats.rows_out = 0
            for written in self.execute(MapOp(plan, op), stats):
                stats.rows_out += _rows_in_files(written)
            return target.commit()
        except BaseException:
            target.abort()
            raise

    # -- stages ----------------------------------------------------------------------------

    def _stream(self, node: Node, stats: ExecutionStats) -> Iterator[pa.Table]:
        ops: list[Op] = []
        while isinstance(node, MapOp):
            ops.insert(0, node.op)
            node = node.input
        segments: list[list[Op]] = [[]]
        for op in ops:
            if _is_actor(op):
                segments.extend([[op], []])
            else:
                segments[-1].append(op)
        segments = [s for s in segments if s] or [[]]
        if isinstance(node, Read):
            first, rest = segments[0], segments[1:]
            fused = self._fused_actor_read(node, segments, stats)
            if fused is not None:
                blocks, rest = fused
            else:
                if _is_actor(first[0]) if first else False:
                    first, rest = [], segments
                blocks = self._read_stage(node, first, stats)
        else:
            rest = segments
            blocks = self._barrier(node, stats)
        for segment in rest:
            blocks = self._block_stage(blocks, segment, stats, _label(node))
        return blocks

    def _read_stage(self, node: Read, ops: list[Op], stats: ExecutionStats) -> Iterator[pa.Table]:
        source, columns = node.source, list(node.columns) if node.columns is not None else None
        prefilters = node.prefilters
        fragments = source.fragments()
        name = "->".join([source.name, *(o.name for o in ops)])
        if any(_in_worker(o) for o in ops) and not isinstance(source, TablesSource):
            pool = task_pool(self.context.num_cpus)
            inputs = (("fragment", f, f.describe(source)) for f in fragments)
            bar = stats.progress.stage(name, len(fragments))
            stage = stats.stage(name, len(fragments))
            return self._pool_stage(pool, source, (columns, prefilters), ops, inputs, stage, bar)
        if any(_in_worker(o) for o in ops):
            blocks = (source.read(f, columns) for f in fragments)
            return self._block_stage(blocks, ops, stats, source.name)
        stage = stats.stage(name, len(fragments))
        return self._driver_read(source, columns, prefilters, fragments, ops, stage)

    def _fused_actor_read(
        self, node: Read, segments: list[list[Op]], stats: ExecutionStats
    ) -> tuple[Iterator[pa.Table], list[list[Op]]] | None:
        """read -> map_batches(class): the actors read their own row groups, so the input
        columns never pass through this process (for batch inference, the bulk of the bytes:
        the features go from the file to the model, only the predictions come back). Taken
        when the operations before the actor have no user code (they would otherwise lose the
        task pool's parallelism) and there are enough row groups to keep the pool busy."""
        at = next((i for i, s in enumerate(segments) if s and _is_actor(s[0])), None)
        if at is None or at > 1 or isinstance(node.source, TablesSource):
            return None
        before = segments[0] if at == 1 else []
        if any(_in_worker(o) for o in before):
            return None
        actor = segments[at][0]
        fragments = node.source.fragments()
        strategy = actor.compute  # type: ignore[attr-defined]
        if len(fragments) < 2 * strategy.max_size:
            return None  # few row groups: batches from this process spread over the pool better
        ops = [*before, actor]
        name = "->".join([node.source.name, *(o.name for o in ops)])
        inputs = (("fragment", f, f.describe(node.source)) for f in fragments)
        bar = stats.progress.stage(name, len(fragments))
        reading = (list(node.columns) if node.columns is not None else None, node.prefilters)
        blocks = self._actor_stage(
            actor,
            ops,
            inputs,
            stats.stage(name, len(fragments)),
            bar,
            source=node.source,
            reading=reading,
        )
        return blocks, segments[at + 1 :]

    def _driver_read(
        self,
        source: Source,
        columns: list[str] | None,
        prefilters: tuple,
        fragments: list[Fragment],
        ops: list[Op],
        stage: StageStats,
    ) -> Iterator[pa.Table]:
        start = time.perf_counter()
        threads = max(1, min(4, self.context.num_cpus))
        with ThreadPoolExecutor(threads) as pool:
            futures: deque = deque()
            queue = iter(fragments)
            try:
                for fragment in itertools.islice(queue, threads):
                    futures.append(
                        (fragment, pool.submit(source.read, fragment, columns, prefilters))
                    )
                while futures:
                    fragment, future = futures.popleft()
                    table = future.result()
                    nxt = next(queue, None)
                    if nxt is not None:
                        futures.append((nxt, pool.submit(source.read, nxt, columns, prefilters)))
                    where = Where(fragment.describe(source), fragment.index)
                    table = apply_chain(table, ops, where, {})
                    stage.tasks += 1
                    stage.rows += table.num_rows
                    stage.seconds = time.perf_counter() - start
                    yield table
            finally:
                for _, future in futures:
                    future.cancel()

    def _block_stage(
        self, blocks: Iterator[pa.Table], ops: list[Op], stats: ExecutionStats, upstream: str
    ) -> Iterator[pa.Table]:
        name = "->".join(o.name for o in ops)
        if not any(_in_worker(o) for o in ops):
            return self._inline(blocks, ops, stats.stage(name), upstream)
        if _threads_suffice(ops):
            return self._threaded(blocks, ops, stats.stage(name), upstream)
        actor = next((o for o in ops if _is_actor(o)), None)
        first = ops[0]
        if isinstance(first, MapBatches) and first.batch_size:
            # whole batches of a few thousand rows per task, so that a pool spreads them
            per_task = _ACTOR_TASK_ROWS if actor is not None else _TASK_ROWS
            blocks = _rechunk(blocks, first.batch_size * max(1, per_task // first.batch_size))
        offsets = _Offsets(upstream)
        inputs = (("block", b, offsets.describe(b)) for b in blocks)
        if actor is None:
            pool = task_pool(self.context.num_cpus)
            bar = stats.progress.stage(name, None)
            return self._pool_stage(pool, None, None, ops, inputs, stats.stage(name), bar)
        bar = stats.progress.stage(name, None)
        return self._actor_stage(actor, ops, inputs, stats.stage(name), bar)

    def _inline(
        self, blocks: Iterator[pa.Table], ops: list[Op], stage: StageStats, upstream: str
    ) -> Iterator[pa.Table]:
        offsets = _Offsets(upstream)
        for i, block in enumerate(blocks):
            where = Where(offsets.describe(block), i)
            block = apply_chain(block, ops, where, {})
            stage.tasks += 1
            stage.rows += block.num_rows
            yield block

    def _threaded(
        self, blocks: Iterator[pa.Table], ops: list[Op], stage: StageStats, upstream: str
    ) -> Iterator[pa.Table]:
        """`ops` on the blocks in a thread per CPU, results in input order; the next block is
        produced (a sort's gather, say) while the threads encode the ones before it."""
        offsets = _Offsets(upstream)
        threads = max(1, self.context.num_cpus)
        start = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            futures: deque = deque()
            try:
                for i, block in enumerate(blocks):
                    where = Where(offsets.describe(block), i)
                    futures.append(pool.submit(apply_chain, block, ops, where, {}))
                    while len(futures) > threads or (futures and futures[0].done()):
                        yield self._threaded_result(futures.popleft(), stage, start)
                while futures:
                    yield self._threaded_result(futures.popleft(), stage, start)
            finally:
                for future in futures:
                    future.cancel()

    @staticmethod
    def _threaded_result(future: Any, stage: StageStats, start: float) -> pa.Table:
        table = future.result()
        stage.tasks += 1
        stage.rows += table.num_rows
        stage.seconds = time.perf_counter() - start
        return table

    def _actor_stage(
        self,
        actor: Op,
        ops: list[Op],
        inputs: Iterator,
        stage: StageStats,
        bar: Any,
        *,
        source: Source | None = None,
        reading: tuple | None = None,
    ) -> Iterator[pa.Table]:
        strategy = actor.compute  # type: ignore[attr-defined]
        pool = Pool(
            strategy.initial_size,
            max_size=strategy.max_size,
            per_worker=strategy.max_tasks_in_flight_per_actor,
            memory_limit=getattr(actor, "memory", None),
        )
        pool.min_size = strategy.min_size
        try:
            yield from self._pool_stage(
                pool, source, reading, ops, inputs, stage, bar, autoscale=True
            )
        finally:
            pool.close()

    def _pool_stage(
        self,
        pool: Pool,
        source: Source | None,
        columns: tuple | None,
        ops: list[Op],
        inputs: Iterator[tuple[str, Any, str]],
        stage: StageStats,
        bar: Any,
        *,
        autoscale: bool = False,
    ) -> Iterator[pa.Table]:
        limit = _task_limit(ops, self.context.num_cpus)
        import cloudpickle

        key = uuid.uuid4().hex
        try:
            blob = cloudpickle.dumps((source, columns, ops))
        except Exception as exc:
            names = ", ".join(o.name for o in ops)
            raise DatasetError(
                names,
                f"its function cannot be sent to a worker process: {type(exc).__name__}: {exc}",
                "use functions and classes that can be pickled (no open files, locks or "
                "connections captured; create those in a class's __init__)",
            ) from None
        pool.add_stage(key, blob)
        folder = block_folders.acquire()
        start = time.perf_counter()
        backlog: deque = deque()
        pending: dict[int, tuple[int, str]] = {}  # task id -> (sequence, description)
        ready: dict[int, Any] = {}
        next_out = 0
        sequence = 0
        exhausted = False
        window = max(4, pool.max_size * pool.per_worker * 2)
        try:
            while True:
                while not exhausted and len(backlog) + len(pending) + len(ready) < window:
                    item = next(inputs, None)
                    if item is None:
                        exhausted = True
                        break
                    kind, payload, where = item
                    if kind == "block":
                        payload = put_block(payload, folder)
                    backlog.append((sequence, kind, payload, where))
                    sequence += 1
                if autoscale and backlog and not pool.has_room() and pool.grow():
                    stage.workers = max(stage.workers, len(pool.workers))
                while backlog and pool.has_room() and len(pending) < limit:
                    seq, kind, payload, where = backlog.popleft()
                    task_id = next(_task_ids)
                    pool.submit(task_id, key, kind, payload, where, seq, folder)
                    pending[task_id] = (seq, where)
                stage.workers = max(stage.workers, len(pool.workers))
                if next_out in ready:
                    answer = ready.pop(next_out)
                    next_out += 1
                    table = take_block(answer.path)
                    stage.tasks += 1
                    stage.rows += table.num_rows
                    stage.seconds = time.perf_counter() - start
                    bar.advance(stage.rows)
                    yield table
                    continue
                if exhausted and not backlog and not pending:
                    return
                if autoscale and exhausted and not backlog:
                    pool.shrink_idle()
                for answer in pool.collect(set(pending)):
                    seq, where = pending.pop(answer.task_id)
                    if not answer.ok:
                        if isinstance(answer.error, WorkerLost):
                            raise _lost(answer.error, ops, where, autoscale) from None
                        raise answer.error  # type: ignore[misc]
                    ready[seq] = answer
        finally:
            pool.abandon(set(pending))
            for answer in ready.values():
                discard_block(answer.path)
            for _, kind, payload, _ in backlog:
                if kind == "block":
                    discard_block(payload)
            pool.drop_stage(key)
            block_folders.release()
            stage.seconds = time.perf_counter() - start

    # -- operations that need all their input ----------------------------------------------

    def _barrier(self, node: Node, stats: ExecutionStats) -> Iterator[pa.Table]:
        if isinstance(node, Union):
            return itertools.chain.from_iterable(self._stream(c, stats) for c in node.inputs)
        if isinstance(node, Limit):
            return self._limit(node, stats)
        if isinstance(node, Aggregate):
            return self._aggregate(node, stats)
        if isinstance(node, Sort | RandomShuffle | Repartition):
            return self._reorder(node, stats)
        raise DatasetError(_label(node), "is not an operation this engine runs", None)

    def _limit(self, node: Limit, stats: ExecutionStats) -> Iterator[pa.Table]:
        left = node.n
        if left <= 0:
            return
        if isinstance(node.input, Read) and left <= self.context.target_block_rows:
            # show()/take() of a read: the first rows only, not whole row groups
            head = node.input.source.head(left, list(node.input.columns or []) or None)
            if head is not None:
                yield head
                return
        upstream = self._stream(node.input, stats)
        try:
            for block in upstream:
                if block.num_rows >= left:
                    yield block.slice(0, left)
                    return
                left -= block.num_rows
                yield block
        finally:
            close = getattr(upstream, "close", None)
            if close is not None:
                close()

    def _collect(self, node: Node, stats: ExecutionStats) -> tuple[list[pa.Table], str | None]:
        """All blocks of `node`, in memory, or spilled to Parquet files in a folder."""
        blocks: list[pa.Table] = []
        held = 0
        spill: str | None = None
        written = 0
        for block in self._stream(node, stats):
            if spill is None:
                blocks.append(block)
                held += block.nbytes
                if held > self.context.sort_memory_bytes:
                    spill = tempfile.mkdtemp(
                        prefix="headrace-spill-", dir=self.context.spill_dir or None
                    )
                    for b in blocks:
                        _spill(b, spill, written)
                        written += 1
                    blocks = []
            else:
                _spill(block, spill, written)
                written += 1
        return blocks, spill

    def _reorder(self, node: Node, stats: ExecutionStats) -> Iterator[pa.Table]:
        blocks, spill = self._collect(node.children()[0], stats)
        stage = stats.stage(_label(node))
        start = time.perf_counter()
        try:
            if spill is not None:
                yield from self._reorder_spilled(node, spill, stage)
                return
            table = pa.concat_tables(blocks) if blocks else None
            blocks = []
            if table is None:
                return
            order: pa.Array | None = None  # rows are gathered part by part, as they are asked for
            if isinstance(node, Sort):
                order = _sort_order(table, node)
            elif isinstance(node, RandomShuffle):
                order = pa.array(np.random.default_rng(node.seed).permutation(table.num_rows))
            else:
                table = table.combine_chunks()
            parts = (
                node.num_blocks
                if isinstance(node, Repartition)
                else max(1, -(-table.num_rows // self.context.target_block_rows))
            )
            if not isinstance(node, Repartition):
                parts = max(parts, min(4 * self.context.num_cpus, -(-table.num_rows // 65536)))
            size = -(-table.num_rows // parts) if table.num_rows else 0
            if order is not None and table.num_columns:
                table = table.combine_chunks()  # one gather per part, not per input block
            stage.seconds = time.perf_counter() - start
            if not size:
                pieces: Iterator[pa.Table] = iter([table.slice(0, 0)] * parts)
            elif order is None:
                pieces = (table.slice(i * size, size) for i in range(parts))
            else:
                pieces = _gather(table, order, parts, size, self.context.num_cpus)
            for piece in pieces:
                stage.tasks += 1
                stage.rows += piece.num_rows
                stage.seconds = time.perf_counter() - start
                yield piece
        finally:
            if spill is not None:
                shutil.rmtree(spill, ignore_errors=True)

    def _reorder_spilled(self, node: Node, spill: str, stage: StageStats) -> Iterator[pa.Table]:
        import duckdb

        con = duckdb.connect()
        try:
            limit = max(64 << 20, self.context.sort_memory_bytes)
            con.execute(f"SET memory_limit = '{limit // (1 << 20)}MB'")
            # each DuckDB thread pins its own sort buffers: at 64 MB, two threads run out of
            # memory where one completes, so a thread per 256 MB of the limit
            threads = max(1, min(self.context.num_cpus, limit // (256 << 20)))
            con.execute(f"SET threads = {threads}")
            con.execute(f"SET temp_directory = '{os.path.join(spill, 'duckdb')}'")
            con.execute("SET preserve_insertion_order = true")
            files = os.path.join(spill, "*.parquet").replace("'", "''")
            query = f"SELECT * FROM read_parquet('{files}')"
            if isinstance(node, Sort):
                keys = ", ".join(
                    f'"{k}" {"DESC" if d else "ASC"} NULLS LAST'
                    for k, d in zip(node.keys, node.descending, strict=True)
                )
                query += f" ORDER BY {keys}"
            elif isinstance(node, RandomShuffle):
                seed = 0.5 if node.seed is None else (node.seed % 1000) / 1000
                con.execute(f"SELECT setseed({seed})")
                query += " ORDER BY random()"
            result = con.sql(query)
            rows = self.context.target_block_rows
            reader = (
                result.to_arrow_reader(rows)
                if hasattr(result, "to_arrow_reader")
                else result.fetch_record_batch(rows)  # duckdb 1.x
            )
            for batch in reader:
                piece = pa.Table.from_batches([batch])
                stage.tasks += 1
                stage.rows += piece.num_rows
                yield piece
        finally:
            con.close()

    def _aggregate(self, node: Aggregate, stats: ExecutionStats) -> Iterator[pa.Table]:
        partials: list[pa.Table] = []
        keys = list(node.keys)
        stage = stats.stage(_label(node))
        for block in self._stream(node.input, stats):
            partials.append(partial_aggregates(block, keys, node.aggs))
            if len(partials) > 64:
                partials = [merge_aggregates(partials, keys, node.aggs, final=False)]
        result = merge_aggregates(partials, keys, node.aggs, final=True)
        stage.tasks += 1
        stage.rows += result.num_rows
        yield result


# -- helpers ---------------------------------------------------------------------------------


def _lost(error: WorkerLost, ops: list[Op], where: str, actor: bool) -> WorkerLost:
    """A worker that died, said in the user's terms: which operation (the class, for an actor
    pool), which input, and what to change."""
    names = "->".join(o.name for o in ops)
    who = f"an actor of {names}" if actor else f"a worker running {names}"
    holds = " (each actor holds one instance of the class, its model, plus the batch)"
    if not error.memory:  # it ended itself: a smaller batch or more memory would not help
        lost = WorkerLost(who, f"{error.subject} {error.reason}, on {where}", error.fix)
        lost.memory = False
        return lost
    return WorkerLost(
        who,
        f"{error.subject} {error.reason}, on {where}",
        "pass a smaller batch_size= so that each batch fits"
        + (holds if actor else "")
        + ", or give it more memory: memory= in bytes per worker (the limit it is held to), "
        "fewer workers at once (concurrency=), or a machine with more RAM",
    )


def _label(node: Node) -> str:
    if isinstance(node, Sort):
        return f"Sort({', '.join(node.keys)})"
    return node.label()


def _task_limit(ops: list[Op], cpus: int) -> int:
    """How many tasks of a stage may run at once: `concurrency=n` of its map_batches, and as
    many as `num_cpus=` each fit in the CPUs the engine has (Ray's scheduling by resources)."""
    limit = 1 << 30
    for op in ops:
        size = getattr(getattr(op, "compute", None), "size", None)
        if isinstance(op, MapBatches | MapRows) and not op.is_actor and size:
            limit = min(limit, size)
        need = getattr(op, "num_cpus", None)
        if need:
            limit = min(limit, max(1, int(cpus // need)))
    return limit


_TASK_ROWS = 4096
_ACTOR_TASK_ROWS = 256  # actors often hold models: spread small batches over the whole pool


def _rechunk(blocks: Iterator[pa.Table], rows: int) -> Iterator[pa.Table]:
    for block in blocks:
        if block.num_rows <= rows:
            yield block
            continue
        for start in range(0, block.num_rows, rows):
            yield block.slice(start, rows)


class _Offsets:
    """Descriptions of the blocks a stage gets from the one before it, for error messages."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.first = 0

    def describe(self, block: pa.Table) -> str:
        first = self.first
        self.first += block.num_rows
        return f"rows {first}-{self.first - 1} of the output of {self.upstream}"


def _spill(block: pa.Table, folder: str, index: int) -> None:
    import pyarrow.parquet as pq

    pq.write_table(block, os.path.join(folder, f"{index:08d}.parquet"), compression="lz4")


def _sort_order(table: pa.Table, node: Sort) -> pa.Array:
    missing = [k for k in node.keys if k not in table.column_names]
    if missing:
        raise DatasetError(
            f"sort({', '.join(node.keys)})",
            f"no column(s) {missing} (columns: {table.column_names})",
            "sort by existing columns",
        )
    order = [
        (k, "descending" if d else "ascending", "at_end")
        for k, d in zip(node.keys, node.descending, strict=True)
    ]
    return pc.sort_indices(table.select(list(node.keys)), sort_keys=order)


def _rows_in_files(written: pa.Table) -> int:
    """Rows a write stage's output block says it wrote (WriteFiles: one row per file)."""
    if "num_rows" not in written.column_names:
        return 0
    return int(pc.sum(written.column("num_rows")).as_py() or 0)


def _gather(
    table: pa.Table, order: pa.Array, parts: int, size: int, threads: int
) -> Iterator[pa.Table]:
    """The rows of `table` in `order`, `size` at a time, gathered in a thread per CPU (Arrow's
    take releases the GIL) a few parts ahead of the one yielded: the gather of a sorted
    dataset's parts overlaps with what the consumer does with the ones before (a write encodes
    them in its own threads), instead of running one part at a time in this thread."""
    threads = max(1, threads)
    with ThreadPoolExecutor(threads, thread_name_prefix="headrace-gather") as pool:
        futures: deque = deque()
        try:
            for i in range(parts):
                futures.append(pool.submit(table.take, order.slice(i * size, size)))
                if len(futures) > threads:
                    yield futures.popleft().result()
            while futures:
                yield futures.popleft().result()
        finally:
            for future in futures:
                future.cancel()


def _stderr_is_terminal() -> bool:
    return sys.stderr.isatty()
