"""HyperLogLog for approximate distinct counts, mergeable across micro-batches.

Each value is hashed to 64 bits with headrace's stable hash (`headrace.streams.hashing.hash64`,
the same in every version and process, so registers in a checkpoint stay valid after an
upgrade; `hashed_values` adds the hashes as a column before grouping). The top `precision` bits
pick
one of m = 2**precision registers; the register keeps the largest rank (position of the first
1-bit in the remaining bits). Registers merge by element-wise max, so partial windows built from
different batches merge exactly, in any order.

Inside window state a register set is stored sparsely as a sorted list of codes
`register * 64 + rank`, one per non-zero register, which polars reduces and merges inside its
group-bys (no Python per record). The estimate is the original HyperLogLog one (Flajolet et al.,
2007) with the linear-counting correction for small cardinalities; with 64-bit hashes no
large-range correction is needed. Standard error is about 1.04 / sqrt(m): 1.6% at precision 12.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pyarrow as pa

from headrace.errors import StreamError
from headrace.streams.hashing import hash64

DEFAULT_PRECISION = 12
SEED = 0x484C4C  # fixed, so registers written by different operators merge
_RANK_BITS = 64  # codes are register * 64 + rank; rank <= 64 - precision + 1 < 64


def check_precision(precision: int, what: str) -> None:
    if not isinstance(precision, int) or not 4 <= precision <= 18:
        raise StreamError(
            what,
            f"precision must be an integer from 4 to 18, got {precision!r}",
            "use the default 12 (about 1.6% error, 4 KiB per window) or another value in range",
        )


def _alpha(m: int) -> float:
    return {16: 0.673, 32: 0.697, 64: 0.709}.get(m, 0.7213 / (1 + 1.079 / m))


def hashed_values(values: pa.Array | pa.ChunkedArray) -> pl.Series:
    """The stable 64-bit hash of each value (UInt64), null where the value is null."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    try:
        hashes = hash64(values, SEED)
    except TypeError as exc:
        raise StreamError(
            "approx_distinct", f"cannot count distinct values: {exc}",
            "count a text, number, date/time or struct column (cast lists upstream)",
        ) from None  # fmt: skip
    mask = values.is_null().to_numpy(zero_copy_only=False) if values.null_count else None
    return pl.from_arrow(pa.array(hashes, pa.uint64(), mask=mask))


def codes(hashed: pl.Expr, precision: int) -> pl.Expr:
    """One code per non-null hash (see `hashed_values`): its register and the rank."""
    rest_bits = 64 - precision
    register = hashed // (1 << rest_bits)
    rest = hashed % (1 << rest_bits)
    # leading zeros of the rest within its own width; an all-zero rest gets the maximum rank
    rank = (rest.bitwise_leading_zeros().cast(pl.Int64) - precision + 1).clip(
        upper_bound=rest_bits + 1
    )
    code = (register.cast(pl.Int64) * _RANK_BITS + rank).cast(pl.UInt32)
    return pl.when(hashed.is_not_null()).then(code)


def reduce_codes(codes_expr: pl.Expr) -> pl.Expr:
    """Within a group: the largest code per register (that is, the register's value)."""
    ordered = codes_expr.drop_nulls().sort(descending=True)
    return ordered.filter((ordered // _RANK_BITS).is_first_distinct())


def estimate(code_lists: pl.Expr, precision: int) -> pl.Expr:
    """The distinct-count estimate (Int64) from a list column of reduced codes."""
    m = 1 << precision
    filled = code_lists.list.len().fill_null(0)
    inverse_powers = code_lists.list.eval(
        pl.lit(2.0).pow(-(pl.element() % _RANK_BITS).cast(pl.Float64))
    ).list.sum()
    harmonic = inverse_powers.fill_null(0.0) + (m - filled).cast(pl.Float64)
    raw = _alpha(m) * m * m / harmonic
    zeros = (m - filled).cast(pl.Float64)
    linear = m * (m / zeros).log()
    corrected = pl.when((raw <= 2.5 * m) & (zeros > 0)).then(linear).otherwise(raw)
    return corrected.round(0).cast(pl.Int64)


class HyperLogLog:
    """A dense register set in numpy, for use outside windows (and to check the sparse form)."""

    def __init__(self, precision: int = DEFAULT_PRECISION) -> None:
        check_precision(precision, "HyperLogLog")
        self.precision = precision
        self.registers = np.zeros(1 << precision, np.uint8)

    def add(self, values: pl.Series | pa.Array | list | np.ndarray) -> None:
        series = values if isinstance(values, pl.Series) else pl.Series(values)
        hashed = hashed_values(series.to_arrow())
        code = pl.select(codes(pl.lit(hashed), self.precision)).to_series().drop_nulls()
        code = code.to_numpy().astype(np.int64)
        np.maximum.at(self.registers, code // _RANK_BITS, (code % _RANK_BITS).astype(np.uint8))

    def merge(self, other: HyperLogLog) -> None:
        if other.precision != self.precision:
            raise StreamError(
                "HyperLogLog",
                f"cannot merge precision {other.precision} into precision {self.precision}",
                "merge register sets built with the same precision",
            )
        np.maximum(self.registers, other.registers, out=self.registers)

    def codes(self) -> list[int]:
        """The sparse form used in window state: sorted descending, one per non-zero register."""
        present = np.flatnonzero(self.registers)[::-1]
        return (present * _RANK_BITS + self.registers[present]).tolist()

    def estimate(self) -> int:
        m = len(self.registers)
        harmonic = float(np.sum(np.ldexp(1.0, -self.registers.astype(np.int64))))
        raw = _alpha(m) * m * m / harmonic
        zeros = int(np.count_nonzero(self.registers == 0))
        if raw <= 2.5 * m and zeros:
            return round(m * math.log(m / zeros))
        return round(raw)
