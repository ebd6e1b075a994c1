"""Tumbling-window count/sum/mean through the streaming engine vs Bytewax, same trace, same run.

    .venv/bin/python benchmarks/stream_window.py [--n 1000000] [--runs 3] [--batch N ...]
                                                 [--no-bytewax]

The trace is the anchor's (../shared/anchors/bytewax_window.py, seed 42): id, ts = 2024-01-01Z +
i*0.1 s + U(-2, 2) s, fee = lognormal(0, 1). Bytewax runs the anchor's own dataflow (60 s
tumbling `fold_window`, `EventClock` waiting 5 s, TestingSource batch_size=1000) in its own venv
(benchmarks/.venvs/bytewax, made on first use with the anchor's pins); its timing is the anchor's:
dataflow construction + `run_main`, input already in memory.

headrace's side is the whole engine with checkpoints on: the trace is first appended to an
embedded stream log (not timed, like Bytewax's input list), then one pipeline partition reads it
in micro-batches → dedup(id) → 60 s tumbling window (delay 5 s, like the anchor's clock) →
a sink, committing offsets and operator state to a SQLite ledger after every micro-batch.
Timed: from opening the pipeline to the last commit (flush included). Results are compared
window by window with Bytewax's, and across micro-batch sizes (100 to 100,000 by default): the
windows and the late records must be identical at every size.

Rounds interleave the sides (Bytewax, a batch size, Bytewax, the next batch size, ..., Bytewax);
each headrace run's ratio is against the mean of the Bytewax runs right before and after it, and
a batch size's figure is the median of its rounds' ratios. The first headrace run also loads
the compiled dedup kernel (`cold`: its time beside the warm runs of the same batch size).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

HERE = Path(__file__).resolve().parent
ANCHORS = HERE.parents[1] / "shared" / "anchors"
BYTEWAX_VENV = HERE / ".venvs" / "bytewax"
BYTEWAX_PINS = ["bytewax==0.21.1", "numpy==2.4.6"]  # ../shared/anchors/logs/freeze-bytewax.txt
ALIGN = datetime(2024, 1, 1, tzinfo=UTC)

BYTEWAX_DRIVER = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from bytewax_window import make_data, build_flow
import bytewax.operators as op
from bytewax.testing import TestingSink, run_main
n, runs = int(sys.argv[2]), int(sys.argv[3])
rows, _, _ = make_data(n)
times = []
for _ in range(runs):
    out, late_out = [], []
    start = time.perf_counter()
    flow, late = build_flow(rows, out, 1000, True)
    op.output("late_out", late, TestingSink(late_out))
    run_main(flow)
    times.append(time.perf_counter() - start)
# out items: (window id, count, sum, mean)
print(json.dumps({"times": times, "late": len(late_out), "windows": [[o[1], o[2]] for o in out]}))
"""


def make_trace(n: int) -> pa.Table:
    """The anchor's `make_data`, columnar (same generator calls, so the same numbers)."""
    rng = np.random.default_rng(42)
    offsets = np.arange(n) * 0.1 + rng.uniform(-2.0, 2.0, n)
    fee = rng.lognormal(0.0, 1.0, n)
    micros = np.round((ALIGN.timestamp() + offsets) * 1e6).astype("int64")
    return pa.table(
        {
            "id": pa.array(np.arange(n), pa.int64()),
            "ts": pa.array(micros, pa.timestamp("us", tz="UTC")),
            "fee": pa.array(fee, pa.float64()),
        }
    )


def bytewax_side(n: int, runs: int) -> dict:
    python = BYTEWAX_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(BYTEWAX_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *BYTEWAX_PINS], check=True)
    result = subprocess.run(
        [str(python), "-c", BYTEWAX_DRIVER, str(ANCHORS), str(n), str(runs)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def headrace_side(trace: pa.Table, batch_size: int, runs: int) -> dict:
    from headrace.ledger import Ledger
    from headrace.streams.log import open_log
    from headrace.streams.operators import aggregations as agg
    from headrace.streams.pipeline import Pipeline
    from headrace.streams.runner import PartitionRunner
    from headrace.streams.sinks import MemorySink, SinkContext

    times, out = [], None
    for run in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            log = open_log(str(Path(tmp) / "streams"), "trace")
            for start in range(0, trace.num_rows, 10_000):
                log.append(trace.slice(start, 10_000))
            ledger = Ledger(f"sqlite:///{tmp}/ledger.db")
            pipe = Pipeline("bench", "trace", batch_size=batch_size)
            pipe.dedup("id", ttl=600, time_column="ts")
            pipe.tumbling(
                60,
                time_column="ts",
                aggs={"count": agg.count(), "sum": agg.sum("fee"), "mean": agg.mean("fee")},
                delay=5,
                late=MemorySink("late"),
            )
            pipe.sink(MemorySink("windows"))
            runner = PartitionRunner(
                pipe, 0, log=log, ledger=ledger, context=SinkContext("bench", 0)
            )
            start = time.perf_counter()
            runner.open()
            runner.run_until_caught_up()
            runner.flush()
            times.append(time.perf_counter() - start)
            out = runner.stage("windows").table().sort_by("window_start")
            late = runner.status.late
            batches = runner.status.batches
            runner.close()  # a background compaction finishes before the ledger goes
            ledger.close()
            log.close()
        print(f"  headrace batch={batch_size:,} run {run + 1}: {times[-1]:.3f} s", flush=True)
    return {"times": times, "table": out, "late": late, "batches": batches}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, action="append", default=None)
    parser.add_argument("--no-bytewax", action="store_true")
    args = parser.parse_args()
    batches = args.batch or [100, 1_000, 10_000, 100_000]
    trace = make_trace(args.n)
    load_before = os.getloadavg()  # the machine's load: the ratios hold under it, not the times
    use_bytewax = not args.no_bytewax and (ANCHORS / "bytewax_window.py").exists()
    results: dict[str, dict] = {}
    ours: dict[int, dict] = {b: {"times": []} for b in batches}
    bw: dict = {"times": []}
    ratios: dict[int, list[float]] = {b: [] for b in batches}

    # Rounds interleave the sides: Bytewax, a batch size, Bytewax, the next batch size, ...,
    # Bytewax. Each headrace run's ratio is taken against the mean of the Bytewax runs just
    # before and just after it, so load from other work on this machine, which comes and goes
    # within minutes, weighs on both sides of a ratio alike.
    def anchor() -> float:
        once = bytewax_side(args.n, 1)
        bw["times"] += once["times"]
        bw["late"], bw["windows"] = once["late"], once["windows"]
        return once["times"][-1]

    for _ in range(args.runs):
        before = anchor() if use_bytewax else None
        for batch in batches:
            once = headrace_side(trace, batch, 1)
            ours[batch]["times"] += once["times"]
            ours[batch].update({k: v for k, v in once.items() if k != "times"})
            if before is not None:
                after = anchor()
                ratios[batch].append((before + after) / 2 / once["times"][-1])
                before = after
    for batch in batches:
        med = statistics.median(ours[batch]["times"])
        results[f"headrace micro-batch {batch:,}"] = {
            "seconds": med,
            "events_per_s": args.n / med,
            "checkpoints": ours[batch]["batches"],
            "late": ours[batch]["late"],
        }
    # the first run in this process also loads the compiled dedup kernel (numba, from its
    # cache; compiled the first time on a machine): the cold case, beside the warm median
    cold = ours[batches[0]]["times"][0]
    results["cold"] = {
        "batch": batches[0],
        "first_run_seconds": cold,
        "warm_median_seconds": statistics.median(ours[batches[0]]["times"][1:] or [cold]),
    }
    # record-order semantics: every batch size gives the same windows and the same late records
    # (float sums may differ in the last bits: the order of additions follows the cuts)
    first = ours[batches[0]]

    def same_windows(table: pa.Table) -> bool:
        keys = ("window_start", "window_end", "count")
        if not all(table[k].equals(first["table"][k]) for k in keys):
            return False
        mine, theirs = np.asarray(table["sum"]), np.asarray(first["table"]["sum"])
        return bool(np.allclose(mine, theirs, rtol=1e-12, atol=0))

    results["same_at_every_batch_size"] = {
        "windows_identical": all(same_windows(ours[b]["table"]) for b in batches),
        "late_identical": all(ours[b]["late"] == first["late"] for b in batches),
    }
    if use_bytewax:
        med = statistics.median(bw["times"])
        results["bytewax 0.21.1 (anchor, batch_size=1000)"] = {
            "seconds": med,
            "events_per_s": args.n / med,
            "late": bw["late"],
        }
        # same windows, same counts, same sums
        theirs = sorted((int(c), float(s)) for c, s in bw["windows"])
        table = ours[batches[-1]]["table"]
        mine = sorted(zip(table["count"].to_pylist(), table["sum"].to_pylist(), strict=True))
        same_counts = [c for c, _ in theirs] == [c for c, _ in mine]
        worst = max(
            (abs(a[1] - b[1]) / max(1.0, abs(a[1])) for a, b in zip(theirs, mine, strict=True)),
            default=0.0,
        )
        results["check"] = {
            "windows_bytewax": len(theirs),
            "windows_headrace": len(mine),
            "counts_identical": same_counts,
            "max_relative_sum_difference": worst,
        }
        for batch in batches:  # the median of the rounds' ratios
            entry = results[f"headrace micro-batch {batch:,}"]
            entry["ratio_vs_bytewax"] = statistics.median(ratios[batch])
            entry["ratios_by_round"] = ratios[batch]
    print(f"\n{'side':<44} {'seconds':>9} {'events/s':>14} {'vs bytewax':>11}")
    for key, value in results.items():
        if "seconds" in value:
            ratio = value.get("ratio_vs_bytewax")
            print(
                f"{key:<44} {value['seconds']:>9.3f} {value['events_per_s']:>14,.0f} "
                f"{(f'{ratio:.1f}x' if ratio else '-'):>11}"
            )
    for key in ("cold", "same_at_every_batch_size", "check"):
        if key in results:
            print(f"{key}:", results[key])
    load = {"before": load_before, "after": os.getloadavg(), "cpus": os.cpu_count()}
    print(f"load average (1, 5, 15 min) before {load['before']}, after {load['after']}")
    print(json.dumps({"n": args.n, "load": load, "results": results}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
