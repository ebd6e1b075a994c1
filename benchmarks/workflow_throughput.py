"""Workflow benchmarks through the durable driver of a running `headrace up` (SQLite ledger,
2 local workers).

1. State transitions per second: executions of a 100-state chain of Pass states, started
   together; transitions = states entered and exited, over the wall time until all succeeded.
2. A Map over 10,000 items with a trivial inner state, wall time from start to SUCCEEDED: with a
   Pass inner state, and with a Task calling a function (`x + 1`) in a worker, which is what
   the Prefect anchor does (`task.map` of x+1 over 10,000 items; Prefect 3.8.8 in its own
   virtualenv, benchmarks/.venvs/prefect, one run of the anchor's timed flow in the same run).

    .venv/bin/python benchmarks/workflow_throughput.py [--runs 3] [--items 10000] [--no-prefect]
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _coordinator import Coordinator
from invocation_throughput import ANCHOR, PREFECT_PINS, PREFECT_VENV

from headrace.app import load_app
from headrace.config import load_settings
from headrace.ledger import Ledger
from headrace.workflows import api

HERE = Path(__file__).resolve().parent
APP_DIR = HERE / "flows_app"


def run(kind: str, home: Path, *, executions: int = 1, items: int = 0) -> tuple[float, int]:
    settings = load_settings(APP_DIR, home=str(home))
    app = load_app(settings)
    with Coordinator(home, APP_DIR, HEADRACE_WORKERS="2"):
        ledger = Ledger(settings.ledger_url)
        started = time.perf_counter()
        data = {"items": list(range(items))} if items else {}
        arns = [api.start_execution(ledger, app, kind, data) for _ in range(executions)]
        rows = [api.wait_for(ledger, arn, timeout=900) for arn in arns]
        elapsed = time.perf_counter() - started
        assert all(r["status"] == "SUCCEEDED" for r in rows), rows[0]
        if kind == "map_task":
            assert rows[0]["output"] == [i + 1 for i in range(items)]
        events = sum(len(api.get_history(ledger, arn)) for arn in arns[:1]) * executions
        ledger.close()
    return elapsed, events


def prefect_seconds(items: int) -> float:
    python = PREFECT_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PREFECT_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PREFECT_PINS], check=True)
    with tempfile.TemporaryDirectory() as home:
        env = {
            "PREFECT_HOME": home,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PATH": "/usr/bin:/bin",
        }
        out = subprocess.run(
            [str(python), str(ANCHOR), "--child", str(items)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout
    return float(re.search(r"flow_s=([\d.]+)", out).group(1))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--chains", type=int, default=100)
    parser.add_argument("--no-prefect", action="store_true")
    args = parser.parse_args()
    results: dict[str, list[float]] = {"transitions_per_s": [], "map_pass_s": [], "map_task_s": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            elapsed, _ = run("chain", Path(tmp) / f"c{i}", executions=args.chains)
            results["transitions_per_s"].append(args.chains * 100 / elapsed)
            results["map_pass_s"].append(run("map_pass", Path(tmp) / f"p{i}", items=args.items)[0])
            results["map_task_s"].append(run("map_task", Path(tmp) / f"t{i}", items=args.items)[0])
    if not args.no_prefect and ANCHOR.exists():
        results["prefect_map_s"] = [prefect_seconds(args.items)]
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"\nWorkflows through the durable driver (SQLite, 2 workers), {args.runs} runs")
    print("| measure | median | min | max |\n|---|---:|---:|---:|")
    for k, v in results.items():
        print(f"| {k} | {med[k]:,.2f} | {min(v):,.2f} | {max(v):,.2f} |")
    if "prefect_map_s" in med:
        for k in ("map_pass_s", "map_task_s"):
            print(f"Prefect / headrace {k}: {med['prefect_map_s'] / med[k]:.1f}x")
    out = HERE / "results" / "workflow_throughput.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps({"items": args.items, "runs": results, "date": time.strftime("%F")}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
