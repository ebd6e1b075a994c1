"""Dedup: drop records whose key was already seen within a time-to-live.

Rule, applied in arrival order (within a batch too): a record is a duplicate when its key is
held and its time is before the key's expiry; otherwise it is kept and the key's expiry becomes
`time + ttl`. Duplicates do not extend the expiry, so a key that keeps arriving is let through
once per `ttl`. Time is read from `time_column` (event or ingest time, never the wall clock),
so a replay makes the same decisions.

A record sees a clock: the newest time of the records before it (earlier batches included;
a running maximum inside a batch). Keys whose expiry is at or before that clock are forgotten,
so an out-of-order record older than them is compared only with the keys still held. Every
decision depends on the records before it only, so dedup keeps the same records whatever the
batch cuts.

Keys live in a vectorised open-addressing hash table (numpy arrays, linear probing), so a batch
costs time in proportion to its own size, not to the number of keys held. A single integer,
timestamp or duration key is stored exactly; other keys (strings, floats, dates, composites) as
two independent 64-bit hashes (128 bits: the chance that two of a billion distinct keys collide
is about 1e-21) from headrace's stable hash (`headrace.streams.hashing`), which is the same in
every version, process and machine. A snapshot carries the hash's fingerprint; state written by
earlier headrace versions, hashed with polars, is refused with the way out (see
`base.check_fingerprint`).

With numba installed (`headrace[fast]`) a batch is one compiled loop that applies the rule
record by record (`dedup_kernel`). Without it, a batch is handled in the order of its keys'
home slots (one sort), which makes probing read
and write the table in order and puts the records of one key among neighbours with the same
home slot: records whose key appears once in the batch (nearly all of them) are decided together
in one step; only the keys seen several times go through rounds that follow the rule record by
record. Probing goes in rounds over all the keys still probing until at most 128 are left;
those finish one by one (a round costs as much for a few keys as for hundreds).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pyarrow as pa

from headrace.errors import StreamError
from headrace.streams.hashing import FINGERPRINT, hash64_rows_seeds, hash64_seeds
from headrace.streams.operators import dedup_kernel
from headrace.streams.operators.base import (
    Delta,
    Duration,
    Emit,
    Meta,
    as_table,
    check_config,
    check_fingerprint,
    duration_micros,
    meta_table,
    read_meta,
    require_columns,
    subject,
    time_micros,
)

_FREE = np.uint64(0x9E37_79B9_7F4A_7C15)  # first word of a free slot; no key has it
_EMPTY = np.iinfo(np.int64).min  # expiry of a free slot, or of a key that is not held
_NO_TIME = _EMPTY
_MIN_CAPACITY = 1024
_ROUNDS = 16  # rounds for the keys seen several times in a batch; the rest one by one
_FEW = 128  # keys still probing: from here on one by one (see `_KeyTable._probe_each`)
_SEEDS = (0x5EED_0001, 0x5EED_0002)
_NO_KEYS = pa.table(
    {
        "h1": pa.array([], pa.uint64()),
        "h2": pa.array([], pa.uint64()),
        "expiry": pa.array([], pa.int64()),
    }
)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection on uint64 that spreads integer keys over slots."""
    x = x ^ (x >> np.uint64(30))
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _number_words(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A floating-point key's words: a whole number has the words of the same integer key
    (1.0 is 1), any other value its bits with 4 in word two; word two's 1 marks a null."""
    values = column.cast(pa.float64()).fill_null(0.0).to_numpy()
    values = np.where(np.isnan(values), np.nan, values + 0.0)  # one NaN, -0.0 is 0.0
    whole = (np.floor(values) == values) & (np.abs(values) < 2.0**63)
    ints = np.where(whole, values, 0.0).astype(np.int64)
    words = np.where(whole, ints.view(np.uint64), values.view(np.uint64))
    h2 = np.where(whole, np.uint64(0), np.uint64(4))
    if column.null_count:
        h2 |= column.is_null().to_numpy(zero_copy_only=False).astype(np.uint64)
    return _mix(words), h2


def _clear_of_free(h1: np.ndarray, h2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The key words, with a first word of `_FREE` (which marks free slots) moved to
    `_FREE ^ 1` and bit 2 of the second word flipped to tell it apart from the key that has
    `_FREE ^ 1` already (an exact key's second word is 0 or 1)."""
    free = h1 == _FREE
    if not free.any():
        return h1, h2
    return np.where(free, _FREE ^ np.uint64(1), h1), h2 ^ (free.astype(np.uint64) << np.uint64(1))


class _KeyTable:
    """Open addressing with linear probing over parallel numpy arrays; every call is batched."""

    def __init__(
        self, capacity: int = _MIN_CAPACITY, kernels: dedup_kernel.Kernels | None = None
    ) -> None:
        self.kernels = kernels  # compiled loops for inserting (None: numpy)
        self.h1 = np.full(capacity, _FREE, np.uint64)
        self.h2 = np.zeros(capacity, np.uint64)
        self.expiry = np.full(capacity, _EMPTY, np.int64)
        # scratch for Dedup._repeats; kept because fresh pages cost a page fault on first touch
        self.owner = np.zeros(capacity, np.int64)
        self.used = 0
        # Whether some key has a non-zero second word. Until then every h2 is zero (free slots
        # too), so probes compare only h1: exact integer keys without nulls never read h2.
        self.wide = False

    @property
    def capacity(self) -> int:
        return len(self.expiry)

    @staticmethod
    def capacity_for(keys: int) -> int:
        """Room for `keys` at a load of at most a quarter (a power of two)."""
        return max(_MIN_CAPACITY, 1 << int(4 * keys - 1).bit_length())

    def home_order(self, h1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The records sorted by home slot (ties in arrival order), and their home slots."""
        home = (h1 & np.uint64(self.capacity - 1)).view(np.int64)
        bits = max(1, (len(h1) - 1).bit_length())
        if self.capacity.bit_length() + bits > 63:
            order = np.argsort(home, kind="stable")
            return order, home[order]
        # numpy's vectorised sort of int64 is several times faster than a stable argsort
        np.left_shift(home, bits, out=home)
        home |= np.arange(len(h1))
        home.sort()
        order = home & ((1 << bits) - 1)
        np.right_shift(home, bits, out=home)
        return order, home

    def locate(self, h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
        """The slot of each key, adding the keys not in the table (as not held).

        No key may have `_FREE` as first word (`_clear_of_free` moves it).
        """
        order, home = self.home_order(h1)
        slots = np.empty(len(h1), np.int64)
        slots[order] = self.probe(home, h1[order], h2[order])
        return slots

    def probe(self, cur: np.ndarray, h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
        """`locate` for keys sorted by their home slot `cur`.

        Probing keeps the keys sorted by the slot they look at (a key moves one slot on, and
        the keys looking at one slot all move or all stay), so the table is read in order and
        the keys claiming one free slot are neighbours: the first wins it, the others look at
        it again next round (it may now hold their own key).
        """
        if not self.wide and h2.any():
            self.wide = True
        mask = self.capacity - 1
        slots = cur.copy()
        todo = None  # positions of the keys still probing; None: all of them
        while True:
            there = self.h1[cur]
            empty = there == _FREE
            found = there == h1
            if self.wide:
                same = np.flatnonzero(found)
                found[same[self.h2[cur[same]] != h2[same]]] = False
            step = empty == found  # neither: the slot holds another key, probe the next one
            free = np.flatnonzero(empty)
            if free.size:
                at = cur[free]
                first = np.empty(len(at), bool)
                first[0] = True
                np.not_equal(at[1:], at[:-1], out=first[1:])
                at, won = at[first], free[first]
                self.h1[at] = h1[won]  # its expiry stays _EMPTY: not held
                if self.wide:
                    self.h2[at] = h2[won]
                found[won] = True
                self.used += len(won)
            if todo is not None:
                slots[todo] = cur
            more = np.flatnonzero(~found)
            if not more.size:
                return slots
            cur = cur[more] + step[more]
            todo = more if todo is None else todo[more]
            h1 = h1[more]
            if self.wide:
                h2 = h2[more]
            if len(cur) <= _FEW:
                self._probe_each(cur & mask, h1, h2 if self.wide else h1, slots, todo)
                return slots
            if cur[-1] > mask:  # the last keys walked off the end: on at slot 0, so go first
                k = len(cur) - int(np.searchsorted(cur, mask + 1))
                cur, todo, h1, h2 = (np.roll(a, k) for a in (cur & mask, todo, h1, h2))

    def _probe_each(
        self, cur: np.ndarray, h1: np.ndarray, h2: np.ndarray, slots: np.ndarray, todo: np.ndarray
    ) -> None:
        """`probe`'s last few keys one by one: a round of array operations costs the same for
        three keys as for three hundred, and the longest probe sequences are the last ones.
        Keys claim free slots in another order than in rounds, which is as valid a table."""
        table_h1, table_h2 = self.h1, self.h2
        mask, free, wide = self.capacity - 1, int(_FREE), self.wide
        for i, at, a, b in zip(todo.tolist(), cur.tolist(), h1.tolist(), h2.tolist(), strict=True):
            while True:
                there = int(table_h1[at])
                if there == free:
                    table_h1[at] = a  # its expiry stays _EMPTY: not held
                    if wide:
                        table_h2[at] = b
                    self.used += 1
                    break
                if there == a and (not wide or int(table_h2[at]) == b):
                    break
                at = (at + 1) & mask
            slots[i] = at

    def held(self, after: int) -> np.ndarray:
        """Slots whose key is held: expiry later than `after`."""
        return np.flatnonzero(self.expiry > after)

    @classmethod
    def build(
        cls,
        h1: np.ndarray,
        h2: np.ndarray,
        expiry: np.ndarray,
        room: int,
        kernels: dedup_kernel.Kernels | None = None,
    ) -> _KeyTable:
        """A table holding these keys, with `room` more at a load of at most a quarter."""
        table = cls(cls.capacity_for(len(h1) + room), kernels)
        table.insert(h1, h2, expiry)
        return table

    def insert(self, h1: np.ndarray, h2: np.ndarray, expiry: np.ndarray) -> None:
        """Add these keys (not in the table yet) with their expiry."""
        if not len(h1):
            return
        if self.kernels is None:
            self.expiry[self.locate(h1, h2)] = expiry
            return
        if not self.wide and h2.any():
            self.wide = True
        self.kernels.insert(self.h1, self.h2, self.expiry, self.wide, _FREE, h1, h2, expiry)
        self.used += len(h1)

    def compacted(self, after: int, room: int) -> _KeyTable:
        """This table's keys held after `after`, with `room` more; reuses the arrays if the
        capacity stays (clearing them is cheaper than the page faults of new ones)."""
        held = self.held(after)
        h1, h2, expiry = self.h1[held], self.h2[held], self.expiry[held]
        if self.capacity_for(len(held) + room) != self.capacity:
            return self.build(h1, h2, expiry, room, self.kernels)
        self.h1.fill(_FREE)
        self.expiry.fill(_EMPTY)
        if self.wide:
            self.h2.fill(0)
        self.used, self.wide = 0, False
        self.insert(h1, h2, expiry)
        return self


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
        # the compiled loops, looked up when the first batch comes (importing numba takes a
        # quarter of a second, which commands that only load the app should not pay)
        self._kernels: dedup_kernel.Kernels | None = None
        self._looked_up = False
        self._clock = _NO_TIME  # newest time seen, in microseconds
        self._mode: str | None = None  # "exact" (one integer key) or "hashed"
        self._schema: pa.Schema | None = None
        # keys kept since the last changes() (None: too many, not recorded)
        self._kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = []
        self._kept_rows = 0

    @property
    def watermark(self) -> datetime | None:
        return None

    @property
    def held_keys(self) -> int:
        """How many keys are held now (not yet expired)."""
        return len(self._table.held(self._held_after()))

    def process(self, batch: pa.Table) -> Emit:
        table = as_table(batch, self.name)
        require_columns(table, [*self.keys, self.time_column], self.name)
        self._schema = table.schema
        if table.num_rows == 0:
            return Emit(table)
        times, valid = time_micros(table, self.time_column, self.name)
        if valid is not None:
            times = self._untimed_at_clock(times, valid)
        h1, h2 = self._hash(table)
        keep = self._decide(times, h1, h2)
        self._note_kept(h1, h2, times, keep)
        self._clock = max(self._clock, int(times.max()))
        dropped = int(len(keep) - keep.sum())
        self.dropped_count += dropped
        return Emit(table.filter(pa.array(keep)) if dropped else table)

    def flush(self) -> Emit:
        schema = self._schema if self._schema is not None else pa.schema([])
        return Emit(schema.empty_table())

    def snapshot(self) -> dict[str, pa.Table]:
        held = self._table.held(self._held_after())
        keys = pa.table(
            {
                "h1": pa.array(self._table.h1[held], pa.uint64()),
                "h2": pa.array(self._table.h2[held], pa.uint64()),
                "expiry": pa.array(self._table.expiry[held], pa.int64()),
            }
        )
        return {"meta": meta_table(**self._meta()), "keys": keys}

    def _meta(self) -> Meta:
        return Meta(
            config=self._config(),
            mode=self._mode,
            clock=None if self._clock == _NO_TIME else self._clock,
            dropped_count=self.dropped_count,
            hash_fingerprint=FINGERPRINT,
        )

    def changes(self) -> dict[str, pa.Table | Delta]:
        """`snapshot()` as changes: the keys whose expiry was set since the last call (a key
        kept again overwrites its row; expired keys drop out by the clock as horizon)."""
        kept, self._kept, self._kept_rows = self._kept, [], 0
        if kept is None:  # not recorded (no one asked for a while): the whole state
            keys = self.snapshot()["keys"]
            return {"meta": self._meta(), "keys": Delta(("h1", "h2"), keys, reset=True)}
        if kept:
            h1, h2, expiry = (np.concatenate(parts) for parts in zip(*kept, strict=True))
        else:
            h1 = h2 = np.zeros(0, np.uint64)
            expiry = np.zeros(0, np.int64)
        horizon = None if self._clock == _NO_TIME else self._held_after()
        if horizon is not None:  # keys that expired within the batch are not held: left out
            held = expiry > horizon
            if not held.all():
                h1, h2, expiry = h1[held], h2[held], expiry[held]
        if len(h1) and 4 * len(h1) >= self._table.used:  # perhaps most of the keys held
            # counted before the whole table is gathered: usually it is not worth it
            held_now = np.count_nonzero(self._table.expiry > self._held_after())
            if held_now <= 2 * len(h1):  # cheaper whole: no changes to fold later
                whole = self.snapshot()["keys"]
                return {"meta": self._meta(), "keys": Delta(("h1", "h2"), whole, reset=True)}
        keys = pa.table(
            {
                "h1": pa.array(h1, pa.uint64()),
                "h2": pa.array(h2, pa.uint64()),
                "expiry": pa.array(expiry, pa.int64()),
            }
        )
        # integer keys have no second word: h2 is then all zeros, and not written
        zeros = () if h2.any() else ("h2",)
        delta = Delta(("h1", "h2"), keys, expires="expiry", horizon=horizon, zeros=zeros)
        return {"meta": self._meta(), "keys": delta}

    def _held_after(self) -> int:
        """Keys whose expiry is at or before this are not held: a snapshot leaves them out, and
        `changes()` gives it as the horizon below which a restore drops them."""
        return self._clock

    def _note_kept(
        self, h1: np.ndarray, h2: np.ndarray, times: np.ndarray, keep: np.ndarray
    ) -> None:
        """Remember the kept records' keys with the expiry each set (time + ttl, by the rule),
        in arrival order, so a key kept twice ends with its later expiry; until they outnumber
        the table's slots four times: a Dedup used without `changes()`, outside a runner, does
        not grow; its next `changes()` gives the whole state."""
        if self._kept is None or not keep.any():
            return
        self._kept.append((h1[keep], h2[keep], times[keep] + self.ttl))
        self._kept_rows += len(self._kept[-1][0])
        if self._kept_rows > 4 * self._table.capacity:
            self._kept = None

    def restore(self, state: dict[str, pa.Table]) -> None:
        meta = read_meta(state, self.name)
        check_config(meta, self._config(), self.name)
        # a checkpoint taken before the first kept record wrote no keys: none are held
        keys = state.get("keys", _NO_KEYS)
        if keys.column_names != ["h1", "h2", "expiry"]:
            raise StreamError(
                subject(self.name),
                "the state to restore has no 'keys' table with columns h1, h2, expiry",
                "restore a dict produced by Dedup.snapshot()",
            )
        if meta["mode"] == "hashed" and keys.num_rows:
            check_fingerprint(meta, self.name)
        # snapshots of earlier versions may hold a key whose first word is now the free mark
        h1, h2 = _clear_of_free(keys.column("h1").to_numpy(), keys.column("h2").to_numpy())
        expiry = keys.column("expiry").to_numpy()
        self._table = _KeyTable.build(h1, h2, expiry, room=0, kernels=self._compiled())
        self._mode = meta["mode"]
        self._clock = _NO_TIME if meta["clock"] is None else int(meta["clock"])
        self.dropped_count = int(meta["dropped_count"])
        self._kept, self._kept_rows = [], 0

    def _config(self) -> str:
        return f"Dedup(key={self.keys}, ttl_us={self.ttl}, time_column={self.time_column!r})"

    def _hash(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """Two uint64 words per record that identify its key."""
        first = table.column(self.keys[0]).type
        integral = pa.types.is_integer(first) or pa.types.is_timestamp(first)
        # A stream widens an integer field to double when a later record has a fraction, so
        # a number key is keyed by its value whatever its type; state of versions that hashed
        # double keys keeps that hash.
        floating = pa.types.is_floating(first) and self._mode != "hashed"
        exact = len(self.keys) == 1 and (integral or floating or pa.types.is_duration(first))
        mode = "exact" if exact else "hashed"
        if self._mode not in (None, mode):
            raise StreamError(
                subject(self.name),
                f"key column {self.keys[0]!r} changed type to {first} between batches",
                "keep the key columns' types the same across the stream (cast upstream)",
            )
        self._mode = mode
        if floating:
            return _clear_of_free(*_number_words(table.column(self.keys[0])))
        if exact:
            column = table.column(self.keys[0])
            width = pa.uint64() if pa.types.is_unsigned_integer(first) else pa.int64()
            if column.type != width:
                column = column.cast(width)
            if column.null_count:
                # a null key is its own value: word two tells it from the integer 0
                h2 = column.is_null().to_numpy(zero_copy_only=False).astype(np.uint64)
                column = column.fill_null(0)
            else:
                h2 = np.zeros(len(column), np.uint64)
            return _clear_of_free(_mix(column.to_numpy().view(np.uint64)), h2)
        try:
            if len(self.keys) == 1:
                h1, h2 = hash64_seeds(table.column(self.keys[0]), _SEEDS)
            else:
                h1, h2 = hash64_rows_seeds([table.column(k) for k in self.keys], _SEEDS)
        except TypeError as exc:
            raise StreamError(
                subject(self.name), f"cannot hash the key: {exc}",
                "dedup on text, number, date/time or struct columns (join a list into text)",
            ) from None  # fmt: skip
        return _clear_of_free(h1, h2)

    def _untimed_at_clock(self, times: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Records without a time take the clock they see (`_NO_TIME` before any time): a
        record stopping the stream for good would be worse than judging it where it stands."""
        times = np.where(valid, times, _NO_TIME)
        return np.where(valid, times, self._clocks(times))

    def _clocks(self, times: np.ndarray) -> np.ndarray:
        """The clock each record sees: the newest time of the records before it (earlier
        batches included), `_NO_TIME` before the first."""
        clocks = np.empty_like(times)
        clocks[0] = self._clock
        if len(times) > 1:
            np.maximum.accumulate(times[:-1], out=clocks[1:])
            np.maximum(clocks[1:], self._clock, out=clocks[1:])
        return clocks

    def _decide(self, times: np.ndarray, h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
        """Which records to keep; updates the held keys."""
        kernels = self._compiled()
        table = self._reserve(len(times))
        if kernels is not None:
            if not table.wide and h2.any():
                table.wide = True
            keep = np.zeros(len(times), bool)
            table.used += kernels.decide(
                table.h1, table.h2, table.expiry, table.wide, _FREE,
                h1, h2, times, self._clock, self.ttl, keep,
            )  # fmt: skip
            return keep
        clocks = self._clocks(times)
        # In the order of home slots the table is read and written in order; a key's records
        # keep their arrival order. (h2 is often all zeros, which need no reordering.)
        order, home = table.home_order(h1)
        times, clocks = times[order], clocks[order]
        slots = table.probe(home, h1[order], h2[order] if h2.any() else h2)
        expiry = table.expiry
        held = expiry[slots]
        # a key at or before the record's clock was pruned: not held, even before a rebuild
        # drops it
        keep = (times >= held) | (held <= clocks)
        repeats = self._repeats(table, home, slots)
        keep[repeats] = False
        expiry[slots[keep]] = times[keep] + self.ttl  # each key once: the rule record by record
        if repeats.size:
            self._decide_repeats(repeats, slots[repeats], times[repeats], clocks[repeats], keep)
        in_arrival_order = np.empty_like(keep)
        in_arrival_order[order] = keep
        return in_arrival_order

    @staticmethod
    def _repeats(table: _KeyTable, home: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Positions of the records whose key another record of the batch has too, ascending.

        Such records share a home slot, so they are among neighbours with equal `home`.
        """
        twins = home[1:] == home[:-1]
        if not twins.any():
            return np.empty(0, np.int64)
        near = np.zeros(len(home), bool)
        near[1:] = twins
        near[:-1] |= twins
        near = np.flatnonzero(near)
        at = slots[near]
        owner = table.owner
        owner[at] = near  # one write per slot stays; the records it overwrote are repeats
        later = owner[at] != near
        if not later.any():
            return near[:0]
        owner[at[later]] = -1
        return near[owner[at] == -1]

    def _decide_repeats(
        self,
        records: np.ndarray,
        slots: np.ndarray,
        times: np.ndarray,
        clocks: np.ndarray,
        keep: np.ndarray,
    ) -> None:
        """The records of keys seen more than once in the batch, vectorised in rounds.

        Records are grouped by key, in arrival order within a key. Each round drops the
        undecided records that the key's current expiry holds (before it, and it after their
        clock) and keeps the first of the rest per key, which sets that key's expiry. A key kept
        k times in a batch needs k rounds. Dropping early is exact: a record held by one expiry
        is held by the next, which is later unless the kept record's clock had passed the
        first, and then every later record's clock has passed it too, so none was dropped.
        """
        order = np.argsort(slots, kind="stable")
        records, slots, times, clocks = records[order], slots[order], times[order], clocks[order]
        expiry = self._table.expiry
        todo = np.arange(len(times))
        rounds = 0
        while todo.size:
            rounds += 1
            if rounds > _ROUNDS:  # a key kept many times: rounds would cost todo.size each
                self._decide_each(todo, records, slots, times, clocks, keep)
                return
            held = expiry[slots[todo]]
            todo = todo[(times[todo] >= held) | (held <= clocks[todo])]
            if not todo.size:
                break
            key = slots[todo]
            first = np.empty(len(todo), bool)
            first[0] = True
            np.not_equal(key[1:], key[:-1], out=first[1:])
            kept = todo[first]
            keep[records[kept]] = True
            expiry[slots[kept]] = times[kept] + self.ttl
            todo = todo[~first]

    def _decide_each(
        self,
        todo: np.ndarray,
        records: np.ndarray,
        slots: np.ndarray,
        times: np.ndarray,
        clocks: np.ndarray,
        keep: np.ndarray,
    ) -> None:
        """`_decide_repeats`' undecided records one by one, by key and in arrival order (the
        rule itself: a million records of one key, each kept, took a million rounds)."""
        expiry, ttl = self._table.expiry, self.ttl
        for i in todo.tolist():
            slot, t = int(slots[i]), int(times[i])
            held = int(expiry[slot])
            if t >= held or held <= int(clocks[i]):
                keep[records[i]] = True
                expiry[slot] = t + ttl

    def _compiled(self) -> dedup_kernel.Kernels | None:
        """The compiled loops (None without numba: the numpy path), also for the table."""
        if not self._looked_up:
            self._kernels, self._looked_up = dedup_kernel.compiled(), True
            self._table.kernels = self._kernels
        return self._kernels

    def _reserve(self, incoming: int) -> _KeyTable:
        """The table, rebuilt without expired keys when `incoming` new keys would overload it."""
        table = self._table
        if 2 * (table.used + incoming) > table.capacity:
            self._table = table = table.compacted(self._clock, room=incoming)
        return table
