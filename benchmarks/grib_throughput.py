"""GRIB -> Parquet throughput: headrace (1 and 2 workers, direct and through ``headrace up``)
against the pygrib baseline.

Run: ``.venv/bin/python benchmarks/grib_throughput.py [--quick] [--repeats 3] [--min-seconds 3]``

Every measurement runs in its own child process (pygrib and the eccodes package crash when
used in one process), on the files of ../shared/data/grib that both converters read (the
spectral file and any file either fails on are left out). Interpreter start-up and imports are
outside the timed window in every mode.

* ``baseline`` and ``headrace_{1,2}_worker(s)``: one warm-up pass (a long-running converter has
  its ecCodes tables and grid cache loaded), then whole passes over the files, largest first,
  until ``--min-seconds`` have passed. Each conversion writes a new Parquet file that is deleted
  right after, in both converters.
* ``coordinator_{1,2}_worker(s)``: the real pipeline, ``headrace up`` on
  examples/grib_to_parquet with ``HEADRACE_WORKERS=1|2`` (see ``_grib_coordinator.py``): after a
  warm-up copy of every file, the files are copied into the landing bucket enough times
  (``rep{k}_{name}``) for the run to last about ``--coordinator-seconds``, timed from the first
  copy until every Parquet output exists.

The modes run interleaved, ``--repeats`` times; the table reports the median MB/s of input
bytes (wall clock) with min-max, the ratio to the baseline's median, CPU seconds per pass of
the files (all processes of the mode) and peak RSS (largest process; sum over processes).
A full run also times the unavoidable steps alone (``_grib_floor.py``: handles, values,
per-field keys, Parquet write): the ceiling for a converter with this output on one core.
``--quick`` writes ``grib_throughput_quick.json``.

This orchestrating process imports neither pygrib nor eccodes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GRIB_DIR = REPO.parent / "shared" / "data" / "grib"
RESULTS = HERE / "results" / "grib_throughput.json"
EXCLUDED = {"spherical_harmonics.grib": "spectral coefficients, not a grid (UnsupportedGrib)"}
MODES = (
    "baseline",
    "headrace_1_worker",
    "headrace_2_workers",
    "coordinator_1_worker",
    "coordinator_2_workers",
)
LABELS = {
    "baseline": "baseline: pygrib + pandas, snappy (1 process)",
    "headrace_1_worker": "headrace, 1 worker process",
    "headrace_2_workers": "headrace, 2 worker processes",
    "coordinator_1_worker": "headrace up (example pipeline), 1 worker",
    "coordinator_2_workers": "headrace up (example pipeline), 2 workers",
}


# ----------------------------------------------------------------------------- child: headrace
def _import_headrace():
    try:
        from headrace.formats.grib import grib_to_parquet
    except ModuleNotFoundError:  # not installed in the venv: use the source tree
        sys.path.insert(0, str(REPO / "src"))
        from headrace.formats.grib import grib_to_parquet
    return grib_to_parquet


def _convert_one(task: tuple[str, str]) -> tuple[int, float]:
    """Convert one file to a new Parquet file, delete it; return (input bytes, CPU seconds)."""
    import uuid

    path, folder = task
    cpu = time.process_time()
    dst = os.path.join(folder, f"{uuid.uuid4().hex}.parquet")
    _import_headrace()(path, dst)
    os.unlink(dst)
    return os.path.getsize(path), time.process_time() - cpu


def _worker_init(files: list[str], folder: str, barrier) -> None:
    for path in files:  # warm-up: ecCodes tables and the grid cache of this process
        _convert_one((path, folder))
    barrier.wait(timeout=600)


def _worker_peak_rss(_: int) -> float:
    import resource

    time.sleep(0.2)  # let every worker take one of these tasks
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def headrace_check(files: list[str]) -> list[str]:
    import tempfile

    grib_to_parquet = _import_headrace()
    ok = []
    with tempfile.TemporaryDirectory() as folder:
        for path in files:
            try:
                grib_to_parquet(path, os.path.join(folder, "check.parquet"))
            except Exception as exc:
                print(f"headrace cannot convert {path}: {exc}", file=sys.stderr)
            else:
                ok.append(path)
    return ok


def headrace_run(files: list[str], workers: int, min_seconds: float) -> dict:
    """A process pool over the files; each worker keeps its own grid cache between files."""
    import multiprocessing as mp
    import resource
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        barrier = mp.Barrier(workers + 1)
        with mp.Pool(workers, _worker_init, (files, folder, barrier)) as pool:
            barrier.wait(timeout=600)
            started, done, cpu, passes = time.perf_counter(), 0, 0.0, 0
            while passes == 0 or time.perf_counter() - started < min_seconds:
                for size, seconds in pool.imap_unordered(
                    _convert_one, [(p, folder) for p in files]
                ):
                    done, cpu = done + size, cpu + seconds
                passes += 1
            seconds = time.perf_counter() - started
            peaks = pool.map(_worker_peak_rss, range(workers), chunksize=1)
    parent = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "bytes": done,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "passes": passes,
        "peak_rss_mib": sorted(peaks, reverse=True),
        "coordinator_rss_mib": parent,
    }


# ----------------------------------------------------------------------------- orchestration
def _child(args: list[str], script: Path = Path(__file__)) -> object:
    done = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{script.name} {args[:2]} failed:\n{done.stderr[-3000:]}")
    if done.stderr.strip():
        print(done.stderr.strip(), file=sys.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def eligible_files() -> tuple[list[str], dict[str, str]]:
    if not GRIB_DIR.is_dir():
        sys.exit(f"no GRIB test data at {GRIB_DIR}: check out ../shared/data next to the repo")
    skipped = dict(EXCLUDED)
    files = [str(p) for p in sorted(GRIB_DIR.iterdir()) if p.name not in EXCLUDED]
    baseline_ok = set(_child(["check", *files], HERE / "_grib_baseline.py"))
    headrace_ok = set(_child(["headrace-check", *files]))
    for path in files:
        if path not in baseline_ok:
            skipped[Path(path).name] = "the pygrib baseline fails on it"
        elif path not in headrace_ok:
            skipped[Path(path).name] = "headrace fails on it"
    chosen = [p for p in files if p in baseline_ok and p in headrace_ok]
    return sorted(chosen, key=os.path.getsize, reverse=True), skipped


def measure(mode: str, files: list[str], min_seconds: float, reps: int = 0) -> dict:
    seconds, load = str(min_seconds), os.getloadavg()[0]
    workers = "1" if mode.endswith("_1_worker") else "2"
    if mode == "baseline":
        result = _child(["run", seconds, *files], HERE / "_grib_baseline.py")
    elif mode.startswith("coordinator"):
        result = _child([workers, str(reps), *files], HERE / "_grib_coordinator.py")
    else:
        result = _child(["headrace-run", workers, seconds, *files])
    result["mb_per_s"] = result["bytes"] / result["seconds"] / 1e6
    result["cpu_s_per_pass"] = result["cpu_seconds"] / result["passes"]
    result["load_average_before"] = load
    return result


def coordinator_reps(runs: dict[str, list[dict]], mode: str, pass_bytes: int, target: float):
    """Copies of the file set that keep the pipeline busy for about ``target`` seconds."""
    direct = runs.get("headrace_1_worker" if mode.endswith("_1_worker") else "headrace_2_workers")
    speed = direct[-1]["mb_per_s"] * 1e6 if direct else pass_bytes
    return max(2, math.ceil(target * speed / pass_bytes))


def summarise(runs: dict[str, list[dict]]) -> dict[str, dict]:
    base = statistics.median(r["mb_per_s"] for r in runs["baseline"])
    base_cpu = statistics.median(r["cpu_s_per_pass"] for r in runs["baseline"])
    summary = {}
    for mode, results in runs.items():
        if not results:
            continue
        speeds = [r["mb_per_s"] for r in results]
        cpu = statistics.median(r["cpu_s_per_pass"] for r in results)
        summary[mode] = {
            "mb_per_s_median": statistics.median(speeds),
            "mb_per_s_min": min(speeds),
            "mb_per_s_max": max(speeds),
            "mb_per_s_runs": speeds,
            "ratio_vs_baseline": statistics.median(speeds) / base,
            "cpu_s_per_pass_median": cpu,
            "cpu_ratio_vs_baseline": base_cpu / cpu,
            "peak_rss_mib_per_process": max(max(r["peak_rss_mib"]) for r in results),
            "peak_rss_mib_all_processes": max(sum(r["peak_rss_mib"]) for r in results),
            "seconds": [r["seconds"] for r in results],
            "passes": [r["passes"] for r in results],
        }
    return summary


def markdown(summary: dict[str, dict], files: list[str], repeats: int) -> str:
    size = sum(os.path.getsize(p) for p in files) / 1e6
    lines = [
        f"GRIB -> Parquet, {len(files)} files ({size:.2f} MB per pass), median of {repeats} "
        "interleaved runs",
        "",
        "| converter | MB/s (min-max) | x baseline | CPU-s per pass | x baseline (CPU) "
        "| peak RSS, largest process (MiB) | peak RSS, all processes (MiB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for mode, row in summary.items():
        lines.append(
            f"| {LABELS[mode]} | {row['mb_per_s_median']:.2f} "
            f"({row['mb_per_s_min']:.2f}-{row['mb_per_s_max']:.2f}) "
            f"| {row['ratio_vs_baseline']:.2f} | {row['cpu_s_per_pass_median']:.2f} "
            f"| {row['cpu_ratio_vs_baseline']:.2f} | {row['peak_rss_mib_per_process']:.0f} "
            f"| {row['peak_rss_mib_all_processes']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=3.0)
    parser.add_argument("--coordinator-seconds", type=float, default=12.0)
    parser.add_argument(
        "--quick", action="store_true", help="one short run of every mode (smoke test)"
    )
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset")
    options = parser.parse_args()
    if options.quick:
        options.repeats, options.min_seconds, options.coordinator_seconds = 1, 0.5, 2.0
    modes = [m for m in MODES if m in options.modes.split(",")]
    if "baseline" not in modes:
        modes.insert(0, "baseline")  # every ratio needs it
    files, skipped = eligible_files()
    pass_bytes = sum(os.path.getsize(p) for p in files)
    runs: dict[str, list[dict]] = {mode: [] for mode in modes}
    for repeat in range(options.repeats):
        for mode in modes:
            reps = coordinator_reps(runs, mode, pass_bytes, options.coordinator_seconds)
            result = measure(mode, files, options.min_seconds, reps)
            runs[mode].append(result)
            print(
                f"run {repeat + 1} {mode}: {result['mb_per_s']:.2f} MB/s, "
                f"{result['cpu_s_per_pass']:.2f} CPU-s per pass, {result['seconds']:.1f} s",
                file=sys.stderr,
            )
    summary = summarise(runs)
    print(markdown(summary, files, options.repeats))
    floor = None
    if not options.quick:  # what the unavoidable steps cost: the ceiling for this output
        floor = _child(["--passes", "3", *files], HERE / "_grib_floor.py")
        base = summary["baseline"]["mb_per_s_median"]
        steps = floor["per_pass_seconds"]
        print(
            f"\nfloor (handles from memory, values, release, per-field keys, Parquet write): "
            f"{floor['floor_seconds']:.3f} s per pass = "
            f"{floor['implied_max_mb_per_s']:.2f} MB/s = "
            f"{floor['implied_max_mb_per_s'] / base:.2f}x baseline on one core; "
            f"grib_to_parquet {steps['grib_to_parquet_cpu']:.3f} s "
            f"(orchestration {steps['orchestration']:.3f} s)"
        )
    results = RESULTS.with_name("grib_throughput_quick.json") if options.quick else RESULTS
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "files": [Path(p).name for p in files],
        "skipped": skipped,
        "bytes_per_pass": pass_bytes,
        "summary": summary,
        "ecCodes_floor": floor,
        "runs": runs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_at_end": os.getloadavg(),
        "options": vars(options),
    }
    results.write_text(json.dumps(document, indent=2))
    print(f"\nwritten {results.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "headrace-check":
        print(json.dumps(headrace_check(sys.argv[2:])))
    elif len(sys.argv) > 1 and sys.argv[1] == "headrace-run":
        workers, seconds, *paths = sys.argv[2:]
        print(json.dumps(headrace_run(paths, int(workers), float(seconds))))
    else:
        main()
