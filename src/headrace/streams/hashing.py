"""Hashes that never change: for anything persisted (partition routing, operator state).

A library's hash (polars' `hash`, Python's `hash`) may change between versions; a value hashed
into a checkpoint must hash the same after an upgrade, on another machine and in another
process. Both hashes here are defined by this text alone and computed with numpy, vectorised
over rows (one step per byte position, or per 8-byte word, of the longest value; no Python per
record).

`fnv1a_32`: FNV-1a 32-bit of each value's bytes (a null as the empty bytes): start at 0x811C9DC5,
for each byte `h = (h ^ byte) * 0x01000193 mod 2**32`. The stream log routes keys with it.

`hash64(column, seed)`: 64 bits per row, for dedup keys and HyperLogLog. Per value:

Below, S = (seed + P1) mod 2**64 and all arithmetic is mod 2**64.

- text and binary: its bytes, padded with zeros to a multiple of 8, read as little-endian
  64-bit words w_0..w_k-1; `h = S ^ (len * P2)`, then per word the xxHash64 round
  `h = rotl(h + w * P2, 31) * P1`; the result is `fmix64(h)`.
- integers, booleans, dates, times, timestamps and durations: the value as a signed 64-bit
  integer; floats as float64 with -0.0 as 0.0 and every NaN as one NaN, their bits as an
  integer; decimals as their text. The 64-bit word w gives `fmix64(rotl(S + w * P2, 31) * P1)`.
- null: `fmix64(S ^ NULL)` (NULL = 0x6E756C6C6E756C6C), whatever the type; a struct hashes like
  its fields as a row. Lists and maps have no stable hash here (TypeError).
- several columns (a row): `h = fmix64(rotl(h, 27) ^ h_column)` over the columns in order,
  starting from S.

P1 = 0x9E3779B185EBCA87, P2 = 0xC2B2AE3D27D4EB4F (xxHash64's primes); fmix64 is MurmurHash3's
finaliser. `FINGERPRINT` is the hash of fixed values: snapshots record it, and a test pins it, so
a change to this function cannot pass unnoticed.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "FINGERPRINT",
    "FNV_OFFSET_BASIS",
    "FNV_PRIME",
    "fnv1a_32",
    "hash64",
    "hash64_rows",
    "hash64_rows_seeds",
    "hash64_seeds",
]

FNV_OFFSET_BASIS = 0x811C9DC5
FNV_PRIME = 0x01000193
_P1 = np.uint64(0x9E3779B185EBCA87)
_P2 = np.uint64(0xC2B2AE3D27D4EB4F)
_NULL = np.uint64(0x6E75_6C6C_6E75_6C6C)  # "nullnull"
_U64 = np.uint64
_MASK = 0xFFFF_FFFF_FFFF_FFFF


def _byte_buffers(values: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(starts, lengths, data) of a string or binary array (the value's bytes; a null's are
    empty whatever its slot holds)."""
    t = values.type
    if not (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
    ):
        values = values.cast(pa.large_binary())
        t = values.type
    large = pa.types.is_large_string(t) or pa.types.is_large_binary(t)
    n = len(values)
    buffers = values.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64 if large else np.int32)
    offsets = offsets[values.offset : values.offset + n + 1].astype(np.int64)
    data = (
        np.frombuffer(buffers[2], dtype=np.uint8)
        if buffers[2] is not None
        else np.zeros(0, np.uint8)
    )
    starts = offsets[:-1]
    lengths = offsets[1:] - starts
    if values.null_count:
        lengths[values.is_null().to_numpy(zero_copy_only=False)] = 0
    return starts, lengths, data


def fnv1a_32(values: pa.Array) -> np.ndarray:
    """FNV-1a 32-bit hash of each value of a string or binary array (null → empty bytes)."""
    n = len(values)
    hashes = np.full(n, FNV_OFFSET_BASIS, dtype=np.uint32)
    if n == 0:
        return hashes
    starts, lengths, data = _byte_buffers(values)
    prime = np.uint32(FNV_PRIME)
    for position in range(int(lengths.max())):
        live = np.flatnonzero(lengths > position)
        hashes[live] = (hashes[live] ^ data[starts[live] + position]) * prime
    return hashes


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << _U64(r)) | (x >> _U64(64 - r))


def _fmix64(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> _U64(33))
    x *= _U64(0xFF51AFD7ED558CCD)
    x ^= x >> _U64(33)
    x *= _U64(0xC4CEB9FE1A85EC53)
    x ^= x >> _U64(33)
    return x


def _seed(seed: int) -> np.uint64:
    return _U64((seed + int(_P1)) & _MASK)


def _hash_bytes(values: pa.Array, seeds: Sequence[int]) -> list[np.ndarray]:
    starts, lengths, data = _byte_buffers(values)
    n = len(starts)
    length_words = lengths.astype(np.uint64) * _P2
    hs = [_seed(seed) ^ length_words for seed in seeds]
    if n == 0 or not len(data):
        return [_fmix64(h) for h in hs]
    longest = int(lengths.max())
    for rows, words in _words(starts, lengths, data, longest):
        words *= _P2
        for h in hs:
            if isinstance(rows, slice):
                _round(h, words)
            else:  # rows: where the value still has bytes; the others keep their hash
                h[:] = np.where(rows, _round(h.copy(), words), h)
    return [_fmix64(h) for h in hs]


def _round(h: np.ndarray, words: np.ndarray) -> np.ndarray:
    """`h = rotl(h + words, 31) * P1` in place (the words already times P2)."""
    h += words
    high = h >> _U64(33)
    h <<= _U64(31)
    h |= high
    h *= _P1
    return h


def _words(starts: np.ndarray, lengths: np.ndarray, data: np.ndarray, longest: int):  # type: ignore[no-untyped-def]
    """(rows, word j of those rows) for each word position j of the longest value."""
    count = -(-longest // 8)
    first = int(starts[0])
    if (
        (lengths == longest).all()
        and longest % 8 == 0
        and (len(starts) == 1 or (np.diff(starts) == longest).all())
    ):
        # values of one length back to back (hashes, UUIDs): the words are the data itself
        block = data[first : first + longest * len(starts)]
        matrix = block.view("<u8").reshape(len(starts), count)
        for j in range(count):
            yield slice(None), matrix[:, j].astype(np.uint64)
        return
    # any 8 bytes at byte offset o, as two aligned words shifted together (little-endian)
    aligned = np.zeros(len(data) // 8 + 2, np.uint64)
    aligned.view(np.uint8)[: len(data)] = data
    last = len(aligned) - 2
    for j in range(count):
        remaining = lengths - 8 * j
        live = remaining > 0
        at = starts + 8 * j
        index = np.minimum(at >> 3, last)
        shift = ((at & 7) * 8).astype(np.uint64)
        words = aligned[index] >> shift
        high = aligned[index + 1] << ((_U64(64) - shift) & _U64(63))
        words |= np.where(shift == 0, _U64(0), high)
        size = np.clip(remaining, 0, 8).astype(np.uint64)  # only the value's own bytes
        words &= np.where(size >= 8, _U64(_MASK), (_U64(1) << (size * _U64(8) & _U64(63))) - 1)
        yield (slice(None) if live.all() else live), words


def _as_words(values: pa.Array) -> np.ndarray:
    """A fixed-width value's 64-bit word (nulls as 0; hash64 handles them apart)."""
    t = values.type
    if pa.types.is_floating(t):
        floats = pc.fill_null(values.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False)
        floats = np.where(floats == 0.0, 0.0, floats)  # -0.0 is 0.0
        floats = np.where(np.isnan(floats), np.nan, floats)  # one NaN
        return floats.astype(np.float64).view(np.uint64)
    if pa.types.is_boolean(t):
        values = values.cast(pa.int64())
    elif pa.types.is_temporal(t):
        narrow = pa.types.is_date32(t) or pa.types.is_time32(t)
        values = values.view(pa.int32() if narrow else pa.int64()).cast(pa.int64())
    elif pa.types.is_unsigned_integer(t):
        values = values.cast(pa.uint64())
    elif not pa.types.is_integer(t):
        raise TypeError(t)
    elif t != pa.int64():
        values = values.cast(pa.int64())
    ints = pc.fill_null(values, pa.scalar(0, values.type)).to_numpy(zero_copy_only=False)
    return ints.view(np.uint64)


def hash64(values: pa.Array | pa.ChunkedArray, seed: int = 0) -> np.ndarray:
    """The stable 64-bit hash of each value (see the module docstring), as uint64."""
    return hash64_seeds(values, (seed,))[0]


def hash64_seeds(values: pa.Array | pa.ChunkedArray, seeds: Sequence[int]) -> list[np.ndarray]:
    """`hash64` with each of `seeds`, reading the values once (dedup takes two)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    t = values.type
    null_hashes = [_fmix64(np.array([_seed(seed) ^ _NULL]))[0] for seed in seeds]
    if pa.types.is_null(t):
        return [np.full(len(values), h, np.uint64) for h in null_hashes]
    if pa.types.is_struct(t):
        columns = [values.field(i) for i in range(t.num_fields)]
        out = hash64_rows_seeds(columns, seeds)
    elif pa.types.is_decimal(t):
        out = _hash_bytes(values.cast(pa.string()), seeds)
    elif (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_string_view(t)
        or pa.types.is_binary_view(t)
    ):
        out = _hash_bytes(values, seeds)
    else:
        try:
            words = _as_words(values) * _P2
        except (TypeError, pa.ArrowException):
            raise TypeError(f"values of type {t} have no stable hash") from None
        out = [_fmix64(_rotl(_seed(seed) + words, 31) * _P1) for seed in seeds]
    if values.null_count:
        nulls = values.is_null().to_numpy(zero_copy_only=False)
        for h, null_hash in zip(out, null_hashes, strict=True):
            h[nulls] = null_hash
    return out


def hash64_rows(columns: Sequence[pa.Array | pa.ChunkedArray], seed: int = 0) -> np.ndarray:
    """The stable 64-bit hash of each row of several columns, in order."""
    return hash64_rows_seeds(columns, (seed,))[0]


def hash64_rows_seeds(
    columns: Sequence[pa.Array | pa.ChunkedArray], seeds: Sequence[int]
) -> list[np.ndarray]:
    """`hash64_rows` with each of `seeds`, reading the columns once."""
    n = len(columns[0]) if columns else 0
    hs = [np.full(n, _seed(seed), np.uint64) for seed in seeds]
    for column in columns:
        hashed = hash64_seeds(column, seeds)
        hs = [_fmix64(_rotl(h, 27) ^ c) for h, c in zip(hs, hashed, strict=True)]
    return hs


def _fingerprint() -> int:
    canary = pa.table(
        {
            "s": ["", "a", "headrace", "ünïcode", None, "x" * 21],
            "i": [0, 1, -1, 2**62, None, 7],
            "f": [0.0, 1.5, -2.25, 1e300, None, float("nan")],
            "d": pa.array([Decimal("1.5"), None, Decimal("0"), None, None, Decimal("-2")]),
        }
    )
    words = [hash64(canary.column(c), 7) for c in canary.column_names]
    words.append(hash64_rows(canary.columns, 7))
    total = np.bitwise_xor.reduce(np.concatenate(words))
    return int(np.array([total], np.uint64).view(np.int64)[0])  # stored in an int64 column


FINGERPRINT = _fingerprint()
