"""Runs one partition of a pipeline, one checkpointed micro-batch at a time.

A step: plan the batch's offset range in the ledger (unless a crash left a plan to replay), read
it from the log, run the operators, hand the output to the sinks (idempotent under the batch
number), then commit offset, operator and sink state and counters in one ledger transaction.
Operators are deterministic and their state is restored from the last commit, so a replayed
batch yields exactly what the interrupted one did: results are exactly once across `kill -9`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from headrace.errors import StreamError
from headrace.ledger import Ledger
from headrace.ledger.checkpoints import (
    Checkpoint,
    StageCounts,
    commit_batch,
    load_checkpoint,
    plan_batch,
)
from headrace.streams.log import decode_batch as bytes_to_table
from headrace.streams.log import encode_batch as table_to_bytes
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
        self._written: dict[str, bytes] = {}
        self._checkpoint: Checkpoint | None = None
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
        self._written = dict(checkpoint.state)
        self._built = []
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
                # slots are "<stage>/<name>": stage names may hold "/", state names do not
                state = {
                    slot.rpartition("/")[2]: bytes_to_table(data)
                    for slot, data in checkpoint.state.items()
                    if slot.rpartition("/")[0] == prefix
                }
                if state:
                    target.restore(state)
        self.status.offset = checkpoint.offset
        self.status.watermark = checkpoint.watermark
        self.status.records = checkpoint.records
        self.status.late = checkpoint.late

    def reset(self) -> None:
        """Forget in-memory state; the next step reopens from the last commit (after a failure,
        operators and sinks may hold half of a batch that will be replayed)."""
        self._checkpoint = None

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
        log_end = self.log.end_offset(self.partition)
        self.status.log_end = log_end
        if end is None:
            earliest = self.log.start_offset(self.partition)
            if start < earliest:
                raise StreamError(
                    f"pipeline {self.pipeline.name!r} partition {self.partition}",
                    f"its next offset {start} was removed by the retention of stream "
                    f"{self.pipeline.stream!r} (earliest kept: {earliest})",
                    "raise the stream's retention, or reset the pipeline with "
                    f"`headrace streams reset {self.pipeline.name}`",
                )
            end = min(log_end, start + self.pipeline.batch_size)
            if end <= start:
                return 0
            with self.ledger.begin() as conn:
                plan_batch(conn, self.pipeline.name, self.partition, seq, start, end)
        elif checkpoint.planned_flush:  # a crash interrupted a flush: finish it
            self._process(None, seq, end, flushing=checkpoint.planned_flush)
            return 0
        table = self.log.read(self.partition, start, end - start)
        if table is not None and table.num_rows != end - start:
            raise StreamError(
                f"pipeline {self.pipeline.name!r} partition {self.partition}",
                f"the log returned {table.num_rows} records for offsets [{start}, {end})",
                "check the stream's retention; the log must keep planned records",
            )
        self._process(table, seq, end, flushing=NO_FLUSH)
        return end - start

    def flush(self) -> None:
        """End of input: close every open window and write every buffer (a checkpointed batch)."""
        self._flush(FLUSH_ALL)

    def drain(self) -> None:
        """Shutdown: write the sinks' buffers (the archive's), leave windows open for later."""
        self._flush(FLUSH_SINKS)

    def _flush(self, mode: int) -> None:
        if self._checkpoint is None:
            self.open()
        self.run_until_caught_up()
        checkpoint = self._checkpoint
        assert checkpoint is not None
        seq = checkpoint.seq + 1
        with self.ledger.begin() as conn:
            plan_batch(
                conn, self.pipeline.name, self.partition, seq, checkpoint.offset,
                checkpoint.offset, mode,
            )  # fmt: skip
        self._process(None, seq, checkpoint.offset, flushing=mode)

    def run_until_caught_up(self, *, max_batches: int | None = None) -> int:
        total = batches = 0
        while max_batches is None or batches < max_batches:
            n = self.step()
            if not n:
                break
            total += n
            batches += 1
        return total

    def _process(self, table: pa.Table | None, seq: int, end: int, *, flushing: int) -> None:
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
                count.bytes_in = current.nbytes
            if built.stage.kind == "sink":
                if current is not None:
                    _call(built, "write", current, batch)
                if flushing:  # sinks flush in both modes
                    _call(built, "flush", batch)
                if current is not None:
                    count.records_out, count.bytes_out = current.num_rows, current.nbytes
                continue
            outputs, lates = [], []
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
                late_total += late.num_rows
                if built.late is not None:
                    _call(built, "write", late, batch, target=built.late)
            if built.late is not None and flushing:
                _call(built, "flush", batch, target=built.late)
            if current is not None:
                count.records_out, count.bytes_out = current.num_rows, current.nbytes
        state = self._changed_state()
        watermark = self._watermark()
        with self.ledger.begin() as conn:
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
                log_end=self.status.log_end,
                records=read,
                late=late_total,
                state=state,
                counts=counts,
            )
        for slot, data in state.items():
            if data is None:
                self._written.pop(slot, None)
            else:
                self._written[slot] = data
        checkpoint.seq = seq
        checkpoint.offset = end
        checkpoint.planned_seq = seq
        checkpoint.planned_end = end
        checkpoint.planned_flush = 0
        checkpoint.watermark = watermark
        status = self.status
        status.offset, status.watermark = end, watermark
        status.records += read
        status.late += late_total
        status.batches += 1
        if self.on_batch is not None:
            self.on_batch(self, counts)

    def _changed_state(self) -> dict[str, bytes | None]:
        current: dict[str, bytes] = {}
        for built in self._built:
            for prefix, target in (
                (built.stage.name, built.obj),
                (f"{built.stage.name}#late", built.late),
            ):
                if target is None:
                    continue
                for name, table in target.snapshot().items():
                    if "/" in name:
                        raise StreamError(
                            f"stage {built.stage.name!r}",
                            f"state name {name!r} contains '/'",
                            "name state without '/'",
                        )
                    current[f"{prefix}/{name}"] = table_to_bytes(table)
        changed: dict[str, bytes | None] = {
            slot: data for slot, data in current.items() if self._written.get(slot) != data
        }
        for slot in self._written:
            if slot not in current:
                changed[slot] = None
        return changed

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
