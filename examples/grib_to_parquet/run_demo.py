"""`make run`: the weather pipeline on embedded defaults, end to end.

Starts the coordinator, copies freshly encoded sample GRIB2 files into the landing bucket with a
plain file copy (as any other tool would), waits until each has its Parquet file in `curated/`,
then shows where the outputs are and a few rows of one.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from samples import write_sample_gribs  # noqa: E402

from headrace.app import load_app  # noqa: E402
from headrace.config import load_settings  # noqa: E402
from headrace.ledger import Ledger  # noqa: E402
from headrace.server.coordinator import Coordinator  # noqa: E402

console = Console()


def main(count: int = 8) -> int:
    settings = load_settings(HERE)
    shutil.rmtree(settings.home, ignore_errors=True)  # every demo run starts clean
    app = load_app(settings)
    coordinator = Coordinator(settings, app)
    runner = threading.Thread(target=coordinator.run, kwargs={"drain_timeout": 30}, daemon=True)
    runner.start()
    coordinator.ready.wait(60)
    landing = Path(settings.storage_url) / "landing"
    curated = Path(settings.storage_url) / "curated"
    with tempfile.TemporaryDirectory() as tmp:
        samples = write_sample_gribs(Path(tmp), count=count)
        console.print(f"encoded {len(samples)} sample GRIB2 files with ecCodes")
        with Progress(console=console) as progress:
            task = progress.add_task("GRIB → Parquet", total=len(samples))
            for path in samples:
                shutil.copy(path, landing / path.name)
            deadline = time.time() + 300
            done = 0
            while done < len(samples) and time.time() < deadline:
                stats = coordinator.stats
                done = stats.succeeded + stats.dead
                progress.update(task, completed=done)
                time.sleep(0.1)
    coordinator.stop()
    runner.join(60)
    stats = coordinator.stats
    ledger = Ledger(settings.ledger_url)
    dead = ledger.list_dead_letters()
    ledger.close()
    outputs = sorted(curated.rglob("*.parquet"))
    console.print(f"\n[bold]{stats.succeeded} converted, {stats.dead} failed[/]")
    # paths and commands on one line whatever the width, so that each pastes whole
    console.print(f"Parquet files: [bold]{curated}[/]", soft_wrap=True)
    for path in outputs:
        console.print(f"  {path.relative_to(curated)}  ({path.stat().st_size:,} bytes)")
    if outputs:
        _show(outputs[0])
    console.print(f"Ledger: {settings.ledger_url}", soft_wrap=True)
    console.print(f"Logs:   {settings.logs_dir}", soft_wrap=True)
    console.print(f"        cd {HERE} && headrace logs grib_to_parquet", soft_wrap=True)
    for d in dead:
        console.print(f"[red]dead letter[/] {d['invocation_id']}: {d['error']}")
    return 0 if outputs and not dead and len(outputs) == count else 1


def _show(path: Path, rows: int = 5, columns: int = 6) -> None:
    table = pq.read_table(path)
    names = table.column_names[:columns]
    view = Table(title=f"{path.name}: {table.num_rows:,} rows x {table.num_columns} columns")
    for name in names:
        view.add_column(name, justify="right")
    for row in table.select(names).slice(0, rows).to_pylist():
        view.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()))
    console.print(view)


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8))
