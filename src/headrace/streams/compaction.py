"""Compaction of a pipeline partition's keyed state: deltas folded into a new base.

Every batch adds a delta per keyed slot it changed (`streams.changelog`), so a restore reads the
slot's base and the deltas after it. To keep that bounded, a slot is compacted when its deltas
weigh as much as its base (a delta weighs its bytes plus `PER_DELTA` for its fixed cost to read
and apply), and at least `MIN_BYTES`: a restore then reads at most about twice the state, plus a
bounded number of deltas. Each compaction rewrites the base, so over time it writes at most
about twice the bytes the deltas did: its cost is linear in what changed, amortised.

Compaction runs in a background thread, reading with the ledger's reader and writing the new
base and deleting the deltas it folded in one transaction of its own (`checkpoints.compact_slot`),
never inside a batch's commit: batches keep committing deltas with later seqs meanwhile. The
folded state is read from the ledger, not from the operators, so it is exactly what a restore
would read; a crash mid-compaction leaves the old base and its deltas, which restore the same
state (applying deltas is associative).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from headrace.ledger import Ledger
from headrace.ledger.checkpoints import Checkpoint, compact_slot, read_slot
from headrace.streams.changelog import encode_table, merge

log = logging.getLogger("headrace.streams")

MIN_BYTES = 1 << 20
PER_DELTA = 4096


class Compactor:
    """Tracks the weight of each keyed slot's deltas and compacts the slots that are due."""

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
        self._lock = threading.Lock()
        self._base: dict[str, int] = {}  # slot -> bytes of its base
        self._deltas: dict[str, list[tuple[int, int]]] = {}  # slot -> [(seq, weight)]
        self._weight: dict[str, int] = {}  # slot -> total weight of its deltas
        self._thread: threading.Thread | None = None

    def loaded(self, checkpoint: Checkpoint) -> None:
        """The slots as the checkpoint holds them (after a restore)."""
        self.wait()
        with self._lock:
            # every slot's size: a keyed slot just compacted has a base and no deltas yet
            self._base = {slot: len(data) for slot, data in checkpoint.state.items()}
            self._deltas, self._weight = {}, {}
            for slot, deltas in checkpoint.changes.items():
                for seq, data in deltas:
                    self._add(slot, seq, len(data))

    def committed(self, seq: int, deltas: Mapping[str, bytes]) -> None:
        """Batch `seq` committed these deltas; start compacting the slots now due, if no
        compaction is running."""
        with self._lock:
            for slot, data in deltas.items():
                self._add(slot, seq, len(data))
            due = [
                slot
                for slot, weight in self._weight.items()
                if weight >= max(self.min_bytes, self._base.get(slot, 0))
            ]
        if due and (self._thread is None or not self._thread.is_alive()):
            self._thread = threading.Thread(
                target=self._run, args=(due, seq), name=f"headrace-compact-{self.pipeline}",
                daemon=True,
            )  # fmt: skip
            self._thread.start()

    def compact(self, upto: int) -> int:
        """Compact every slot with deltas up to batch `upto`, now; returns how many were."""
        self.wait()
        with self._lock:
            slots = [slot for slot, deltas in self._deltas.items() if deltas]
        return sum(self.compact_slot(slot, upto) for slot in slots)

    def wait(self) -> None:
        thread = self._thread
        if thread is not None:
            thread.join()

    def compact_slot(self, slot: str, upto: int) -> bool:
        with self.ledger.reader.connect() as conn:
            base, deltas = read_slot(conn, self.pipeline, self.partition, slot, upto)
        if not deltas:
            return False
        data = encode_table(merge(base, [d for _, d in deltas]))
        folded = [seq for seq, _ in deltas]
        with self.ledger.begin() as conn:
            done = compact_slot(conn, self.pipeline, self.partition, slot, folded, data)
        if done:
            with self._lock:
                self._base[slot] = len(data)
                kept = [(s, w) for s, w in self._deltas.get(slot, []) if s > folded[-1]]
                self._deltas[slot] = kept
                self._weight[slot] = sum(w for _, w in kept)
                self.compactions += 1
        return done

    def _add(self, slot: str, seq: int, size: int) -> None:
        weight = size + self.per_delta
        self._deltas.setdefault(slot, []).append((seq, weight))
        self._weight[slot] = self._weight.get(slot, 0) + weight

    def _run(self, slots: list[str], upto: int) -> None:
        for slot in slots:
            try:
                self.compact_slot(slot, upto)
            except Exception:  # the deltas stay and restore the same state; retried when due
                log.exception("compacting %s of pipeline %s failed", slot, self.pipeline)
