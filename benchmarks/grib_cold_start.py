"""GRIB -> Parquet in a fresh process: what a one-off conversion, a new Ray worker or a batch
job pays before it converts at full speed, against the pygrib + pandas baseline.

Run: ``.venv/bin/python benchmarks/grib_cold_start.py [--repeats 5]``

Every measurement is a new Python process converting every shared GRIB file that both
converters read (../shared/data/grib without the spectral file) twice: the first pass is the
cold one, the second the warm one (ecCodes' tables, headrace's concept trees and grid cache
loaded). Imports are timed apart. Modes, run in turn ``--repeats`` times in a shuffled order
(the machine's speed drifts; alternating keeps the modes in the same conditions):

* ``headrace_first_run``: an empty cache folder (``HEADRACE_CACHE_DIR``), as on a machine where
  headrace never ran: the concept files are parsed and ecCodes answers the first field of each
  concept path, then both are saved (``headrace.formats.grib_disk_cache``);
* ``headrace``: the cache folder the previous processes filled, as every later process finds it;
* ``baseline``: ``benchmarks/_grib_baseline.py cold`` (pygrib + pandas, snappy);
* ``before`` (with ``--before-src DIR``): headrace imported from another source tree, e.g. a
  checkout of the commit before a change, in the same rounds.

Reports medians (min-max) of the import time, first pass, second pass (wall clock, and CPU
seconds of the process: on a busy machine the CPU time is the steadier figure), and the ratio
of the baseline's first (second) pass to each mode's. Writes ``results/grib_cold_start.json``.
This orchestrating process imports neither pygrib nor eccodes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GRIB_DIR = REPO.parent / "shared" / "data" / "grib"
RESULTS = HERE / "results" / "grib_cold_start.json"
EXCLUDED = {"spherical_harmonics.grib", "SHA256SUMS"}

CHILD = """
import time
started = time.perf_counter()
import json, os, sys, tempfile
from headrace.formats.grib import grib_to_parquet
imported = time.perf_counter()
files = sys.argv[1:]
with tempfile.TemporaryDirectory() as folder:
    passes, cpu = [], []
    for _ in range(2):
        begin, begin_cpu = time.perf_counter(), time.process_time()
        for path in files:
            grib_to_parquet(path, os.path.join(folder, "out.parquet"))
        passes.append(time.perf_counter() - begin)
        cpu.append(time.process_time() - begin_cpu)
print(json.dumps({"imports": imported - started, "first": passes[0], "second": passes[1],
                  "first_cpu": cpu[0], "second_cpu": cpu[1]}))
"""


def _run(mode: str, files: list[str], cache: str, before: Path | None = None) -> dict:
    env = dict(os.environ)
    if mode == "before":
        env["PYTHONPATH"] = str(before)
        env["HEADRACE_CACHE_DIR"] = tempfile.mkdtemp()
    if mode == "baseline":
        command = [sys.executable, str(HERE / "_grib_baseline.py"), "cold", *files]
    else:
        command = [sys.executable, "-c", CHILD, *files]
        env["HEADRACE_CACHE_DIR"] = tempfile.mkdtemp() if mode == "headrace_first_run" else cache
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--grib-dir", type=Path, default=GRIB_DIR)
    parser.add_argument("--before-src", type=Path, help="another headrace src/ to compare")
    args = parser.parse_args()
    if not args.grib_dir.is_dir():
        raise SystemExit(f"no GRIB files in {args.grib_dir} (needs ../shared/data)")
    files = sorted(str(p) for p in args.grib_dir.iterdir() if p.name not in EXCLUDED)
    modes = ["headrace_first_run", "headrace", "baseline"]
    if args.before_src:
        modes.append("before")
    cache = tempfile.mkdtemp(prefix="headrace-cache-")
    _run("headrace", files, cache)  # fills the cache as any first run would
    runs: dict[str, list[dict]] = {mode: [] for mode in modes}
    rng = random.Random(7)
    for _ in range(args.repeats):
        for mode in rng.sample(modes, len(modes)):
            runs[mode].append(_run(mode, files, cache, args.before_src))
    size = sum(os.path.getsize(p) for p in files)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "files": len(files),
        "bytes": size,
        "repeats": args.repeats,
        "command": " ".join(sys.argv),
        "modes": {
            mode: {part: _summary([r[part] for r in found]) for part in found[0]}
            for mode, found in runs.items()
        },
    }
    first = {m: report["modes"][m]["first"]["median"] for m in modes}
    second = {m: report["modes"][m]["second"]["median"] for m in modes}
    report["speedup_cold"] = {m: first["baseline"] / first[m] for m in modes}
    report["speedup_warm"] = {m: second["baseline"] / second[m] for m in modes}
    first_cpu = {m: report["modes"][m]["first_cpu"]["median"] for m in modes}
    second_cpu = {m: report["modes"][m]["second_cpu"]["median"] for m in modes}
    report["speedup_cold_cpu"] = {m: first_cpu["baseline"] / first_cpu[m] for m in modes}
    report["speedup_warm_cpu"] = {m: second_cpu["baseline"] / second_cpu[m] for m in modes}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(f"{len(files)} files, {size / 1e6:.1f} MB, {args.repeats} fresh processes per mode")
    print(
        f"{'mode':<20} {'imports s':>10} {'first pass s':>18} {'second pass s':>18} "
        f"{'vs baseline cold/warm':>22}"
    )
    for mode in modes:
        parts = report["modes"][mode]
        cells = [
            f"{parts[p]['median']:.2f} ({parts[p]['min']:.2f}-{parts[p]['max']:.2f})"
            for p in ("imports", "first", "second", "first_cpu", "second_cpu")
        ]
        ratio = f"{report['speedup_cold'][mode]:.2f}x / {report['speedup_warm'][mode]:.2f}x"
        cpu_ratio = (
            f"{report['speedup_cold_cpu'][mode]:.2f}x / {report['speedup_warm_cpu'][mode]:.2f}x"
        )
        print(f"{mode:<20} {cells[0]:>10} {cells[1]:>18} {cells[2]:>18} {ratio:>22}")
        print(f"{'  CPU seconds':<20} {'':>10} {cells[3]:>18} {cells[4]:>18} {cpu_ratio:>22}")


if __name__ == "__main__":
    main()
