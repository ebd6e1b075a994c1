"""Scale-out figures, each against its baseline in the same run, rounds interleaved:

1. durable no-op invocations per second with 1, 2 and 3 coordinators (`headrace up`, 2 local
   workers each) sharing one PostgreSQL ledger at 127.0.0.1 (a fresh database per round);
   baseline: one coordinator.
2. trigger latency, from a completed write to the handler's start, with the buckets on S3
   (SeaweedFS on 127.0.0.1) detected by listing every `poll_interval` (`s3`) and by listing
   woken by the filer's notifications (`s3-notify`, `storage_notifications`), and in local
   folders (inotify); baseline: local folders, and `s3` for `s3-notify`.

    .venv/bin/python benchmarks/scale_out.py [--n 3000] [--rounds 2] [--files 40]
        [--poll-interval 0.2] [--latency-only]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _coordinator import Coordinator

from headrace.ledger import Ledger, NewInvocation

HERE = Path(__file__).resolve().parent
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
START_TIMEOUT = 300  # the machine may be loaded: a start is not what is measured


@contextlib.contextmanager
def fresh_database():
    import psycopg

    name = f"headrace_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def invocations_per_second(coordinators: int, n: int, workdir: Path) -> float:
    with fresh_database() as url, contextlib.ExitStack() as stack:
        Ledger(url).close()  # the schema, before the coordinators race to create it
        for i in range(coordinators):
            home = workdir / f"c{coordinators}-{i}-{uuid.uuid4().hex[:6]}"
            stack.enter_context(
                Coordinator(
                    home,
                    start_timeout=START_TIMEOUT,
                    HEADRACE_LEDGER=url,
                    HEADRACE_WORKERS="2",
                )
            )
        ledger = Ledger(url)
        started = time.perf_counter()
        ledger.enqueue(NewInvocation("noop", {}, max_attempts=1, source="api") for _ in range(n))
        while ledger.count_by_status("noop").get("succeeded", 0) < n:
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        ledger.close()
    return n / elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def trigger_latencies(
    kind: str, files: int, workdir: Path, seaweed, poll_interval: float = 0.2
) -> list[float]:
    home = workdir / f"{kind}-{uuid.uuid4().hex[:6]}"
    env = {"HEADRACE_POLL_INTERVAL": str(poll_interval)}
    fs = None
    if kind in ("s3", "s3-notify"):
        import s3fs

        root = f"bench-{uuid.uuid4().hex[:8]}"
        fs = s3fs.S3FileSystem(
            key=seaweed.env["AWS_ACCESS_KEY_ID"],
            secret=seaweed.env["AWS_SECRET_ACCESS_KEY"],
            endpoint_url=seaweed.endpoint,
            skip_instance_cache=True,
        )
        fs.mkdir(root)
        env.update(seaweed.env, HEADRACE_STORAGE=f"s3://{root}")
        if kind == "s3-notify":
            env["HEADRACE_STORAGE_NOTIFICATIONS"] = seaweed.notifications
    closed: dict[str, float] = {}
    with Coordinator(home, start_timeout=START_TIMEOUT, **env):
        for i in range(files):
            key = f"f{i:05d}.dat"
            if fs is not None:
                fs.pipe(f"{env['HEADRACE_STORAGE']}/landing/{key}", b"x" * 4096)
            else:
                with open(home / "buckets" / "landing" / key, "wb") as fh:
                    fh.write(b"x" * 4096)
            closed[key] = time.time()
            time.sleep(0.1)
        ledger = Ledger(f"sqlite:///{home / 'ledger.db'}")
        deadline = time.time() + 120
        while ledger.count_by_status("stamp").get("succeeded", 0) < files:
            if time.time() > deadline:
                raise RuntimeError(f"{kind}: not every file triggered: {ledger.count_by_status()}")
            time.sleep(0.1)
        rows = ledger.list_invocations(function="stamp", limit=files + 10)
        ledger.close()
    return [
        (json.loads(r["result"])["started"] - closed[json.loads(r["result"])["key"]]) * 1000
        for r in rows
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--poll-interval", type=float, default=0.2)
    parser.add_argument("--latency-only", action="store_true", help="skip figure 1")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parent))  # the S3 server the tests start (tests/seaweed.py)
    from tests import seaweed as sw

    rates: dict[int, list[float]] = {1: [], 2: [], 3: []}
    latency: dict[str, list[float]] = {"local": [], "s3": [], "s3-notify": []}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        server = sw.start(workdir / "seaweed")
        try:
            for round_ in range(args.rounds):
                order = [1, 2, 3] if round_ % 2 == 0 else [3, 2, 1]
                for k in order if not args.latency_only else []:
                    rates[k].append(invocations_per_second(k, args.n, workdir))
                    print(f"round {round_}: {k} coordinator(s): {rates[k][-1]:.0f}/s", flush=True)
                kinds = ["local", "s3", "s3-notify"]
                for kind in kinds if round_ % 2 == 0 else kinds[::-1]:
                    latency[kind] += trigger_latencies(
                        kind, args.files, workdir, server, args.poll_interval
                    )
                    print(f"round {round_}: {kind}: p50 {percentile(latency[kind], 50):.1f} ms")
        finally:
            server.stop()
    base = statistics.median(rates[1]) if rates[1] else 1.0
    if rates[1]:
        print("\n| coordinators | invocations/s (median, min-max) | vs 1 |\n|---:|---:|---:|")
    for k, values in rates.items() if rates[1] else []:
        print(
            f"| {k} | {statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f}) "
            f"| {statistics.median(values) / base:.2f}x |"
        )
    print(f"\npoll_interval {args.poll_interval} s")
    print("\n| buckets | p50 ms | p90 ms | p99 ms | vs local p50 |\n|---|---:|---:|---:|---:|")
    local_p50 = percentile(latency["local"], 50)
    for kind, values in latency.items():
        print(
            f"| {kind} | {percentile(values, 50):.1f} | {percentile(values, 90):.1f} "
            f"| {percentile(values, 99):.1f} | {percentile(values, 50) / local_p50:.1f}x |"
        )
    out = HERE / "results" / "scale_out.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {"invocations_per_s": rates, "trigger_ms": latency, "date": time.strftime("%F")},
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
