"""Band composites over many cells: headrace (a process pool of 2 calling ``composite`` per
cell) against the plain sequential rasterio script (``_raster_baseline.py``).

Run: ``.venv/bin/python benchmarks/band_composite.py [--cells 24] [--repeats 3]``

Cells: the Landsat 8 blue/green/red bands of ../shared/data/raster copied into ``--cells``
folders of a temporary directory (``--source generated`` or no ../shared: cells written by
examples/band_composite/rasters.py at ``--size``). Every pass composites every cell into a fresh
folder, deleted after the pass; the same cells feed every mode in the same run.

Modes, interleaved (order rotated each repeat so neither always runs on a warmer page cache):

* ``baseline``: the script a rasterio user writes, in one process, writing what ``composite``
  writes by default (512 px tiles, deflate + predictor, same overviews, numpy statistics as
  ``STATISTICS_*`` tags). The headline ratio is against this one.
* ``baseline_source_profile``: the same script keeping the source profile unchanged
  (uncompressed strips for Landsat): cheaper, larger files, not a COG.
* ``headrace_2_workers``: ``composite(bands, dst)`` with its defaults (deflate COG) per cell,
  mapped over a ``ProcessPoolExecutor`` of ``--workers`` spawned, already warm processes, as the
  workflow engine's workers are; compared with ``baseline``. Pool start-up is timed separately.
* ``headrace_2_workers_uncompressed``: the same with ``compress="none"``; compared with
  ``baseline_source_profile`` (both uncompressed; headrace still writes a tiled COG).

Timing: baseline passes are timed inside their process; headrace passes from the orchestrator
around ``pool.map`` (task pickling and result collection included). The table shows the median
of ``--repeats`` passes (min-max), the ratio of medians, CPU seconds per cell, output size and
peak RSS per process. Results: benchmarks/results/band_composite.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LANDSAT = REPO.parent / "shared" / "data" / "raster" / "landsat8_LC80200392015216LGN00"
BANDS = ("l8_B2.tif", "l8_B3.tif", "l8_B4.tif")  # blue, green, red
RESULTS = HERE / "results" / "band_composite.json"
sys.path.insert(0, str(HERE))  # _raster_baseline, also in the spawned workers

from _raster_baseline import composite_script, peak_rss_mib, run_pass  # noqa: E402

MODES = (
    "baseline",
    "baseline_source_profile",
    "headrace_2_workers",
    "headrace_2_workers_uncompressed",
)
# each mode's ratio is against the baseline that writes comparable output
MATCHED = {
    "baseline": "baseline",
    "baseline_source_profile": "baseline_source_profile",
    "headrace_2_workers": "baseline",
    "headrace_2_workers_uncompressed": "baseline_source_profile",
}
HEADRACE_OPTIONS = {
    "headrace_2_workers": {},
    "headrace_2_workers_uncompressed": {"compress": "none"},
}


def _import_composite():
    try:
        from headrace.formats.raster import composite
    except ModuleNotFoundError:  # not installed in the venv: use the source tree
        sys.path.insert(0, str(REPO / "src"))
        from headrace.formats.raster import composite
    return composite


def _headrace_cell(task: tuple[list[str], str, dict]) -> dict:
    """One composite in a worker process; its CPU time and the worker's peak RSS."""
    bands, dst, options = task
    cpu = time.process_time()
    report = _import_composite()(bands, dst, **options)
    return {
        "cpu_seconds": time.process_time() - cpu,
        "bytes_out": report.bytes_out,
        "peak_rss_mib": peak_rss_mib(),
        "pid": os.getpid(),
    }


def prepare_cells(root: Path, count: int, source: str, size: int) -> list[list[str]]:
    if source == "landsat":
        cells = []
        for index in range(count):
            folder = root / f"cell{index:03d}"
            folder.mkdir(parents=True)
            for name in BANDS:
                shutil.copyfile(LANDSAT / name, folder / name)
            cells.append([str(folder / name) for name in BANDS])
        return cells
    path = REPO / "examples" / "band_composite" / "rasters.py"
    spec = importlib.util.spec_from_file_location("band_composite_rasters", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    described = module.write_sample_cells(root, cells=count, size=(size, size))
    return [list(cell["bands"].values()) for cell in described]


def check_same_output(cells: list[list[str]], root: Path) -> dict:
    """headrace and the baseline must agree: same pixels, same statistics."""
    import numpy as np
    import rasterio

    ours, theirs = root / "check_headrace.tif", root / "check_baseline.tif"
    _import_composite()(cells[0], ours)
    composite_script(cells[0], str(theirs))
    with rasterio.open(ours) as a, rasterio.open(theirs) as b:
        if not np.array_equal(a.read(), b.read()):
            raise SystemExit("headrace and the baseline wrote different pixels")
        for band in range(1, a.count + 1):
            for key in ("MINIMUM", "MAXIMUM", "MEAN", "STDDEV"):
                x = float(a.tags(band)[f"STATISTICS_{key}"])
                y = float(b.tags(band)[f"STATISTICS_{key}"])
                if abs(x - y) > 1e-9 * max(abs(y), 1.0):
                    raise SystemExit(f"band {band} {key}: headrace {x} != baseline {y}")
        layout = a.tags(ns="IMAGE_STRUCTURE").get("LAYOUT")
        return {"pixels_equal": True, "statistics_equal": True, "headrace_layout": layout}


def run(options: argparse.Namespace) -> dict:
    source = options.source
    if source == "auto":
        source = "landsat" if all((LANDSAT / b).exists() for b in BANDS) else "generated"
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        print(f"warning: load average {load_before[0]:.2f}: the 2 cores are busy", file=sys.stderr)
    root = Path(tempfile.mkdtemp(prefix="headrace-bench-raster-"))
    try:
        cells = prepare_cells(root / "cells", options.cells, source, options.size)
        check = check_same_output(cells, root)
        runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
        spawn = multiprocessing.get_context("spawn")  # no fork after GDAL is initialised
        with ProcessPoolExecutor(1, mp_context=spawn) as baseline_pool:
            baseline_pool.submit(run_pass, cells[:1], str(root), True).result()  # warm
            started = time.perf_counter()
            with ProcessPoolExecutor(options.workers, mp_context=spawn) as pool:
                warm = [(c, str(root / f"warm{i}.tif"), {}) for i, c in enumerate(cells[:2])]
                list(pool.map(_headrace_cell, warm * options.workers, chunksize=1))
                pool_start = time.perf_counter() - started
                for repeat in range(options.repeats):
                    order = MODES[repeat % len(MODES) :] + MODES[: repeat % len(MODES)]
                    for mode in order:
                        out = Path(tempfile.mkdtemp(dir=root, prefix=f"{mode}-"))
                        if mode in HEADRACE_OPTIONS:
                            kwargs = HEADRACE_OPTIONS[mode]
                            tasks = [
                                (c, str(out / f"cell{i:04d}.tif"), kwargs)
                                for i, c in enumerate(cells)
                            ]
                            wall = time.perf_counter()
                            done = list(pool.map(_headrace_cell, tasks, chunksize=1))
                            result = {
                                "seconds": time.perf_counter() - wall,
                                "cpu_seconds": sum(d["cpu_seconds"] for d in done),
                                "bytes_out": sum(d["bytes_out"] for d in done),
                                "peak_rss_mib": max(d["peak_rss_mib"] for d in done),
                                "processes": len({d["pid"] for d in done}),
                            }
                        else:
                            like = mode == "baseline"
                            result = baseline_pool.submit(run_pass, cells, str(out), like).result()
                            result["processes"] = 1
                        runs[mode].append(result)
                        shutil.rmtree(out)
                        print(
                            f"  repeat {repeat + 1} {mode}: {result['seconds']:.2f} s", flush=True
                        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = summarize(runs, options, source, check, pool_start)
    result["machine"]["loadavg_before"] = load_before
    return result


def summarize(runs: dict, options: argparse.Namespace, source: str, check: dict, pool_start):
    import rasterio

    medians = {mode: statistics.median(r["seconds"] for r in rs) for mode, rs in runs.items()}
    summary = {}
    for mode, results in runs.items():
        seconds = [r["seconds"] for r in results]
        median = medians[mode]
        summary[mode] = {
            "seconds_median": median,
            "seconds_min": min(seconds),
            "seconds_max": max(seconds),
            "seconds_runs": seconds,
            "cells_per_s_median": options.cells / median,
            "compared_with": MATCHED[mode],
            "ratio_vs_matched_baseline": medians[MATCHED[mode]] / median,
            "ratio_vs_baseline": medians["baseline"] / median,
            "cpu_s_per_cell_median": statistics.median(r["cpu_seconds"] for r in results)
            / options.cells,
            "mb_out_per_cell": results[0]["bytes_out"] / options.cells / 1e6,
            "peak_rss_mib_per_process": max(r["peak_rss_mib"] for r in results),
            "processes": results[0]["processes"],
        }
    cell_shape = "627x603 (Landsat 8 subset)" if source == "landsat" else f"{options.size}^2"
    return {
        "benchmark": "band_composite",
        "cells": options.cells,
        "bands_per_cell": 3,
        "source": source,
        "cell_shape": cell_shape,
        "repeats": options.repeats,
        "workers": options.workers,
        "pool_start_seconds": pool_start,
        "output_check": check,
        "summary": summary,
        "target_ratio": 1.7,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "loadavg_after": os.getloadavg(),
            "rasterio": rasterio.__version__,
            "gdal": rasterio.__gdal_version__,
        },
    }


LABELS = {
    "baseline": "A. rasterio script, composite's settings (deflate, 512 tiles), 1 proc",
    "baseline_source_profile": "B. rasterio script, source profile (uncompressed strips), 1 proc",
    "headrace_2_workers": "headrace `composite` defaults (deflate COG), 2 workers (vs A)",
    "headrace_2_workers_uncompressed": "headrace, compress='none' (COG), 2 workers (vs B)",
}


def markdown(result: dict) -> str:
    lines = [
        f"Band composite, {result['cells']} cells x 3 bands ({result['source']}, "
        f"{result['cell_shape']}), median of {result['repeats']}",
        "",
        "| mode | seconds (min-max) | cells/s | vs matched baseline | CPU s/cell | MB out/cell "
        "| peak RSS MiB/process |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for mode, s in result["summary"].items():
        lines.append(
            f"| {LABELS[mode]} | {s['seconds_median']:.2f} ({s['seconds_min']:.2f}-"
            f"{s['seconds_max']:.2f}) | {s['cells_per_s_median']:.1f} | "
            f"{s['ratio_vs_matched_baseline']:.2f}x | {s['cpu_s_per_cell_median']:.3f} | "
            f"{s['mb_out_per_cell']:.2f} | {s['peak_rss_mib_per_process']:.0f} |"
        )
    lines.append("")
    lines.append(
        f"Pool start-up (2 spawned workers, imports, first composites): "
        f"{result['pool_start_seconds']:.2f} s, outside the timed passes. "
        f"Output check: {result['output_check']}."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--source", choices=("auto", "landsat", "generated"), default="auto")
    parser.add_argument("--size", type=int, default=1024, help="generated cells: side in pixels")
    options = parser.parse_args()
    result = run(options)
    print(markdown(result))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten {RESULTS.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
