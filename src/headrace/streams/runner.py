"""Runs one partition of a pipeline, one checkpointed micro-batch at a time.

A step: take the batch's offset range as planned in the ledger (by the commit of the batch
before, or by a crash's interrupted batch; else plan it now in a transaction of its own), read
it from the log, run the operators, hand the output to the sinks (idempotent under the batch
number), then commit offset, operator and sink state and counters in one ledger transaction,
which also plans the next batch when the log already holds records after this one. A plan is
thus always durable before any sink sees its batch. Operators are deterministic and their state
is restored from the last commit, so a replayed batch yields exactly what the interrupted one
did: results are exactly once across `kill -9`.

State is written as it changed: operators with `changes()` give their keyed tables as deltas
(`streams.changelog`), other slots are written whole when their bytes changed. Deltas are folded
into new bases in the background (`streams.compaction`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection

from headrace.errors import StreamError
from headrace.ledger import Ledger
from headrace.ledger.checkpoints import (
    Checkpoint,
    StageCounts,
    commit_batch,
    load_checkpoint,
    plan_batch,
)
from headrace.ledger.wal import WalCheckpoints
from headrace.streams.changelog import (
    base_seq,
    bundle,
    by_slot,
    decode_state,
    encode_base,
    encode_delta,
    encode_state,
    restore_slot,
)
from headrace.streams.compaction import Compactor
from headrace.streams.operators.base import Delta
from headrace.streams.operators.windows import LATE_END, LATE_REASON, LATE_START
from headrace.streams.pipeline import Pipeline, Stage
from headrace.streams.sinks import BatchRef, SinkContext

log = logging.getLogger("headrace.streams")

NO_FLUSH, FLUSH_SINKS, FLUSH_ALL = 0, 1, 2  # stored in the plan, so a replay flushes alike


@dataclass
class RunnerStatus:
    pipeline: str
    partition: int
    offset: int = 0
    log_end: int = 0
    watermark: float | None = None
    records: int = 0
    late: int = 0
    batches: int = 0
    last_error: str | None = None

    @property
    def lag(self) -> int:
        return max(0, self.log_end - self.offset)


@dataclass
class _Built:
    stage: Stage
    obj: Any
    late: Any


class PartitionRunner:
    def __init__(
        self,
        pipeline: Pipeline,
        partition: int,
        *,
        log: Any,
        ledger: Ledger,
        context: SinkContext,
    ) -> None:
        self.pipeline = pipeline
        self.partition = partition
        self.log = log
        self.ledger = ledger
        self.context = context
        self.status = RunnerStatus(pipeline.name, partition)
        self._built: list[_Built] = []
        self._targets: list[tuple[str, Any]] = []  # (slot prefix, operator or sink)
        self._written: dict[str, bytes] = {}  # whole slots as last committed
        self._checkpoint: Checkpoint | None = None
        self._log_end_at = float("-inf")  # when status.log_end was last asked of the log
        # a ledger connection held while catching up: checking one out of the pool for each
        # batch's transaction costs as much as a small batch's commit itself
        self._conn: Connection | None = None
        self.compactor = Compactor(ledger, pipeline.name, partition)
        # the held connection's log checkpoints, in the background (SQLite ledgers)
        self._wal = WalCheckpoints.for_ledger(ledger)
        self.on_batch: Any = None  # called with the StageCounts of each committed batch

    # -- opening --------------------------------------------------------------------------------

    def open(self) -> None:
        """Load the last checkpoint and restore every operator and sink from it."""
        with self.ledger.reader.connect() as conn:
            checkpoint = load_checkpoint(conn, self.pipeline.name, self.partition)
        if checkpoint.seq == 0 and checkpoint.pending_plan is None:
            start = self.log.start_offset(self.partition)
            if self.pipeline.start == "latest":
                start = self.log.end_offset(self.partition)
            checkpoint.offset = max(checkpoint.offset, start)
        self._checkpoint = checkpoint
        # keyed slots (with deltas, or a base that says from which batch it is valid): the
        # base with its later deltas applied; other slots are whole
        keyed = by_slot(checkpoint.changes)
        tables, self._written = {}, {}
        for slot, data in checkpoint.state.items():
            table = decode_state(data)
            if slot in keyed or base_seq(table):
                keyed.setdefault(slot, [])
            else:
                tables[slot], self._written[slot] = table, data
        for slot, deltas in keyed.items():
            tables[slot] = restore_slot(checkpoint.state.get(slot), deltas)
        self._built, self._targets = [], []
        for stage in self.pipeline.stages:
            obj, late = stage.build()
            if stage.kind == "sink":
                obj.bind(self.context)
            if late is not None:
                late.bind(self.context)
            self._built.append(_Built(stage, obj, late))
            for prefix, target in ((stage.name, obj), (f"{stage.name}#late", late)):
                if target is None:
                    continue
                self._targets.append((prefix, target))
                # slots are "<stage>/<name>": stage names may hold "/", state names do not
                state = {
                    slot.rpartition("/")[2]: table
                    for slot, table in tables.items()
                    if slot.rpartition("/")[0] == prefix
                }
                if state:
                    target.restore(state)
        self.compactor.loaded(checkpoint)
        checkpoint.state, checkpoint.changes = {}, []  # restored; no need to hold the bytes
        self.status.offset = checkpoint.offset
        self.status.watermark = checkpoint.watermark
        self.status.records = checkpoint.records
        self.status.late = checkpoint.late

    def reset(self) -> None:
        """Forget in-memory state; the next step reopens from the last commit (after a failure,
        operators and sinks may hold half of a batch that will be replayed)."""
        self._checkpoint = None

    def compact(self) -> int:
        """Fold every keyed slot's deltas into its base now (as the background compaction does
        when they grow); returns how many slots were compacted."""
        if self._checkpoint is None:
            self.open()
        assert self._checkpoint is not None
        return self.compactor.compact(self._checkpoint.seq)

    def close(self) -> None:
        """Wait for a background compaction and checkpoint to finish (the ledger may be closed
        after)."""
        self.compactor.wait()
        if self._wal is not None:
            self._wal.wait()

    def stage(self, name: str, *, late: bool = False) -> Any:
        """This partition's own copy of a stage's operator or sink (or its late sink)."""
        for built in self._built:
            if built.stage.name == name:
                return built.late if late else built.obj
        raise StreamError(
            f"pipeline {self.pipeline.name!r}",
            f"has no stage {name!r} (stages: {', '.join(self.pipeline.stage_names)})",
            "use one of the stage names",
        )

    # -- running --------------------------------------------------------------------------------

    def step(self) -> int:
        """Process one micro-batch if there are records; returns how many were read."""
        if self._checkpoint is None:
            self.open()
        checkpoint = self._checkpoint
        assert checkpoint is not None
        seq = checkpoint.seq + 1
        start = checkpoint.offset
        end = checkpoint.pending_plan
        if end is None:
            log_end, self._log_end_at = self.log.end_offset(self.partition), time.monotonic()
            self.status.log_end = log_end
            self._check_retention(start)
            end = min(log_end, start + self.pipeline.batch_size)
            if end <= start:
                return 0
            with self._begin() as conn:
                plan_batch(conn, self.pipeline.name, self.partition, seq, start, end)
        elif checkpoint.planned_flush:  # a crash interrupted a flush: finish it
            self._process(None, seq, end, flushing=checkpoint.planned_flush)
            return 0
        table = self.log.read(self.partition, start, end - start)
        if table is not None and table.num_rows != end - start:
            self._check_retention(start)
            raise StreamError(
                f"pipeline {self.pipeline.name!r} partition {self.partition}",
                f"the log returned {table.num_rows} records for offsets [{start}, {end})",
                "check the stream's retention; the log must keep planned records",
            )
        self._process(table, seq, end, flushing=NO_FLUSH)
        return end - start

    def _check_retention(self, start: int) -> None:
        earliest = self.log.start_offset(self.partition)
        if start < earliest:
            raise StreamError(
                f"pipeline {self.pipeline.name!r} partition {self.partition}",
                f"its next offset {start} was removed by the retention of stream "
                f"{self.pipeline.stream!r} (earliest kept: {earliest})",
                "raise the stream's retention, or reset the pipeline with "
                f"`headrace streams reset {self.pipeline.name}`",
            )

    def flush(self) -> None:
        """End of input: close every open window and write every buffer (a checkpointed batch)."""
        self._flush(FLUSH_ALL)

    def drain(self) -> None:
        """Shutdown: write the sinks' buffers (the archive's), leave windows open for later."""
        self._flush(FLUSH_SINKS)

    def _flush(self, mode: int) -> None:
        with self._holding():
            self._flush_held(mode)

    def _flush_held(self, mode: int) -> None:
        if self._checkpoint is None:
            self.open()
        self.run_until_caught_up()  # ends with no plan pending: the flush is planned next
        checkpoint = self._checkpoint
        assert checkpoint is not None
        seq = checkpoint.seq + 1
        with self._begin() as conn:
            plan_batch(
                conn, self.pipeline.name, self.partition, seq, checkpoint.offset,
                checkpoint.offset, mode,
            )  # fmt: skip
        self._process(None, seq, checkpoint.offset, flushing=mode)

    def run_until_caught_up(self, *, max_batches: int | None = None) -> int:
        total = batches = 0
        with self._holding():
            while max_batches is None or batches < max_batches:
                n = self.step()
                if not n:
                    break
                total += n
                batches += 1
        return total

    @contextlib.contextmanager
    def _holding(self) -> Iterator[None]:
        """Hold one ledger connection for the batches' transactions until the block ends
        (only then: a coordinator runs many partitions and the pool is small)."""
        if self._conn is not None:  # held already (a flush catches up first)
            yield
            return
        self._conn = self.ledger.engine.connect()
        if self._wal is not None:
            try:
                self._wal.hold(self._conn)
            except BaseException:
                self._release()
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        """Give the held connection back (it checkpoints on commit again first)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._wal is not None:
            self._wal.release(conn)
        with contextlib.suppress(Exception):
            conn.close()

    @contextlib.contextmanager
    def _begin(self) -> Iterator[Connection]:
        """A transaction on the held connection, or on one of the pool's if none is held. A
        failed one lets the held connection go (it may be broken): the pool's are used next."""
        conn = self._conn
        if conn is None:
            with self.ledger.begin() as own:
                yield own
            return
        try:
            with conn.begin():
                yield conn
        except BaseException:
            self._release()
            raise
        if self._wal is not None:
            self._wal.committed(conn)

    def _process(self, table: pa.Table | None, seq: int, end: int, *, flushing: int) -> None:
        try:
            self._run_batch(table, seq, end, flushing)
        except BaseException:
            # operators and sinks may hold part of the batch: reopen from the last commit
            self._checkpoint = None
            raise

    def _run_batch(self, table: pa.Table | None, seq: int, end: int, flushing: int) -> None:
        checkpoint = self._checkpoint
        assert checkpoint is not None
        batch = BatchRef(self.pipeline.name, self.partition, seq)
        counts = [StageCounts("source")]
        read = table.num_rows if table is not None else 0
        counts[0].records_out = read
        counts[0].bytes_out = table.nbytes if table is not None else 0
        current = table
        late_total = 0
        for built in self._built:
            count = StageCounts(built.stage.name)
            counts.append(count)
            if current is not None:
                count.records_in = current.num_rows
                count.bytes_in = counts[-2].bytes_out  # what the stage before gave
            if built.stage.kind == "sink":
                if current is not None:
                    _call(built, "write", current, batch)
                if flushing:  # sinks flush in both modes
                    _call(built, "flush", batch)
                if current is not None:
                    count.records_out, count.bytes_out = current.num_rows, count.bytes_in
                continue
            outputs, lates = [], []
            given = current
            if current is not None and current.num_rows:
                emit = _call(built, "process", current)
                outputs.append(emit.main)
                lates.append(emit.late)
            if flushing == FLUSH_ALL:
                emit = _call(built, "flush")
                outputs.append(emit.main)
                lates.append(emit.late)
            current = _concat([o for o in outputs if o is not None])
            late = _concat([x for x in lates if x is not None and x.num_rows])
            if late is not None and late.num_rows:
                count.late = late.num_rows
                count.late_windows = _late_windows(late)
                late_total += late.num_rows
                if built.late is not None:
                    _call(built, "write", late, batch, target=built.late)
            if built.late is not None and flushing:
                _call(built, "flush", batch, target=built.late)
            if current is not None:
                # an operator that let the whole batch through returned it: no need to count
                # its bytes again (that costs a walk over its buffers)
                same = current is given
                size = count.bytes_in if same else current.nbytes
                count.records_out, count.bytes_out = current.num_rows, size
        state, bases, deltas = self._changed_state(seq)
        changes = bundle(deltas) if deltas else None
        watermark = self._watermark()
        log_end = self._log_end(end, flushing)
        next_end = None
        if not flushing and log_end > end:
            next_end = min(log_end, end + self.pipeline.batch_size)
        # new bases must not cross a compaction's commit of older ones (see Compactor)
        with self.compactor.bases_lock if bases else contextlib.nullcontext():
            with self._begin() as conn:
                for built in self._built:
                    if built.stage.kind == "sink":
                        built.obj.commit(conn, batch)
                    if built.late is not None:
                        built.late.commit(conn, batch)
                commit_batch(
                    conn,
                    self.pipeline.name,
                    self.partition,
                    seq=seq,
                    offset=end,
                    watermark=watermark,
                    log_end=log_end,
                    records=read,
                    late=late_total,
                    state={**state, **bases},
                    changes=changes,
                    counts=counts,
                    next_end=next_end,
                )
            if bases:
                self.compactor.bases_written(list(bases))
        for slot, data in state.items():
            if data is None:
                self._written.pop(slot, None)
            else:
                self._written[slot] = data
        checkpoint.seq = seq
        checkpoint.offset = end
        checkpoint.planned_seq = seq if next_end is None else seq + 1
        checkpoint.planned_end = end if next_end is None else next_end
        checkpoint.planned_flush = 0
        checkpoint.watermark = watermark
        status = self.status
        status.offset, status.watermark = end, watermark
        status.records += read
        status.late += late_total
        status.batches += 1
        if changes is not None:
            self.compactor.committed(seq, changes, list(deltas))
        if self.on_batch is not None:
            self.on_batch(self, counts)

    def _log_end(self, end: int, flushing: int) -> int:
        """The log's end offset as far as planning the batch after `end` needs it: asked of the
        log when what is known does not cover a whole next batch, or is a second old (for the
        lag shown); a catch-up thus asks once in many batches (the end only grows)."""
        known, now = self.status.log_end, time.monotonic()
        covered = known >= end + self.pipeline.batch_size and now - self._log_end_at < 1.0
        if flushing or not covered:
            known, self._log_end_at = self.log.end_offset(self.partition), now
            self.status.log_end = known
        return known

    def _changed_state(
        self, seq: int
    ) -> tuple[dict[str, bytes | None], dict[str, bytes], dict[str, bytes]]:
        """Whole slots whose bytes changed (None: the slot is gone), keyed slots rewritten
        whole (new bases, valid from batch `seq`) and keyed slots' deltas."""
        current: dict[str, bytes] = {}
        bases: dict[str, bytes] = {}
        deltas: dict[str, bytes] = {}
        keyed: list[str] = []
        for prefix, target in self._targets:
            changes = getattr(target, "changes", None)
            for name, value in (changes() if changes is not None else target.snapshot()).items():
                if "/" in name:
                    raise StreamError(
                        f"stage {prefix!r}", f"state name {name!r} contains '/'",
                        "name state without '/'",
                    )  # fmt: skip
                slot = f"{prefix}/{name}"
                if isinstance(value, Delta):
                    keyed.append(slot)
                    if value.reset:  # written in place: less than a changelog row as large
                        bases[slot] = encode_base(value.upserts, seq)
                    elif not value.empty:
                        deltas[slot] = encode_delta(value)
                else:
                    current[slot] = encode_state(value)
        changed: dict[str, bytes | None] = {
            slot: data for slot, data in current.items() if self._written.get(slot) != data
        }
        for slot in keyed:  # a slot written whole by an earlier version is now a base
            self._written.pop(slot, None)
        for slot in self._written:
            if slot not in current:
                changed[slot] = None
        return changed, bases, deltas

    def _watermark(self) -> float | None:
        marks = []
        for built in self._built:
            mark = getattr(built.obj, "watermark", None)
            if isinstance(mark, datetime):
                marks.append(mark.timestamp())
        if marks:
            return min(marks)
        return self._checkpoint.watermark if self._checkpoint else None


def _call(built: _Built, method: str, *args: Any, target: Any = None) -> Any:
    try:
        return getattr(built.obj if target is None else target, method)(*args)
    except StreamError:
        raise
    except Exception as exc:
        raise StreamError(
            f"stage {built.stage.name!r}",
            f"{method} failed: {type(exc).__name__}: {exc}",
            "fix the operator or its input; the batch is retried from its checkpoint",
        ) from exc


def _concat(tables: list[pa.Table]) -> pa.Table | None:
    tables = [t for t in tables if t is not None]
    if not tables:
        return None
    if len(tables) == 1:
        return tables[0]
    non_empty = [t for t in tables if t.num_rows] or tables[:1]
    return pa.concat_tables(non_empty, promote_options="permissive")


def _late_windows(late: pa.Table) -> dict[tuple[str, int, int], int]:
    """Late records counted by the window each missed: (reason, start, end) -> records, the
    bounds in epoch microseconds (0 for a record without an event time)."""
    names = set(late.column_names)
    if not {LATE_REASON, LATE_START, LATE_END} <= names:  # an operator of its own: no windows
        return {}

    def micros(column: str) -> pa.Array:
        values = late[column].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        return pc.fill_null(values, 0)

    keys = pa.table(
        {"r": late[LATE_REASON].cast(pa.string()), "s": micros(LATE_START), "e": micros(LATE_END)}
    )
    counted = keys.group_by(["r", "s", "e"]).aggregate([([], "count_all")])
    return {
        (r, s, e): n
        for r, s, e, n in zip(
            *(counted[c].to_pylist() for c in ("r", "s", "e", "count_all")), strict=True
        )
    }
