"""The fixed windows' compiled sums (numba) give what the numpy calls give, to the last bit."""

import itertools

import numpy as np
import pyarrow as pa
import pytest

from headrace.streams.operators import HoppingWindow, TumblingWindow, window_kernel
from headrace.streams.operators import aggregations as agg


def _trace(seed: int, n: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    seconds = np.cumsum(rng.exponential(0.3, n)) + rng.uniform(-20, 20, n)  # disorder
    fee = rng.lognormal(0.0, 1.0, n) * 10.0 ** rng.integers(-8, 9, n)  # sums that round
    return pa.table(
        {
            "ts": pa.array((seconds * 1e6).astype(np.int64), pa.timestamp("us", tz="UTC")),
            "fee": fee,
            "qty": rng.integers(-(10**12), 10**12, n),
        }
    )


def _run(make, table: pa.Table, cuts: list[int]) -> tuple[list[pa.Table], dict]:
    window, out = make(), []
    for a, b in itertools.pairwise(cuts):
        emit = window.process(table.slice(a, b - a))
        out += [emit.main, emit.late]
        window.changes()
    out.append(window.flush().main)
    return out, window.snapshot()


AGGS = {
    "n": lambda: {"n": agg.count(), "total": agg.sum("fee"), "avg": agg.mean("fee")},
    "int-mean": lambda: {"n": agg.count("qty"), "avg": agg.mean("qty"), "s": agg.sum("fee")},
    "int-sum": lambda: {"n": agg.count(), "s": agg.sum("qty")},  # numpy calls: stays int64
}


@pytest.mark.parametrize("aggs", sorted(AGGS))
@pytest.mark.parametrize("kind", ["tumbling", "hopping"])
@pytest.mark.parametrize("seed", range(3))
def test_compiled_sums_equal_the_numpy_calls(aggs, kind, seed, monkeypatch):
    if window_kernel.compiled() is None:
        pytest.skip("numba is not installed (headrace[fast])")
    table = _trace(seed, 6_000)
    rng = np.random.default_rng(seed + 100)
    cuts = [0, *np.sort(rng.choice(np.arange(1, 6_000), 40, replace=False)).tolist(), 6_000]

    def make():
        common = {"time_column": "ts", "aggs": AGGS[aggs](), "delay": 5, "grace": 3}
        if kind == "tumbling":
            return TumblingWindow(60, **common)
        return HoppingWindow(60, 20, **common)

    loop, calls = window_kernel.compiled(), []

    def counted(*args):
        calls.append(1)
        return loop(*args)

    with monkeypatch.context() as m:
        m.setattr(window_kernel, "compiled", lambda: counted)
        compiled = _run(make, table, cuts)
    assert calls  # the compiled loop summed
    with monkeypatch.context() as m:
        m.setattr(window_kernel, "compiled", lambda: None)
        numpy = _run(make, table, cuts)
    assert len(compiled[0]) == len(numpy[0])
    for got, want in zip(compiled[0], numpy[0], strict=True):
        assert (got is None and want is None) or got.equals(want)
    assert compiled[1].keys() == numpy[1].keys()
    for name in compiled[1]:
        assert compiled[1][name].equals(numpy[1][name]), name
    assert sum(t.num_rows for t in compiled[0][::2] if t is not None) > 20  # windows came
