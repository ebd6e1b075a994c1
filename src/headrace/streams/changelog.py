"""Keyed operator state as a changelog: a base table plus the deltas of later batches.

A checkpoint writes, for a keyed state table (dedup keys, open windows), only the `Delta` of its
batch: one Arrow IPC blob holding the upserted rows and, flagged in `DELETE`, the deleted keys;
its schema metadata carries the key columns, a reset flag and the expiry horizon. A batch's
deltas go to the ledger as one row (`bundle`: slot names and their deltas), beside the slots'
bases (`ledger.checkpoints`). A base records the batch it is valid from (`encode_base`): an
operator that rewrote a table whole (a reset, when most of it changed or it is small) has it
written in place as the new base, which costs less than a new changelog row of the same size,
and the deltas of earlier batches no longer apply to it.

The state is the base with the deltas applied in seq order (`merge`): a reset drops what came
before it, a key's latest row wins, deleted keys and rows expired at the latest horizon are
dropped. Applying deltas is associative (folding a prefix of them into the base and then the
rest gives the same table as applying them all), which is what lets compaction fold deltas into
a new base while batches keep committing, and lets a restore read any mix of the two. The merge
is vectorised: the deltas are deduplicated among themselves (they are small), then the base
keeps its rows whose key no delta names (one anti-join), so restoring a large base with a few
deltas costs one pass over it.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from headrace.streams.log import decode_batch
from headrace.streams.operators.base import Delta, Meta, meta_table

DELETE = "__delete"
_KEYS, _RESET = b"headrace.keys", b"headrace.reset"
_EXPIRES, _HORIZON = b"headrace.expires", b"headrace.horizon"
_SEQ = b"headrace.seq"
_ZEROS = b"headrace.zeros"  # columns of zeros a delta leaves out: [[index, name, type], ...]


_LENGTH = struct.Struct("<IQ")  # a bundled slot's name and delta lengths
_WRITE = pa.ipc.IpcWriteOptions()  # made once: pyarrow reads environment variables for each


def encode_table(table: pa.Table) -> bytes:
    """A table as Arrow IPC stream bytes (what `decode_batch` reads)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=_WRITE) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


_META = b"headrace.meta/1\n"  # a whole slot that starts so is a `Meta` as JSON, not Arrow IPC
_BYTES = "$bytes"


def encode_state(value: pa.Table | Meta) -> bytes:
    """A whole (not keyed) state slot: a table as Arrow IPC, an operator's `Meta` as JSON."""
    if not isinstance(value, Meta):
        return encode_table(value)
    return _META + json.dumps(value, separators=(",", ":"), default=_bytes_as_text).encode()


def decode_state(data: bytes) -> pa.Table:
    """What `encode_state` wrote, as a table (a `Meta` as its one-row table)."""
    if not data.startswith(_META):
        return decode_batch(data)
    values = json.loads(data[len(_META) :], object_hook=_text_as_bytes)
    return meta_table(**values)


def _bytes_as_text(value: object) -> object:
    if isinstance(value, bytes):
        return {_BYTES: base64.b64encode(value).decode()}
    raise TypeError(f"{type(value).__name__} is not a state value")


def _text_as_bytes(obj: dict) -> object:
    if len(obj) == 1 and _BYTES in obj:
        return base64.b64decode(obj[_BYTES])
    return obj


def encode_delta(delta: Delta) -> bytes:
    table = delta.upserts
    if delta.deletes is not None and delta.deletes.num_rows:
        flag = pa.array([True] * delta.deletes.num_rows)
        deletes = delta.deletes.append_column(DELETE, flag)
        if table.num_columns:
            table = table.append_column(DELETE, pa.nulls(table.num_rows, pa.bool_()))
            table = pa.concat_tables([table, deletes], promote_options="permissive")
        else:
            table = deletes
    meta = {_KEYS: json.dumps(list(delta.keys)).encode()}
    if delta.reset:
        meta[_RESET] = b"1"
    if delta.expires is not None and delta.horizon is not None:
        meta[_EXPIRES] = delta.expires.encode()
        meta[_HORIZON] = str(int(delta.horizon)).encode()
    table, zeros = _without_zeros(table, delta.zeros)
    if zeros:
        meta[_ZEROS] = json.dumps(zeros).encode()
    return encode_table(table.replace_schema_metadata(meta))


def _without_zeros(table: pa.Table, names: Sequence[str]) -> tuple[pa.Table, list[list]]:
    """The table without the columns its operator knows hold only zeros (`Delta.zeros`: dedup's
    second key word for integer keys, a third of each delta), and where they were: [index,
    name, type]."""
    zeros = []
    for name in names:
        i = table.schema.get_field_index(name)
        if i >= 0 and table.num_rows:
            zeros.append([i, name, str(table.schema.field(i).type)])
    zeros.sort()
    for i, _, _ in reversed(zeros):
        table = table.remove_column(i)
    return table, zeros


def decode_delta(data: bytes) -> pa.Table:
    """A delta as `encode_delta` wrote it, with the columns of zeros it left out put back."""
    table = decode_batch(data)
    meta = table.schema.metadata or {}
    if _ZEROS not in meta:
        return table
    for i, name, kind in json.loads(meta[_ZEROS]):
        kind = pa.type_for_alias(kind)
        table = table.add_column(i, pa.field(name, kind), pa.array(np.zeros(table.num_rows), kind))
    return table.replace_schema_metadata(meta)


_BUNDLE = b"headrace.bundle/1\n"


def bundle(deltas: Mapping[str, bytes]) -> bytes:
    """A batch's deltas, by slot, as one blob: after a header, each slot's name and delta, each
    preceded by its length (a table of them, which earlier versions wrote, cost more to encode
    than the deltas themselves)."""
    parts = [_BUNDLE]
    for slot, delta in deltas.items():
        name = slot.encode()
        parts += (_LENGTH.pack(len(name), len(delta)), name, delta)
    return b"".join(parts)


def unbundle(data: bytes) -> dict[str, bytes]:
    if not data.startswith(_BUNDLE):  # an Arrow table of slot and delta: earlier versions
        table = decode_batch(data)
        return dict(zip(table["slot"].to_pylist(), table["delta"].to_pylist(), strict=True))
    out, at, view = {}, len(_BUNDLE), memoryview(data)
    while at < len(data):
        named, size = _LENGTH.unpack_from(data, at)
        at += _LENGTH.size
        slot = bytes(view[at : at + named]).decode()
        at += named
        out[slot] = bytes(view[at : at + size])
        at += size
    return out


def by_slot(rows: Sequence[tuple[int, bytes]]) -> dict[str, list[tuple[int, bytes]]]:
    """Changelog rows (seq order) as each slot's (seq, delta), in seq order."""
    slots: dict[str, list[tuple[int, bytes]]] = {}
    for seq, data in rows:
        for slot, delta in unbundle(data).items():
            slots.setdefault(slot, []).append((seq, delta))
    return slots


def encode_base(table: pa.Table, seq: int) -> bytes:
    """A keyed slot's whole table as its base, valid from batch `seq` on: the deltas of
    batches up to `seq` are in it already."""
    meta = {**(table.schema.metadata or {}), _SEQ: str(int(seq)).encode()}
    return encode_table(table.replace_schema_metadata(meta))


def base_seq(base: bytes | pa.Table | None) -> int:
    """The batch a base is valid from (0 for none, and for a slot written whole by earlier
    versions: every delta applies to it)."""
    if base is None:
        return 0
    table = decode_batch(base) if isinstance(base, bytes) else base
    return int((table.schema.metadata or {}).get(_SEQ, b"0"))


def restore_slot(base: bytes | None, deltas: Sequence[tuple[int, bytes]]) -> pa.Table:
    """A keyed slot's table: its base with the deltas of later batches applied."""
    after = base_seq(base)
    return merge(base, [d for seq, d in deltas if seq > after])


def merge(base: bytes | None, deltas: Sequence[bytes]) -> pa.Table:
    """The table that `base` followed by `deltas` (in seq order) stand for."""
    if not deltas:
        return decode_batch(base) if base is not None else pa.table({})
    tables = [decode_delta(d) for d in deltas]
    metas = [t.schema.metadata or {} for t in tables]
    first = max((i for i, m in enumerate(metas) if _RESET in m), default=-1)
    start = None if first >= 0 or base is None else pl.from_arrow(decode_batch(base))
    tables, metas = tables[max(first, 0) :], metas[max(first, 0) :]
    keys = json.loads(metas[-1][_KEYS])
    horizons = [(m[_EXPIRES].decode(), int(m[_HORIZON])) for m in metas if _HORIZON in m]
    changes = [pl.from_arrow(t.replace_schema_metadata(None)) for t in tables if t.num_columns]
    if not changes:
        return _expire(start, horizons) if start is not None else pa.table({})
    delta = pl.concat(changes, how="diagonal_relaxed") if len(changes) > 1 else changes[0]
    if len(changes) > 1 or delta.height > 1:  # rows come out in any order: state is keyed
        delta = delta.unique(subset=keys, keep="last")
    if start is not None and start.width:
        kept = start.join(delta.select(keys), on=keys, how="anti", nulls_equal=True)
        delta = pl.concat([kept, delta], how="diagonal_relaxed")
    if DELETE in delta.columns:
        delta = delta.filter(pl.col(DELETE).is_null() | ~pl.col(DELETE)).drop(DELETE)
    return _expire(delta, horizons)


def _expire(frame: pl.DataFrame, horizons: list[tuple[str, int]]) -> pa.Table:
    if horizons:
        column, horizon = horizons[-1]  # horizons only move forward: the latest is the largest
        if column in frame.columns:
            frame = frame.filter(pl.col(column) > horizon)
    return frame.to_arrow()
