"""Compaction of a pipeline partition's keyed state: the changelog folded into new bases.

Every batch that changes keyed state adds a changelog row (its deltas, `streams.changelog`), so
a restore reads the keyed slots' bases and the rows after them. To keep that bounded, the rows
are folded into new bases when they weigh as much as the bases (a row weighs its bytes plus
`PER_DELTA` for its fixed cost to read and apply), and at least `MIN_BYTES`: a restore then
reads at most about twice the state, plus a bounded number of rows. Each compaction rewrites the
bases of the slots the rows touched, so over time it writes at most about twice the bytes the
rows did: its cost is linear in what changed, amortised.

Compaction runs in a background thread, reading with the ledger's reader, and writing the new
bases and deleting the rows it folded in one transaction of its own
(`checkpoints.compact_changes`), never inside a batch's commit: batches keep committing rows
with later seqs meanwhile. The folded state is read from the ledger, not from the operators, so
it is exactly what a restore would read; a crash mid-compaction leaves the old bases and their
rows, which restore the same state (applying deltas is associative).
"""

from __future__ import annotations

import logging
import threading

from headrace.ledger import Ledger
from headrace.ledger.checkpoints import Checkpoint, compact_changes, read_bases, read_changes
from headrace.streams.changelog import base_seq, by_slot, encode_base, restore_slot

log = logging.getLogger("headrace.streams")

MIN_BYTES = 8 << 20
PER_DELTA = 4096


class Compactor:
    """Tracks the weight of a partition's changelog and compacts it when due."""

    def __init__(
        self,
        ledger: Ledger,
        pipeline: str,
        partition: int,
        *,
        min_bytes: int = MIN_BYTES,
        per_delta: int = PER_DELTA,
    ) -> None:
        self.ledger = ledger
        self.pipeline = pipeline
        self.partition = partition
        self.min_bytes = min_bytes
        self.per_delta = per_delta
        self.compactions = 0
        # held by the runner around a commit that writes bases, and here around the commit of
        # new bases: a base the runner wrote after this read its slot is not overwritten
        self.bases_lock = threading.Lock()
        self._versions: dict[str, int] = {}
        self._lock = threading.Lock()
        self._base: dict[str, int] = {}  # slot -> bytes of its base
        self._rows: list[tuple[int, int]] = []  # (seq, weight) of the changelog rows
        self._weight = 0
        self._thread: threading.Thread | None = None

    def loaded(self, checkpoint: Checkpoint) -> None:
        """The changelog as the checkpoint holds it (after a restore)."""
        self.wait()
        with self._lock:
            # every slot's size: which are keyed bases is not known here (a keyed slot just
            # compacted has no rows yet), and whole slots are small
            self._base = {slot: len(data) for slot, data in checkpoint.state.items()}
            self._rows = [(seq, len(data) + self.per_delta) for seq, data in checkpoint.changes]
            self._weight = sum(w for _, w in self._rows)

    def committed(self, seq: int, row: bytes, slots: list[str]) -> None:
        """Batch `seq` committed this changelog row; start a compaction if one is due and none
        is running."""
        with self._lock:
            for slot in slots:
                self._base.setdefault(slot, 0)
            weight = len(row) + self.per_delta
            self._rows.append((seq, weight))
            self._weight += weight
            due = self._weight >= max(self.min_bytes, sum(self._base.values()))
        if due and (self._thread is None or not self._thread.is_alive()):
            self._thread = threading.Thread(
                target=self._run, args=(seq,), name=f"headrace-compact-{self.pipeline}",
                daemon=True,
            )  # fmt: skip
            self._thread.start()

    def bases_written(self, slots: list[str]) -> None:
        """The runner committed new bases of these slots (call it holding `bases_lock`)."""
        for slot in slots:
            self._versions[slot] = self._versions.get(slot, 0) + 1

    def compact(self, upto: int) -> int:
        """Fold the changelog up to batch `upto` into new bases, now; returns how many slots
        got a new base."""
        self.wait()
        return self._compact(upto)

    def wait(self) -> None:
        thread = self._thread
        if thread is not None:
            thread.join()

    def _compact(self, upto: int) -> int:
        with self.bases_lock:
            versions = dict(self._versions)
        with self.ledger.reader.connect() as conn:
            rows = read_changes(conn, self.pipeline, self.partition, upto)
            if not rows:
                return 0
            deltas = by_slot(rows)
            bases = read_bases(conn, self.pipeline, self.partition, list(deltas))
        new = fold(rows, deltas, bases)
        folded = [seq for seq, _ in rows]
        with self.bases_lock, self.ledger.begin() as conn:
            new = {s: d for s, d in new.items() if self._versions.get(s, 0) == versions.get(s, 0)}
            if not compact_changes(conn, self.pipeline, self.partition, folded, new):
                return 0
        with self._lock:
            self._base.update({slot: len(data) for slot, data in new.items()})
            self._rows = [(s, w) for s, w in self._rows if s > folded[-1]]
            self._weight = sum(w for _, w in self._rows)
            self.compactions += 1
        return len(new)

    def _run(self, upto: int) -> None:
        try:
            self._compact(upto)
        except Exception:  # the rows stay and restore the same state; retried when due
            log.exception("compacting the state of pipeline %s failed", self.pipeline)


def fold(
    rows: list[tuple[int, bytes]],
    deltas: dict[str, list[tuple[int, bytes]]],
    bases: dict[str, bytes],
) -> dict[str, bytes]:
    """The new bases of the slots that changelog `rows` (with their `deltas` by slot) change,
    valid from the last of the rows' batches."""
    upto = rows[-1][0]
    new = {}
    for slot, changes in deltas.items():
        base = bases.get(slot)
        if changes[-1][0] > base_seq(base):  # else the base was rewritten whole since
            new[slot] = encode_base(restore_slot(base, changes), upto)
    return new
