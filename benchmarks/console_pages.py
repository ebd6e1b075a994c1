"""How fast each console page becomes interactive, measured in the browser (Chromium through
Playwright), on a big ledger and on a small one in the same run.

The big ledger: 100,000 invocations (with their attempts), 10,000 executions (six history
events each), 10,000 dataset runs and one open (RUNNING) execution of a 10,000-item Map, whose
history is the real one the interpreter writes (`headrace.workflows.execute`, every 17th item's
Task fails and is caught). The baseline: the same pages on a small ledger (1,000 invocations,
100 executions, 100 dataset runs, a 100-item Map). The console is served by the coordinator's
HTTP server (`serve_metrics`) over
each ledger. A page's time runs from the hash change that asks for it to the moment its data is
drawn and it takes input (the shell sets `body[data-ready]`); rounds alternate between the two
ledgers. The first visit of the 10,000-item Map is reported apart: it folds the whole history
once, in the background, 2,000 events at a time: the page is drawn and takes input at once, the
states are painted as far as the fold got (first paint) and then further until the whole
history is folded (later visits and live updates fold only what is new). Also timed, in the
server: one whole fold of the open Map as the console reads it (each event's outline, which the
database extracts) against the baseline of every event's details parsed in Python.

    .venv/bin/python benchmarks/console_pages.py [--rounds 5] [--invocations 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from sqlalchemy import insert, select

from headrace.config import load_settings
from headrace.console import Console, ConsoleContext
from headrace.ledger import Ledger, dataset_runs
from headrace.ledger.schema import attempts, executions, history, invocations
from headrace.server.metrics import Metrics, serve_metrics
from headrace.workflows import execute

HERE = Path(__file__).resolve().parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

MAP = {
    "StartAt": "Fan",
    "States": {
        "Fan": {
            "Type": "Map",
            "ItemsPath": "$.items",
            "MaxConcurrency": 0,
            "ItemSelector": {"n.$": "$$.Map.Item.Value"},
            "ItemProcessor": {
                "StartAt": "Work",
                "States": {
                    "Work": {
                        "Type": "Task",
                        "Resource": "headrace:function:work",
                        "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Skip"}],
                        "End": True,
                    },
                    "Skip": {"Type": "Pass", "End": True},
                },
            },
            "ResultPath": "$.out",
            "Next": "Done",
        },
        "Done": {"Type": "Succeed"},
    },
}
SMALL = {"StartAt": "A", "States": {"A": {"Type": "Pass", "End": True}}}


def work(event):
    if event["n"] % 17 == 16:
        raise ValueError(f"{event['n']} fails")
    return event["n"] + 1


def fill(ledger: Ledger, n_invocations: int, n_executions: int, map_items: int) -> str:
    now = time.time()
    rng = random.Random(1)
    functions = [f"fn_{i}" for i in range(12)]
    statuses = ["succeeded"] * 17 + ["dead", "pending", "running"]
    with ledger.begin() as conn:
        for start in range(0, n_invocations, 10_000):
            inv, att = [], []
            for i in range(start, min(start + 10_000, n_invocations)):
                status = rng.choice(statuses)
                created = now - 86_400 + i * 86_400 / n_invocations
                iid = f"{i:08d}-0000-4000-8000-{rng.getrandbits(48):012x}"
                fn = rng.choice(functions)
                inv.append(
                    {
                        "id": iid,
                        "function": fn,
                        "payload": json.dumps({"n": i}),
                        "status": status,
                        "attempts": 1,
                        "max_attempts": 3,
                        "next_run_at": created,
                        "created_at": created,
                        "updated_at": created + 0.05,
                        "finished_at": created + 0.05,
                        "error": "ValueError: bad input" if status == "dead" else None,
                        "source": "object",
                        "idempotency_key": f"k{i}",
                    }
                )
                att.append(
                    {
                        "invocation_id": iid,
                        "number": 1,
                        "function": fn,
                        "status": "error" if status == "dead" else "ok",
                        "worker": "w1",
                        "started_at": created,
                        "finished_at": created + 0.05,
                        "duration_ms": 50.0,
                        "error": "ValueError: bad input" if status == "dead" else None,
                    }
                )
            conn.execute(insert(invocations), inv)
            conn.execute(insert(attempts), att)
        rows, events = [], []
        for i in range(n_executions):
            started = now - 86_400 + i * 86_400 / n_executions
            arn = f"arn:aws:states:local:000000000000:execution:small:run-{i:05d}"
            rows.append(
                {
                    "id": arn,
                    "name": f"run-{i:05d}",
                    "state_machine": "small",
                    "definition": json.dumps(SMALL),
                    "status": "SUCCEEDED",
                    "input": "{}",
                    "output": "{}",
                    "started_at": started,
                    "stopped_at": started + 1,
                }
            )
            for seq, (kind, details) in enumerate(
                [
                    ("ExecutionStarted", {"input": {}}),
                    ("PassStateEntered", {"name": "A", "input": {}}),
                    ("PassStateExited", {"name": "A", "output": {}}),
                    ("ExecutionSucceeded", {"output": {}}),
                ],
                start=1,
            ):
                events.append(
                    {
                        "execution_id": arn,
                        "seq": seq,
                        "type": kind,
                        "timestamp": started,
                        "scope": "",
                        "details": json.dumps(details),
                    }
                )
        conn.execute(insert(executions), rows)
        for start in range(0, len(events), 20_000):
            conn.execute(insert(history), events[start : start + 20_000])
    fill_dataset_runs(ledger, n_executions, now)
    # the open Map: its real history, cut before its last events so it is still running
    result = execute(MAP, {"items": list(range(map_items))}, resources={"work": work})
    kept = [e for e in result.history if e["type"] not in ("MapStateSucceeded",)]
    kept = kept[: int(len(kept) * 0.9)]
    arn = "arn:aws:states:local:000000000000:execution:big:map-open"
    with ledger.begin() as conn:
        conn.execute(
            insert(executions),
            [
                {
                    "id": arn,
                    "name": "map-open",
                    "state_machine": "big",
                    "definition": json.dumps(MAP),
                    "status": "RUNNING",
                    "input": json.dumps({"items": list(range(map_items))}),
                    "started_at": now,
                }
            ],
        )
        conn.execute(
            insert(history),
            [
                {
                    "execution_id": arn,
                    "seq": i,
                    "type": e["type"],
                    "timestamp": e["timestamp"],
                    "scope": e["scope"],
                    "details": json.dumps(e["details"]),
                }
                for i, e in enumerate(kept, start=1)
            ],
        )
    return arn


def fill_dataset_runs(ledger: Ledger, n: int, now: float) -> None:
    """`n` finished dataset runs as `headrace.data.runs` records them (one in 20 failed)."""
    dataset_runs.ensure_tables(ledger.engine)
    stages = json.dumps(
        [{"name": "ReadParquet->MapBatches(f)->WriteParquet", "tasks": 8, "total": 8, "rows": 8,
          "seconds": 1.5}]
    )  # fmt: skip
    rows = []
    for i in range(n):
        started = now - 86_400 + i * 86_400 / n
        failed = i % 20 == 19
        rows.append(
            {
                "id": f"{i:08d}-0000-4000-8000-000000000000",
                "name": f"script_{i % 7}.py",
                "job_id": None,
                "engine": "local",
                "action": "write_parquet",
                "status": "FAILED" if failed else "SUCCEEDED",
                "error": "UserFunctionError: MapBatches(f): ValueError" if failed else None,
                "steps": json.dumps(["ReadParquet", "MapBatches(f)", "WriteParquet"]),
                "stages": stages,
                "tasks_done": 8,
                "tasks_total": 8,
                "rows_out": 0 if failed else 800_000,
                "output": f"/data/out/{i}",
                "host": "bench",
                "pid": 1,
                "started_at": started,
                "updated_at": started + 1.5,
                "finished_at": started + 1.5,
            }
        )
    with ledger.begin() as conn:
        conn.execute(insert(dataset_runs.dataset_runs), rows)


def serve(home: Path) -> tuple[str, Ledger]:
    settings = load_settings(HERE, home=str(home), metrics="127.0.0.1:0")
    ledger = Ledger(settings.ledger_url)
    app = SimpleNamespace(
        name="bench",
        functions={},
        state_machines={"big": MAP, "small": SMALL},
        rules=[],
        buckets=[],
        sources={},
        pipelines={},
        streams={},
        feature_groups={},
    )
    console = Console(ConsoleContext(settings, app, ledger, None, lambda: ""))
    _, url = serve_metrics(Metrics(), "127.0.0.1:0", console)
    return url.removesuffix("/metrics"), ledger


def pages(map_arn: str, some_invocation: str) -> list[tuple[str, str]]:
    return [
        ("overview", "#/overview"),
        ("invocations", "#/invocations"),
        ("invocations, one function, dead", "#/invocations?function=fn_3&status=dead"),
        ("invocation", f"#/invocations/{some_invocation}"),
        ("executions", "#/executions"),
        ("executions, search", "#/executions?q=run-0999"),
        ("execution: 10,000-item Map (open)", f"#/executions/{map_arn}"),
        ("streams", "#/streams"),
        ("datasets", "#/datasets"),
        ("datasets, failed", "#/datasets?status=FAILED"),
        ("dataset run", "#/datasets/00000019-0000-4000-8000-000000000000"),
    ]


def go(page, hash_: str) -> None:
    page.evaluate(f"location.hash = {json.dumps(hash_)}")
    route = json.dumps(hash_.split("?")[0])
    page.wait_for_selector(f"body[data-ready={route}]", state="attached", timeout=60_000)


def measure(page, base: str, hash_: str) -> float:
    """ms from asking for the page (a hash change, as a click on a link) to the page drawn
    with its data and taking input."""
    if not page.url.startswith(base):
        page.goto(base + "/#/overview")
        page.wait_for_selector("body[data-ready]", state="attached", timeout=60_000)
    go(page, "#/streams" if hash_.startswith("#/overview") else "#/overview")
    page.evaluate("window.__pageTimes = []")
    go(page, hash_)
    times = page.evaluate("window.__pageTimes")
    return float(times[-1]["ms"])


def fold_times(ledger: Ledger, arn: str, rounds: int = 3) -> dict[str, float]:
    """Median ms of one whole fold of the open Map's history in the server, as the console
    reads it (each event's outline, extracted by the database) and as it read it before (every
    event's details parsed in Python, inputs and outputs included): the baseline."""
    from headrace.ledger import browse
    from headrace.workflows.graph import StatusFold

    def outline() -> None:
        with ledger.reader.connect() as conn:
            rows = browse.history_outline(conn, arn, 0)
        fold = StatusFold(MAP)
        fold.feed({"type": t, "scope": sc, "details": d} for _, t, sc, d in rows)
        fold.statuses()

    def whole() -> None:
        h = history.c
        with ledger.reader.connect() as conn:
            rows = conn.execute(
                select(h.seq, h.type, h.scope, h.details)
                .where(h.execution_id == arn)
                .order_by(h.seq)
            ).all()
        fold = StatusFold(MAP)
        fold.feed({"type": t, "scope": sc, "details": json.loads(d)} for _, t, sc, d in rows)
        fold.statuses()

    times: dict[str, list[float]] = {"outline": [], "details parsed (before)": []}
    for _ in range(rounds):  # paired, alternating
        for name, run in (("outline", outline), ("details parsed (before)", whole)):
            t0 = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - t0) * 1000)
    return {name: round(statistics.median(v), 1) for name, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--invocations", type=int, default=100_000)
    parser.add_argument("--executions", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=10_000)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="console-bench-"))
    sizes = {
        "big": (args.invocations, args.executions, args.items),
        "small": (args.invocations // 100, args.executions // 100, args.items // 100),
    }
    served = {}
    ledgers = {}
    for label, (n_inv, n_ex, items) in sizes.items():
        t0 = time.perf_counter()
        url, ledger = serve(tmp / label)
        arn = fill(ledger, n_inv, n_ex, items)
        some = ledger.list_invocations(limit=1)[0]["id"]
        served[label] = (url, arn, some)
        ledgers[label] = (ledger, arn)
        print(f"{label}: ledger filled in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    results: dict[str, dict[str, list[float]]] = {"big": {}, "small": {}}
    first_map: dict[str, float] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        for label, (url, arn, _) in served.items():  # the first look at the open Map
            started = time.perf_counter()
            drawn = measure(page, url, f"#/executions/{arn}")
            page.wait_for_selector(
                ".graph[data-painted='partial'], .graph[data-painted='yes']",
                state="attached",
                timeout=120_000,
            )
            first_paint = time.perf_counter()
            page.wait_for_selector(".graph[data-painted='yes']", state="attached", timeout=120_000)
            first_map[label] = {
                "interactive_ms": round(drawn, 1),
                "first_paint_ms": round((first_paint - started) * 1000, 1),
                "painted_ms": round((time.perf_counter() - started) * 1000, 1),
            }
        folds = {label: fold_times(ledger, arn) for label, (ledger, arn) in ledgers.items()}
        for _ in range(args.rounds):
            for label, (url, arn, some) in served.items():
                for name, hash_ in pages(arn, some):
                    results[label].setdefault(name, []).append(measure(page, url, hash_))
        browser.close()
    out = {
        "date": time.strftime("%Y-%m-%d"),
        "load_average_at_end": os.getloadavg(),
        "rounds": args.rounds,
        "first_visit_of_the_open_map_ms": first_map,
        "whole_fold_in_the_server_ms": folds,
        "pages": {},
    }
    print(f"{'page':40} {'big ledger ms':>16} {'small ms':>10} {'ratio':>6}")
    for name in results["big"]:
        big = statistics.median(results["big"][name])
        small = statistics.median(results["small"][name])
        out["pages"][name] = {
            "big_median_ms": round(big, 1),
            "big_max_ms": round(max(results["big"][name]), 1),
            "small_median_ms": round(small, 1),
        }
        print(
            f"{name:40} {big:10.1f} (max {max(results['big'][name]):5.0f})"
            f" {small:10.1f} {big / small:6.2f}"
        )
    print(f"first visit of the open Map: {first_map}")
    print(f"a whole fold in the server (outline vs every event's details parsed): {folds}")
    print(f"load average at the end: {os.getloadavg()}")
    folder = HERE / "results"
    folder.mkdir(exist_ok=True)
    (folder / "console_pages.json").write_text(json.dumps(out, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
