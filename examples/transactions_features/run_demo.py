"""`make run`, part 3: the transactions pipeline on embedded defaults, a short version.

Starts a local simulator of the unconfirmed-transactions API whose clock runs `SPEED` times
faster than the wall clock (so minutes of event time pass in seconds), runs the coordinator with
the app of `transactions.py` for `SECONDS`, then prints where the archive and the feature tables
are, a SQL query over the offline history, an online read and the pipeline's counters.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

HERE = Path(__file__).resolve().parent
#: The query the closing hint suggests: a whole command, runnable as printed.
TRY_QUERY = "SELECT window_start, tx_count, avg_fee FROM tx_minute ORDER BY 1 DESC LIMIT 5"
sys.path.insert(0, str(HERE))

from headrace.app import load_app  # noqa: E402
from headrace.config import load_settings  # noqa: E402
from headrace.features.store import open_app_store  # noqa: E402
from headrace.server.coordinator import Coordinator  # noqa: E402
from headrace.streams.simulator import Simulator  # noqa: E402

console = Console()
SPEED = 30.0  # simulated seconds per wall second
RATE = 2.0  # transactions per simulated second


def accelerated_clock(speed: float):  # type: ignore[no-untyped-def]
    start = time.time()
    return lambda: start + (time.time() - start) * speed


def main(seconds: float = 20.0) -> int:
    settings = load_settings(HERE)
    shutil.rmtree(settings.home, ignore_errors=True)  # every demo run starts clean
    with Simulator(rate_per_s=RATE, seed=7, clock=accelerated_clock(SPEED)) as simulator:
        os.environ["TX_API_URL"] = simulator.url
        app = load_app(settings)
        for source in app.sources.values():
            source.source.interval = 0.5  # two polls per wall second: overlapping answers
        coordinator = Coordinator(settings, app)
        thread = threading.Thread(target=coordinator.run, kwargs={"drain_timeout": 30}, daemon=True)
        thread.start()
        coordinator.ready.wait(60)
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"))
        with Progress(*columns, TimeRemainingColumn(), console=console) as progress:
            task = progress.add_task("streaming", total=seconds, info="")
            started = time.time()
            while time.time() - started < seconds:
                status = coordinator.streams.runners[0].status
                info = (
                    f"polled {simulator.requests} times · {status.records:,} records read · "
                    f"{status.late} late"
                )
                progress.update(task, completed=time.time() - started, info=info)
                time.sleep(0.25)
        coordinator.stop()
        thread.join(60)
    return report(settings, app)


def report(settings, app) -> int:  # type: ignore[no-untyped-def]
    store = open_app_store(settings, app)
    minutes = store.query(
        "SELECT window_start, window_end, tx_count, total_fee, round(avg_fee, 1) AS avg_fee "
        "FROM tx_minute ORDER BY window_start"
    )
    view = Table(title=f"tx_minute (offline, Delta Lake): {minutes.num_rows} minutes")
    for name in minutes.column_names:
        view.add_column(name, justify="right")
    for row in minutes.to_pylist()[-8:]:
        view.add_row(*(str(v) for v in row.values()))
    console.print(view)
    archived = store.query("SELECT count(*) AS n, count(DISTINCT hash) AS d FROM tx_archive")
    n, distinct = archived["n"][0].as_py(), archived["d"][0].as_py()
    console.print(f"archived transactions: {n:,} ({distinct:,} distinct hashes)")
    compaction = store.compact("tx_minute")  # the schedule does this every 5 minutes
    console.print(
        f"compaction: {compaction.files_removed} small offline files → {compaction.files_added} "
        f"(Delta version {compaction.version_before} → {compaction.version_after})"
    )
    online = store.get_online("tx_minute", ["bitcoin"])
    console.print(f"online read tx_minute['bitcoin']: {online[0]}")
    root = Path(settings.storage_url)
    # paths and commands on one line whatever the width, so that each pastes whole
    archive = root / "archive"
    console.print(f"Archive (Parquet, date=/hour= partitions): [bold]{archive}[/]", soft_wrap=True)
    features = settings.features_url
    console.print(f"Feature store (Delta Lake, SQLite online): [bold]{features}[/]", soft_wrap=True)
    console.print(f"Try: cd {HERE} && headrace streams stats", soft_wrap=True)
    console.print(f"     cd {HERE} && headrace query '{TRY_QUERY}'", soft_wrap=True)
    ok = minutes.num_rows > 0 and n == distinct and online[0] is not None
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1]) if len(sys.argv) > 1 else 20.0))
