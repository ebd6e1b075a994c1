"""Band composites through the workflow engine: a state machine's Map (MaxConcurrency 2) runs
`composite` per cell in the 2 workers of a running `headrace up`, each cell's result recorded in
the ledger, against the plain sequential rasterio script (`_raster_baseline.composite_script`,
same output settings) in one process, in the same run, on the same cells (the Landsat bands of
../shared copied into N cells). Timed: start of the execution to SUCCEEDED; the script's loop.

    .venv/bin/python benchmarks/band_composite_workflow.py [--cells 24] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _coordinator import Coordinator
from _raster_baseline import run_pass

from headrace.app import load_app
from headrace.config import load_settings
from headrace.ledger import Ledger
from headrace.workflows import api

HERE = Path(__file__).resolve().parent
APP_DIR = HERE / "composite_app"
LANDSAT = HERE.parents[1] / "shared" / "data" / "raster" / "landsat8_LC80200392015216LGN00"


def make_cells(root: Path, n: int) -> list[list[str]]:
    cells = []
    for i in range(n):
        folder = root / f"cell{i:03d}"
        folder.mkdir(parents=True)
        paths = []
        for band in ("l8_B2.tif", "l8_B3.tif", "l8_B4.tif"):
            shutil.copy(LANDSAT / band, folder / band)
            paths.append(str(folder / band))
        cells.append(paths)
    return cells


def headrace_run(cells: list[list[str]], out: Path, home: Path) -> float:
    settings = load_settings(APP_DIR, home=str(home))
    app = load_app(settings)
    with Coordinator(home, APP_DIR, HEADRACE_WORKERS="2"):
        ledger = Ledger(settings.ledger_url)
        data = {
            "cells": [
                {"bands": bands, "dst": str(out / f"cell{i:04d}.tif")}
                for i, bands in enumerate(cells)
            ]
        }
        # warm the workers (imports) with one cell, as a running service would be
        api.wait_for(
            ledger, api.start_execution(ledger, app, "composites", {"cells": data["cells"][:2]})
        )
        started = time.perf_counter()
        row = api.wait_for(
            ledger, api.start_execution(ledger, app, "composites", data), timeout=600
        )
        elapsed = time.perf_counter() - started
        assert row["status"] == "SUCCEEDED", row
        ledger.close()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=24)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not LANDSAT.is_dir():
        print(f"needs the Landsat bands at {LANDSAT}")
        return 1
    base, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cells = make_cells(root / "cells", args.cells)
        for i in range(args.runs):
            out = root / f"base{i}"
            out.mkdir()
            base.append(run_pass(cells, str(out), True)["seconds"])
            out = root / f"ours{i}"
            out.mkdir()
            ours.append(headrace_run(cells, out, root / f"home{i}"))
    ratio = statistics.median(base) / statistics.median(ours)
    print(f"\nBand composites, {args.cells} Landsat cells, {args.runs} runs")
    print("| mode | median s | min | max |\n|---|---:|---:|---:|")
    for label, values in (("rasterio script, 1 process", base), ("headrace, 2 workers", ours)):
        med, lo, hi = statistics.median(values), min(values), max(values)
        print(f"| {label} | {med:.2f} | {lo:.2f} | {hi:.2f} |")
    print(f"ratio: {ratio:.2f}x")
    out = HERE / "results" / "band_composite_workflow.json"
    out.parent.mkdir(exist_ok=True)
    record = {
        "cells": args.cells,
        "baseline_s": base,
        "headrace_s": ours,
        "ratio": ratio,
        "date": time.strftime("%F"),
    }
    out.write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
