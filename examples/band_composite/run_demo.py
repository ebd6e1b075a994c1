"""`make run`, second part: the band composite state machine on embedded defaults.

Cuts the Landsat 8 scene of ../shared into cells (or generates rasters on a fresh clone), starts
the coordinator, starts one execution of `band_composite.asl.json` over the cells, follows its
Map iterations, then shows the composites, the task-log rows and the notifications.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cells import make_cells  # noqa: E402

from headrace.app import load_app  # noqa: E402
from headrace.config import load_settings  # noqa: E402
from headrace.ledger import Ledger  # noqa: E402
from headrace.server.coordinator import Coordinator  # noqa: E402
from headrace.tables import Tables  # noqa: E402
from headrace.workflows import api  # noqa: E402

console = Console()


def main(extra_cells: list[dict] | None = None) -> int:
    settings = load_settings(HERE)
    shutil.rmtree(settings.home, ignore_errors=True)
    app = load_app(settings)
    cells, source = make_cells(settings.home / "inputs")
    cells += extra_cells or []
    console.print(f"{len(cells)} cells from {source}")
    coordinator = Coordinator(settings, app)
    runner = threading.Thread(target=coordinator.run, kwargs={"drain_timeout": 60}, daemon=True)
    runner.start()
    coordinator.ready.wait(60)
    ledger = Ledger(settings.ledger_url)
    arn = api.start_execution(
        ledger, app, "band-composite", {"cells": cells, "output_bucket": "composites"}
    )
    with Progress(console=console) as progress:
        task = progress.add_task("cells", total=len(cells))
        while (row := api.describe_execution(ledger, arn))["status"] == "RUNNING":
            done = sum(
                e["type"] in ("MapIterationSucceeded", "MapIterationFailed")
                for e in api.get_history(ledger, arn)
            )
            progress.update(task, completed=done)
            time.sleep(0.3)
        progress.update(task, completed=len(cells))
    coordinator.stop()
    runner.join(60)
    console.print(f"\nexecution [bold]{row['status']}[/]: {arn}")
    _show(settings, ledger, row)
    ledger.close()
    return 0 if row["status"] == "SUCCEEDED" else 1


def _show(settings, ledger: Ledger, row: dict) -> None:  # type: ignore[no-untyped-def]
    out = Path(settings.storage_url) / "composites"
    view = Table(title="task log (composite-tasklog)")
    for col in ("cell", "status", "output", "size", "bytes", "seconds"):
        view.add_column(col)
    for item in sorted(Tables(ledger).scan("composite-tasklog")["Items"], key=lambda i: i["cell"]):
        view.add_row(
            item["cell"],
            item["status"],
            item["output"],
            f"{item['width']}x{item['height']}",
            str(item["bytes"]),
            str(item["seconds"]),
        )
    console.print(view)
    failed = [r for r in row["output"] or [] if r.get("status") == "FAILED"]
    for r in failed:
        console.print(f"[red]cell {r['cell']} failed[/]: {r['error']}")
    notices = settings.home / "notices"
    # paths and commands on one line whatever the width, so that each pastes whole
    console.print(f"Composites (COG): [bold]{out}[/]", soft_wrap=True)
    console.print(f"Notifications:    {notices}", soft_wrap=True)
    for path in sorted(notices.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            console.print(f"  {path.name}: {json.loads(line).get('Subject', '')}")
    console.print(f"History:          cd {HERE} && headrace history {row['name']}", soft_wrap=True)


if __name__ == "__main__":
    sys.exit(main())
