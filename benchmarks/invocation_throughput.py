"""Durable no-op invocations per second through the coordinator.

Each invocation is queued in the ledger, leased, run in a worker process, and its attempt and
result recorded in the ledger, exactly as for a real function. Measured on SQLite (the default)
and on the PostgreSQL server at 127.0.0.1:5432, N invocations queued at once, 3 runs each.

Baseline, in the same run: the Prefect anchor of ../shared/anchors (`task.map` of x+1 in a flow,
each task run recorded by Prefect's local API in SQLite), in its own virtualenv
(benchmarks/.venvs/prefect, created on first use).

    .venv/bin/python benchmarks/invocation_throughput.py [--n 20000] [--runs 3]
        [--no-postgres] [--no-prefect]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _coordinator import Coordinator

from headrace.ledger import Ledger, NewInvocation

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
HERE = Path(__file__).resolve().parent
ANCHOR = HERE.parents[1] / "shared" / "anchors" / "prefect_map.py"
PREFECT_VENV = HERE / ".venvs" / "prefect"
PREFECT_PINS = ["prefect==3.8.8", "fastapi==0.154.0"]  # the anchor's versions (RESULTS.md)


def prefect_items_per_second(n: int) -> list[float]:
    """Run the anchor script (3 fresh processes) and return its items/s per repetition."""
    python = PREFECT_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PREFECT_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PREFECT_PINS], check=True)
    out = subprocess.run(
        [str(python), str(ANCHOR), str(n)], capture_output=True, text=True, check=True
    ).stdout
    return [float(m) for m in re.findall(r"\((\d+) items/s\)", out)]


def one_run(ledger_url: str | None, n: int, workdir: Path) -> float:
    home = workdir / f"home-{uuid.uuid4().hex[:6]}"
    env = {"HEADRACE_LEDGER": ledger_url} if ledger_url else {}
    with Coordinator(home, **env):
        ledger = Ledger(ledger_url or f"sqlite:///{home / 'ledger.db'}")
        started = time.perf_counter()
        ledger.enqueue(NewInvocation("noop", {}, max_attempts=1, source="api") for _ in range(n))
        while True:
            done = ledger.count_by_status("noop").get("succeeded", 0)
            if done >= n:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        ledger.close()
    return n / elapsed


def postgres_url() -> str | None:
    try:
        import psycopg

        name = f"headrace_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    except Exception as exc:
        print(f"PostgreSQL not reachable, skipped: {exc}")
        return None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-prefect", action="store_true")
    parser.add_argument("--prefect-n", type=int, default=1000)
    args = parser.parse_args()
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.runs):
            results.setdefault("sqlite", []).append(one_run(None, args.n, Path(tmp)))
            if not args.no_postgres:
                url = postgres_url()
                if url:
                    results.setdefault("postgres", []).append(one_run(url, args.n, Path(tmp)))
    if not args.no_prefect and ANCHOR.exists():
        results["prefect task.map (anchor)"] = prefect_items_per_second(args.prefect_n)
    print(f"\nDurable no-op invocations/s, N={args.n}, {args.runs} runs, 2 local workers")
    print("| ledger | median inv/s | min | max |\n|---|---:|---:|---:|")
    for name, values in results.items():
        med, lo, hi = statistics.median(values), min(values), max(values)
        print(f"| {name} | {med:,.0f} | {lo:,.0f} | {hi:,.0f} |")
    out = Path(__file__).resolve().parent / "results" / "invocation_throughput.json"
    out.parent.mkdir(exist_ok=True)
    if "prefect task.map (anchor)" in results:
        ratio = statistics.median(results["sqlite"]) / statistics.median(
            results["prefect task.map (anchor)"]
        )
        print(f"\nheadrace (SQLite) / Prefect: {ratio:.1f}x")
    record = {
        "n": args.n,
        "prefect_n": args.prefect_n,
        "runs": results,
        "date": time.strftime("%F"),
    }
    out.write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
