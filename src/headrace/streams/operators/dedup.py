"""Dedup: drop records whose key was already seen within a time-to-live.

Rule, applied in arrival order (within a batch too): a record is a duplicate when its key is
held and its time is before the key's expiry; otherwise it is kept and the key's expiry becomes
`time + ttl`. Duplicates do not extend the expiry, so a key that keeps arriving is let through
once per `ttl`. Time is read from `time_column` (event or ingest time, never the wall clock),
so a replay makes the same decisions.

Keys whose expiry is at or before the newest time seen so far are pruned; an out-of-order record
older than that is compared only with the keys still held.

Keys live in a vectorised open-addressing hash table (numpy arrays, linear probing), so a batch
costs time in proportion to its own size, not to the number of keys held. A single integer,
timestamp or duration key is stored exactly; other keys (strings, floats, dates, composites) as
two independent 64-bit polars hashes (128 bits: the chance that two of a billion distinct keys
collide is about 1e-21). polars hashes are stable only within one polars version, so a snapshot
carries a fingerprint of the hash function and `restore` refuses state hashed by another one.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl
import pyarrow as pa

from headrace.errors import StreamError
from headrace.streams.operators.base import (
    Duration,
    Emit,
    as_table,
    check_config,
    check_fingerprint,
    decode_dictionaries,
    duration_micros,
    hash_fingerprint,
    meta_table,
    read_meta,
    require_columns,
    subject,
    time_micros,
)

_EMPTY = np.iinfo(np.int64).min  # expiry of a free slot
_DEAD = _EMPTY + 1  # expiry of an occupied slot whose key is not held (yet)
_NO_TIME = _EMPTY
_MIN_CAPACITY = 1024
_SEEDS = (0x5EED_0001, 0x5EED_0002)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection on uint64 that spreads integer keys over slots."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class _KeyTable:
    """Open addressing with linear probing over parallel numpy arrays; every call is batched."""

    def __init__(self, capacity: int = _MIN_CAPACITY) -> None:
        self.h1 = np.zeros(capacity, np.uint64)
        self.h2 = np.zeros(capacity, np.uint64)
        self.expiry = np.full(capacity, _EMPTY, np.int64)
        # scratch for insert(); kept because fresh pages cost a page fault on first touch
        self.owner = np.zeros(capacity, np.int32)
        self.used = 0

    @property
    def capacity(self) -> int:
        return len(self.expiry)

    def locate(self, h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
        """The slot of each key, adding the keys not in the table (as not held)."""
        mask = self.capacity - 1
        slots = np.empty(len(h1), np.int64)
        todo = np.arange(len(h1))
        cur = (h1 & np.uint64(mask)).astype(np.int64)
        while todo.size:
            empty = self.expiry[cur] == _EMPTY
            done = ~empty & (self.h1[cur] == h1) & (self.h2[cur] == h2)
            slots[todo[done]] = cur[done]
            free = np.flatnonzero(empty)
            if free.size:
                # several keys may claim one free slot: exactly one write stays, and the
                # others look at the slot again next round (it may now hold their own key)
                self.owner[cur[free]] = free
                won = free[self.owner[cur[free]] == free]
                at = cur[won]
                self.h1[at], self.h2[at], self.expiry[at] = h1[won], h2[won], _DEAD
                slots[todo[won]] = at
                done[won] = True
                self.used += len(won)
            step = ~(empty | done)  # the slot holds another key: probe the next one
            cur = np.where(step, (cur + 1) & mask, cur)
            more = ~done
            todo, cur, h1, h2 = todo[more], cur[more], h1[more], h2[more]
        return slots

    def held(self, after: int) -> np.ndarray:
        """Slots whose key is held: expiry later than `after`."""
        return np.flatnonzero(self.expiry > max(after, _DEAD))

    @classmethod
    def build(cls, h1: np.ndarray, h2: np.ndarray, expiry: np.ndarray, room: int) -> _KeyTable:
        """A table holding these keys, with `room` more at a load of at most a quarter."""
        need = 4 * (len(h1) + room)
        table = cls(max(_MIN_CAPACITY, 1 << int(need - 1).bit_length()))
        if len(h1):
            table.expiry[table.locate(h1, h2)] = expiry
        return table


class Dedup:
    """Drop records whose key was seen within `ttl`, measured on `time_column`."""

    def __init__(
        self,
        key: str | list[str],
        ttl: Duration,
        time_column: str = "_ingest_time",
        *,
        name: str = "dedup",
    ) -> None:
        self.name = name
        self.keys = [key] if isinstance(key, str) else list(key)
        if not self.keys or not all(isinstance(k, str) for k in self.keys):
            raise StreamError(
                subject(name), f"key must be a column name or a list of them, not {key!r}",
                "pass key='id' or key=['source', 'id']",
            )  # fmt: skip
        self.ttl = duration_micros(ttl, "ttl", name, positive=True)
        self.time_column = time_column
        self.dropped_count = 0
        self._table = _KeyTable()
        self._clock = _NO_TIME  # newest time seen, in microseconds
        self._mode: str | None = None  # "exact" (one integer key) or "hashed"
        self._schema: pa.Schema | None = None

    @property
    def watermark(self) -> datetime | None:
        return None

    @property
    def held_keys(self) -> int:
        """How many keys are held now (not yet expired)."""
        return len(self._table.held(self._clock))

    def process(self, batch: pa.Table) -> Emit:
        table = as_table(batch, self.name)
        require_columns(table, [*self.keys, self.time_column], self.name)
        self._schema = table.schema
        if table.num_rows == 0:
            return Emit(table)
        times, valid = time_micros(table, self.time_column, self.name)
        if valid is not None:
            raise StreamError(
                subject(self.name),
                f"{int((~valid).sum())} records have no value in time column "
                f"{self.time_column!r}, so their expiry cannot be computed",
                "fill the column upstream (e.g. with the ingest time) or dedup on _ingest_time",
            )
        h1, h2 = self._hash(table)
        keep = self._decide(times, h1, h2)
        self._clock = max(self._clock, int(times.max()))
        self.dropped_count += int(len(keep) - keep.sum())
        return Emit(table.filter(pa.array(keep)))

    def flush(self) -> Emit:
        schema = self._schema if self._schema is not None else pa.schema([])
        return Emit(schema.empty_table())

    def snapshot(self) -> dict[str, pa.Table]:
        held = self._table.held(self._clock)
        keys = pa.table(
            {
                "h1": pa.array(self._table.h1[held], pa.uint64()),
                "h2": pa.array(self._table.h2[held], pa.uint64()),
                "expiry": pa.array(self._table.expiry[held], pa.int64()),
            }
        )
        meta = meta_table(
            config=self._config(),
            mode=self._mode,
            clock=None if self._clock == _NO_TIME else self._clock,
            dropped_count=self.dropped_count,
            hash_fingerprint=hash_fingerprint(),
        )
        return {"meta": meta, "keys": keys}

    def restore(self, state: dict[str, pa.Table]) -> None:
        meta = read_meta(state, self.name)
        check_config(meta, self._config(), self.name)
        keys = state.get("keys")
        if keys is None or keys.column_names != ["h1", "h2", "expiry"]:
            raise StreamError(
                subject(self.name),
                "the state to restore has no 'keys' table with columns h1, h2, expiry",
                "restore a dict produced by Dedup.snapshot()",
            )
        if meta["mode"] == "hashed" and keys.num_rows:
            check_fingerprint(meta, self.name)
        self._table = _KeyTable.build(
            keys.column("h1").to_numpy(),
            keys.column("h2").to_numpy(),
            keys.column("expiry").to_numpy(),
            room=0,
        )
        self._mode = meta["mode"]
        self._clock = _NO_TIME if meta["clock"] is None else int(meta["clock"])
        self.dropped_count = int(meta["dropped_count"])

    def _config(self) -> str:
        return f"Dedup(key={self.keys}, ttl_us={self.ttl}, time_column={self.time_column!r})"

    def _hash(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """Two uint64 words per record that identify its key."""
        first = table.column(self.keys[0]).type
        integral = pa.types.is_integer(first) or pa.types.is_timestamp(first)
        exact = len(self.keys) == 1 and (integral or pa.types.is_duration(first))
        mode = "exact" if exact else "hashed"
        if self._mode not in (None, mode):
            raise StreamError(
                subject(self.name),
                f"key column {self.keys[0]!r} changed type to {first} between batches",
                "keep the key columns' types the same across the stream (cast upstream)",
            )
        self._mode = mode
        if exact:
            column = table.column(self.keys[0])
            width = pa.uint64() if pa.types.is_unsigned_integer(first) else pa.int64()
            values = column.cast(width).fill_null(0).to_numpy().view(np.uint64)
            nulls = column.is_null().to_numpy(zero_copy_only=False).astype(np.uint64)
            # a null key is its own value: word two tells it from the integer 0
            return _mix(values), nulls
        frame = pl.from_arrow(decode_dictionaries(table.select(self.keys)))
        if len(self.keys) == 1:
            series = frame.to_series()
            return series.hash(_SEEDS[0]).to_numpy(), series.hash(_SEEDS[1]).to_numpy()
        return frame.hash_rows(_SEEDS[0]).to_numpy(), frame.hash_rows(_SEEDS[1]).to_numpy()

    def _decide(self, times: np.ndarray, h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
        """Which records to keep; updates the held keys. Vectorised in rounds, see below."""
        table = self._reserve(len(times))
        # Visit records in the order of their home slots (stable, so a key's records keep their
        # arrival order): probes then walk the table forwards instead of jumping at random.
        # A 16-bit radix sort is enough for that; the second sort, by final slot, is nearly
        # sorted already and makes each key's records adjacent.
        shift = np.uint64(max(0, table.capacity.bit_length() - 1 - 16))
        home = ((h1 & np.uint64(table.capacity - 1)) >> shift).astype(np.uint16)
        order = np.argsort(home, kind="stable")
        slots = table.locate(h1[order], h2[order])
        by_slot = np.argsort(slots, kind="stable")
        order, slots = order[by_slot], slots[by_slot]
        times = times[order]
        expiry = table.expiry
        stale = slots[expiry[slots] <= self._clock]
        expiry[stale] = _DEAD  # pruned keys are not held, even before a rebuild drops them
        # Each round drops the undecided records still before their key's expiry and keeps
        # the first of the rest per key, which moves that key's expiry forward. Usually one
        # round decides everything; a key kept k times in one batch needs k rounds.
        keep = np.zeros(len(times), bool)
        todo = np.arange(len(times))
        while todo.size:
            todo = todo[times[todo] >= expiry[slots[todo]]]
            if not todo.size:
                break
            key = slots[todo]
            first = np.empty(len(todo), bool)
            first[0] = True
            np.not_equal(key[1:], key[:-1], out=first[1:])
            kept = todo[first]
            keep[kept] = True
            expiry[slots[kept]] = times[kept] + self.ttl
            todo = todo[~first]
        in_arrival_order = np.empty_like(keep)
        in_arrival_order[order] = keep
        return in_arrival_order

    def _reserve(self, incoming: int) -> _KeyTable:
        """The table, rebuilt without expired keys when `incoming` new keys would overload it."""
        table = self._table
        if 2 * (table.used + incoming) > table.capacity:
            held = table.held(self._clock)
            table = _KeyTable.build(
                table.h1[held], table.h2[held], table.expiry[held], room=incoming
            )
            self._table = table
        return table
