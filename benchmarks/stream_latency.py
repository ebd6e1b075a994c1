"""End-to-end latency: a record's arrival → its window's aggregate readable in the online store.

    .venv/bin/python benchmarks/stream_latency.py [--seconds 60] [--rate 2000] [--window 0.5]

The coordinator's stream service runs as in `headrace up` (its pipeline thread, checkpoints in a
SQLite ledger, embedded log, Delta + SQLite feature store). A producer thread publishes envelopes
to the bus at `--rate` per second with event time = arrival time; a rule routes them to a stream;
the pipeline computes tumbling-window count/sum per `--window` seconds with `--grace` and writes
each window to a feature group. A reader polls `get_online` every millisecond.

A window [start, end) can be final at the earliest when the first record with event time >=
end + grace arrives (the watermark passes), i.e. at wall time end + grace. Latency of a window =
(first time its aggregate is readable online) - (end + grace). Reported: p50, p99, max, and the
number of windows, plus whether every window's count equals the records published for it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa


def build_app(window: float, grace: float):  # type: ignore[no-untyped-def]
    from headrace import App
    from headrace.features import FeatureGroup
    from headrace.streams.operators import aggregations as agg

    app = App("latency")
    app.stream("events")
    app.rule({"source": ["bench"]}, target="stream:events")
    app.feature_group(
        FeatureGroup(
            "per_window",
            entity_keys=["key"],
            event_time="window_end",
            features={"n": pa.int64(), "total": pa.int64()},
        )
    )

    def entity(table: pa.Table) -> pa.Table:
        return table.append_column("key", pa.array(["all"] * table.num_rows, pa.string()))

    pipe = app.pipeline("latency", stream="events", batch_size=100_000)
    pipe.tumbling(
        window,
        time_column="_event_time",
        aggs={"n": agg.count(), "total": agg.sum("value")},
        grace=grace,
        late="events-late",
    )
    pipe.map(entity).to_features("per_window")
    app.stream("events-late")
    return app


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=2000.0, help="records per second")
    parser.add_argument("--window", type=float, default=0.5)
    parser.add_argument("--grace", type=float, default=0.1)
    args = parser.parse_args()

    from headrace.config import load_settings
    from headrace.events.envelope import PRECISE_TIME
    from headrace.ledger import Ledger
    from headrace.server.metrics import Metrics
    from headrace.server.streams import StreamService
    from headrace.storage import ObjectStore

    tmp = Path(tempfile.mkdtemp(prefix="headrace-latency-"))
    settings = load_settings(tmp, home=str(tmp / "home"))
    app = build_app(args.window, args.grace)
    ledger = Ledger(settings.ledger_url)
    service = StreamService(
        settings, app, ledger, ObjectStore(settings.storage_url), Metrics().streams, lambda f: None
    )
    service.start()
    store = service.features
    window_us = round(args.window * 1e6)
    published: Counter[int] = Counter()  # window end (µs) -> records
    seen: dict[int, tuple[float, int]] = {}  # window end (µs) -> (first seen, count)
    stop = threading.Event()

    def produce() -> None:
        per_tick = max(1, round(args.rate / 200))  # every 5 ms
        value = 0
        while not stop.is_set():
            now = time.time()
            events = []
            for _ in range(per_tick):
                value += 1
                events.append(
                    {
                        "id": str(value),
                        "source": "bench",
                        "detail-type": "Tick",
                        "time": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "detail": {"value": value % 1000},
                        PRECISE_TIME: datetime.fromtimestamp(now, UTC),
                    }
                )
            service.publish(events)
            micros = round(now * 1e6)
            published[(micros // window_us + 1) * window_us] += per_tick
            time.sleep(max(0.0, 0.005 - (time.time() - now)))

    def read() -> None:
        while not stop.is_set():
            row = store.get_online("per_window", ["all"])[0]
            if row is not None:
                end = round(row["window_end"].timestamp() * 1e6)
                if end not in seen:
                    seen[end] = (time.time(), row["n"])
            time.sleep(0.001)

    threads = [threading.Thread(target=produce), threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    time.sleep(args.seconds)
    stop.set()
    for thread in threads:
        thread.join()
    service.stop()
    ledger.close()

    ends = sorted(seen)[1:]  # the first window started mid-way
    latencies = sorted(
        (seen[end][0] - (end / 1e6 + args.grace)) * 1000 for end in ends if end in published
    )
    exact = sum(1 for end in ends if seen[end][1] == published.get(end))
    if not latencies:
        print("no window became visible")
        return 1
    p = (
        statistics.quantiles(latencies, n=100, method="inclusive")
        if len(latencies) > 1
        else latencies * 99
    )
    result = {
        "windows": len(latencies),
        "window_s": args.window,
        "grace_s": args.grace,
        "rate_per_s": args.rate,
        "p50_ms": statistics.median(latencies),
        "p99_ms": p[98],
        "max_ms": latencies[-1],
        "counts_exact": f"{exact}/{len(ends)}",
    }
    print(
        f"{result['windows']} windows of {args.window}s (grace {args.grace}s) at "
        f"{args.rate:,.0f} records/s: latency after close+grace p50 {result['p50_ms']:.1f} ms, "
        f"p99 {result['p99_ms']:.1f} ms, max {result['max_ms']:.1f} ms; "
        f"counts exact {result['counts_exact']}"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
