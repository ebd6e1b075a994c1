"""The stable hashes: defined by their text, so persisted state survives any upgrade."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pytest

from headrace.streams.hashing import FINGERPRINT, fnv1a_32, hash64, hash64_rows, hash64_seeds


def test_the_fingerprint_is_pinned():
    # Operator state in users' checkpoints depends on these numbers: a change to the hash is a
    # breaking change for every snapshot and must not pass unnoticed.
    assert FINGERPRINT == -4624397217349875952
    assert hash64(pa.array(["", "a", "headrace"]), 7).tolist() == [
        hash64(pa.array([""]), 7)[0],
        hash64(pa.array(["a"]), 7)[0],
        hash64(pa.array(["headrace"]), 7)[0],
    ]


def test_fnv1a_32_reference_values():
    # the published FNV-1a test vectors
    assert fnv1a_32(pa.array(["", "a", "foobar", None])).tolist() == [
        0x811C9DC5,
        0xE40C292C,
        0xBF9CF968,
        0x811C9DC5,
    ]


def test_hash64_is_a_function_of_the_value_not_of_the_batch():
    values = ["a" * 64, "b" * 64, "short", "", None, "x" * 9, "ünïcode"]
    whole = hash64(pa.array(values), 3)
    for i, value in enumerate(values):  # alone, sliced, chunked, large or as a dictionary
        assert hash64(pa.array([value], pa.string()), 3)[0] == whole[i]
        assert hash64(pa.array(values).slice(i, 1), 3)[0] == whole[i]
    assert (hash64(pa.array(values, pa.large_string()), 3) == whole).all()
    assert (hash64(pa.chunked_array([values[:3], values[3:]]), 3) == whole).all()
    assert (hash64(pa.array(values).dictionary_encode(), 3) == whole).all()
    uniform = [f"{i:064x}" for i in range(5)]  # the back-to-back fast path agrees
    assert (hash64(pa.array(uniform), 3) == hash64(pa.array([*uniform, "z"]), 3)[:5]).all()


def test_hash64_tells_apart_what_differs_and_equates_what_is_equal():
    text = hash64(pa.array(["a", "a\0", "", None, "a"]), 0)
    assert text[0] == text[4] and len(set(text[:4].tolist())) == 4
    floats = hash64(pa.array([0.0, -0.0, float("nan"), float("-nan"), 1.5, None]), 0)
    assert floats[0] == floats[1] and floats[2] == floats[3]
    assert len(set(floats[[0, 2, 4, 5]].tolist())) == 4
    ints = pa.array([1, 2, None])
    assert (hash64(ints, 0) == hash64(ints.cast(pa.int32()), 0)).all()
    assert hash64(pa.array([date(2024, 1, 1)]), 0)[0] != hash64(pa.array([0]), 0)[0]
    stamps = pa.array([datetime(2024, 1, 1, tzinfo=UTC)], pa.timestamp("us", tz="UTC"))
    assert hash64(stamps, 0)[0] == hash64(stamps.cast(pa.int64()), 0)[0]
    decimals = pa.array([Decimal("1.50"), Decimal("2")])
    assert hash64(decimals, 0)[0] != hash64(decimals, 0)[1]
    rows = hash64_rows([pa.array(["a", "b"]), pa.array([1, 2])], 0)
    swapped = hash64_rows([pa.array([1, 2]), pa.array(["a", "b"])], 0)
    assert rows[0] != rows[1] and (rows != swapped).all()
    struct = pa.StructArray.from_arrays([pa.array(["a", "b"]), pa.array([1, 2])], ["s", "i"])
    assert (hash64(struct, 0) == rows).all()
    with pytest.raises(TypeError, match="no stable hash"):
        hash64(pa.array([[1, 2]]), 0)


def test_two_seeds_are_independent_enough_for_128_bit_keys():
    values = pa.array([f"{i:x}" for i in range(200_000)])
    h1, h2 = hash64_seeds(values, (1, 2))
    assert len(np.unique(h1)) == len(np.unique(h2)) == 200_000
    assert (h1 != h2).all()
    # the bits are balanced: each of the 64 is set in about half the hashes
    bits = np.unpackbits(h1.view(np.uint8)).reshape(-1, 64).mean(axis=0)
    assert (abs(bits - 0.5) < 0.01).all()
