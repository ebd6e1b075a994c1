"""Append and read throughput of the stream log backends, in records/s.

Two workloads of small records (id int64, station string, value float64, event time):
- bulk: 1,000,000 records appended in batches of 10,000, then read back from offset 0 with
  `read(partition, offset, 10_000)` until the end;
- small batches: 100,000 records appended in batches of 10, read back the same way (each read
  then assembles 1,000 stored batches).

Each backend is measured against its floor, in the same run: the same Arrow IPC bytes written and
read with no log bookkeeping (embedded: one Arrow IPC stream file; Redis: XADD with automatic ids
and XRANGE; NATS: JetStream publish and a pull consumer). The difference is what headrace's
offsets, idempotency bookkeeping and read assembly cost.

    .venv/bin/python benchmarks/stream_log.py [--records 1000000] [--batch 10000] [--runs 3]
        [--small-records 100000] [--small-batch 10] [--backends embedded,redis,nats]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from headrace.streams import open_log
from headrace.streams.log import decode_batch, encode_batch, stamp_ingest_time

URLS = {"redis": "redis://127.0.0.1:6379/0", "nats": "nats://127.0.0.1:4222"}
READ_CHUNK = 10_000


def make_records(n: int) -> pa.Table:
    rng = np.random.default_rng(42)
    ids = np.arange(n, dtype=np.int64)
    stations = pa.array([f"st-{i:04d}" for i in range(500)]).take(pa.array(rng.integers(0, 500, n)))
    event_ms = 1_700_000_000_000 + ids * 1000
    return pa.table(
        {
            "id": ids,
            "station": stations,
            "value": rng.normal(size=n),
            "event_time": pa.array(event_ms).cast(pa.timestamp("ms", tz="UTC")),
        }
    )


def batches_of(table: pa.Table, size: int) -> list[pa.Table]:
    return [table.slice(i, size) for i in range(0, table.num_rows, size)]


def measure_log(url: str, batches: list[pa.Table]) -> tuple[float, float]:
    """(append records/s, read records/s) through headrace's StreamLog."""
    records = sum(b.num_rows for b in batches)
    log = open_log(url, f"bench{uuid.uuid4().hex[:10]}", partitions=1)
    try:
        started = time.perf_counter()
        for batch in batches:
            log.append(batch)
        appended = time.perf_counter() - started
        started = time.perf_counter()
        offset = 0
        while offset < records:
            offset += log.read(0, offset, READ_CHUNK).num_rows
        read = time.perf_counter() - started
    finally:
        log.drop()
    return records / appended, records / read


def _encoded(batch: pa.Table) -> bytes:
    return encode_batch(stamp_ingest_time(batch, datetime.now(UTC)))


def floor_embedded(batches: list[pa.Table], folder: Path) -> tuple[float, float]:
    """The same batches through one Arrow IPC stream file."""
    records = sum(b.num_rows for b in batches)
    path = folder / f"floor-{uuid.uuid4().hex[:8]}.arrows"
    started = time.perf_counter()
    writer = None
    with pa.OSFile(str(path), "wb") as sink:
        for batch in batches:
            stamped = stamp_ingest_time(batch, datetime.now(UTC))
            if writer is None:
                writer = pa.ipc.new_stream(sink, stamped.schema)
            writer.write_table(stamped)
        writer.close()
    appended = time.perf_counter() - started
    started = time.perf_counter()
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_stream(source).read_all()
        assert table.num_rows == records
    read = time.perf_counter() - started
    path.unlink()
    return records / appended, records / read


def floor_redis(batches: list[pa.Table]) -> tuple[float, float]:
    """The same IPC bytes with XADD (automatic ids) and XRANGE, no offsets or bookkeeping."""
    import redis

    records = sum(b.num_rows for b in batches)
    client = redis.Redis.from_url(URLS["redis"])
    key = f"headrace:bench:floor:{uuid.uuid4().hex[:8]}"
    try:
        started = time.perf_counter()
        for batch in batches:
            client.xadd(key, {"data": _encoded(batch)})
        appended = time.perf_counter() - started
        started = time.perf_counter()
        got, low = 0, "-"
        while True:
            entries = client.xrange(key, low, "+", count=256)
            got += sum(decode_batch(fields[b"data"]).num_rows for _, fields in entries)
            if len(entries) < 256:
                break
            low = "(" + entries[-1][0].decode()
        read = time.perf_counter() - started
        assert got == records
    finally:
        client.delete(key)
        client.close()
    return records / appended, records / read


def floor_nats(batches: list[pa.Table]) -> tuple[float, float]:
    """The same IPC bytes with JetStream publish and one pull consumer, no offsets."""
    import nats
    from nats.js import api

    records = sum(b.num_rows for b in batches)

    async def run() -> tuple[float, float]:
        nc = await nats.connect(URLS["nats"])
        js = nc.jetstream()
        stream = f"headrace-bench-floor-{uuid.uuid4().hex[:8]}"
        subject = stream.replace("-", ".")
        await js.add_stream(name=stream, subjects=[subject])
        try:
            started = time.perf_counter()
            for batch in batches:
                await js.publish(subject, _encoded(batch))
            appended = time.perf_counter() - started
            started = time.perf_counter()
            config = api.ConsumerConfig(ack_policy=api.AckPolicy.NONE, mem_storage=True)
            sub = await js.pull_subscribe(subject, stream=stream, config=config)
            page = max(1, min(1000, (8 << 20) // len(_encoded(batches[0]))))
            got, messages = 0, 0
            while messages < len(batches):
                fetched = await sub.fetch(min(page, len(batches) - messages), timeout=10)
                messages += len(fetched)
                got += sum(decode_batch(m.data).num_rows for m in fetched)
            read = time.perf_counter() - started
            assert got == records
            await sub.unsubscribe()
        finally:
            await js.delete_stream(stream)
            await nc.close()
        return records / appended, records / read

    return asyncio.run(run())


def reachable(backend: str) -> bool:
    try:
        open_log(URLS[backend], f"bench{uuid.uuid4().hex[:8]}").drop()
        return True
    except Exception as exc:
        print(f"{backend} not reachable, skipped: {exc}")
        return False


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--small-records", type=int, default=100_000)
    parser.add_argument("--small-batch", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backends", default="embedded,redis,nats")
    args = parser.parse_args()

    backends = [b for b in args.backends.split(",") if b == "embedded" or reachable(b)]
    records = make_records(max(args.records, args.small_records))
    workloads = {
        f"bulk ({args.records:,} in batches of {args.batch:,})": batches_of(
            records.slice(0, args.records), args.batch
        ),
        f"small batches ({args.small_records:,} in batches of {args.small_batch})": batches_of(
            records.slice(0, args.small_records), args.small_batch
        ),
    }
    results: dict[str, dict[str, dict[str, list[float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        floors: dict[str, Callable[[list[pa.Table]], tuple[float, float]]] = {
            "embedded": lambda b: floor_embedded(b, folder),
            "redis": floor_redis,
            "nats": floor_nats,
        }
        for workload, batches in workloads.items():
            for backend in backends:
                url = f"embedded://{folder / 'streams'}" if backend == "embedded" else URLS[backend]
                for label, measure in (
                    (f"headrace {backend}", lambda b, url=url: measure_log(url, b)),
                    (f"floor {backend}", floors[backend]),
                ):
                    row = results.setdefault(workload, {}).setdefault(label, {})
                    for _ in range(args.runs):
                        append_rate, read_rate = measure(batches)
                        row.setdefault("append", []).append(append_rate)
                        row.setdefault("read", []).append(read_rate)
                    print(
                        f"{workload} | {label}: append {statistics.median(row['append']):,.0f}/s,"
                        f" read {statistics.median(row['read']):,.0f}/s",
                        flush=True,
                    )

    print(f"\nStream log throughput, records/s, median of {args.runs} runs (min-max)")
    for workload, rows in results.items():
        print(f"\n{workload}\n| backend | append | read |\n|---|---:|---:|")
        for label, rates in rows.items():
            cells = [
                f"{statistics.median(v):,.0f} ({min(v):,.0f}-{max(v):,.0f})"
                for v in (rates["append"], rates["read"])
            ]
            print(f"| {label} | {cells[0]} | {cells[1]} |")
    out = Path(__file__).resolve().parent / "results" / "stream_log.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps({"args": vars(args), "results": results, "date": time.strftime("%F")}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
