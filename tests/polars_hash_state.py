"""Operator state as headrace wrote it before the stable hash: values hashed with polars.

Kept only to test that such state is refused with the way out; it reproduces the old
`base.hash_fingerprint` and the old Dedup key hashing exactly.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

_CANARY = pl.DataFrame(
    {
        "s": ["", "a", "headrace", "ünïcode", None],
        "i": [0, 1, -1, 2**62, None],
        "f": [0.0, 1.5, -2.25, 1e300, None],
    }
)
OLD_DEDUP_SEEDS = (0x5EED_0001, 0x5EED_0002)


def old_polars_fingerprint() -> int:
    hashed = _CANARY.select(
        pl.col("s").hash(7),
        pl.col("i").hash(7),
        pl.col("f").hash(7),
        pl.struct("s", "i").hash(7).alias("si"),
        pl.concat_list(pl.col("i"), pl.col("i")).hash(7).alias("list"),
    )
    total = np.uint64(0)
    for column in hashed.iter_columns():
        values = column.to_numpy()
        with np.errstate(over="ignore"):
            total = np.uint64(total * np.uint64(1_000_003)) ^ np.bitwise_xor.reduce(values)
    return int(np.array([total], dtype=np.uint64).view(np.int64)[0])


def as_old_state(state: dict[str, pa.Table], keys: list[str] | None = None) -> dict:
    """`state` with the polars fingerprint (and, given the dedup keys, polars-hashed keys)."""
    state = dict(state)
    meta = state["meta"]
    i = meta.schema.get_field_index("hash_fingerprint")
    fingerprint = pa.array([old_polars_fingerprint()], pa.int64())
    state["meta"] = meta.set_column(i, "hash_fingerprint", fingerprint)
    if keys is not None:
        series = pl.Series(keys)
        h1, h2 = (series.hash(seed).to_numpy() for seed in OLD_DEDUP_SEEDS)
        expiry = state["keys"].column("expiry")
        state["keys"] = pa.table({"h1": h1, "h2": h2, "expiry": expiry})
    return state
