"""Trigger latency: from a completed file write (close) to the start of the handler.

A plain program writes files one at a time into the watched `landing` bucket of a running
`headrace up` (default settings: inotify watcher, SQLite ledger, local workers); the handler
returns `time.time()` at its start. Latency = handler start - the writer's close() returning.

    .venv/bin/python benchmarks/trigger_latency.py [--files 300] [--gap 0.02]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _coordinator import Coordinator

from headrace.ledger import Ledger


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        closed: dict[str, float] = {}
        with Coordinator(home):
            landing = home / "buckets" / "landing"
            for i in range(args.files):
                key = f"f{i:05d}.dat"
                with open(landing / key, "wb") as fh:
                    fh.write(b"x" * 4096)
                closed[key] = time.time()
                time.sleep(args.gap)
            ledger = Ledger(f"sqlite:///{home / 'ledger.db'}")
            deadline = time.time() + 60
            while time.time() < deadline:
                if ledger.count_by_status("stamp").get("succeeded", 0) >= args.files:
                    break
                time.sleep(0.1)
            rows = ledger.list_invocations(function="stamp", limit=args.files + 10)
            ledger.close()
    latencies = []
    for row in rows:
        result = json.loads(row["result"])
        latencies.append((result["started"] - closed[result["key"]]) * 1000)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(f"\nTrigger latency, {len(latencies)} files, close() -> handler start")
    print("| p50 ms | p90 ms | p99 ms | max ms | mean ms |\n|---:|---:|---:|---:|---:|")
    print(
        f"| {p50:.2f} | {percentile(latencies, 90):.2f} | {p99:.2f} | {max(latencies):.2f} "
        f"| {statistics.mean(latencies):.2f} |"
    )
    out = Path(__file__).resolve().parent / "results" / "trigger_latency.json"
    out.parent.mkdir(exist_ok=True)
    record = {"files": len(latencies), "p50_ms": p50, "p99_ms": p99, "date": time.strftime("%F")}
    out.write_text(json.dumps(record, indent=2))
    return 0 if len(latencies) == args.files else 1


if __name__ == "__main__":
    sys.exit(main())
