"""GRIB -> Parquet throughput: headrace (1 and 2 worker processes) against the pygrib baseline.

Run: ``.venv/bin/python benchmarks/grib_throughput.py [--repeats 3] [--min-seconds 3]``

Every measurement runs in its own child process (pygrib and the eccodes package crash when
used in one process), on the files of ../shared/data/grib that both converters read (the
spectral file and any file either fails on are left out). Each child does one warm-up pass (a
long-running converter has its ecCodes tables and grid cache loaded), then whole passes over
the files, largest first, until ``--min-seconds`` have passed. Each conversion writes a new
Parquet file that is deleted right after, in both converters. The three modes run interleaved,
``--repeats`` times; the table reports the median MB/s of input bytes (wall clock), the median
MB per CPU-second (less sensitive to other load on the machine) and peak RSS per process.

This orchestrating process imports neither pygrib nor eccodes.
"""

from __future__ import annotations

import argparse
import json
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
MODES = ("baseline", "headrace_1_worker", "headrace_2_workers")


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


def measure(mode: str, files: list[str], min_seconds: float) -> dict:
    seconds, load = str(min_seconds), os.getloadavg()[0]
    if mode == "baseline":
        result = _child(["run", seconds, *files], HERE / "_grib_baseline.py")
    else:
        workers = "1" if mode == "headrace_1_worker" else "2"
        result = _child(["headrace-run", workers, seconds, *files])
    result["mb_per_s"] = result["bytes"] / result["seconds"] / 1e6
    result["mb_per_cpu_s"] = result["bytes"] / result["cpu_seconds"] / 1e6
    result["load_average_before"] = load
    return result


def summarise(runs: dict[str, list[dict]]) -> dict[str, dict]:
    base = statistics.median(r["mb_per_s"] for r in runs["baseline"])
    base_cpu = statistics.median(r["mb_per_cpu_s"] for r in runs["baseline"])
    summary = {}
    for mode, results in runs.items():
        speed = statistics.median(r["mb_per_s"] for r in results)
        efficiency = statistics.median(r["mb_per_cpu_s"] for r in results)
        summary[mode] = {
            "mb_per_s_median": speed,
            "mb_per_s_runs": [r["mb_per_s"] for r in results],
            "ratio_vs_baseline": speed / base,
            "mb_per_cpu_s_median": efficiency,
            "cpu_ratio_vs_baseline": efficiency / base_cpu,
            "peak_rss_mib_per_process": max(max(r["peak_rss_mib"]) for r in results),
            "peak_rss_mib_all_workers": max(sum(r["peak_rss_mib"]) for r in results),
            "passes": [r["passes"] for r in results],
        }
    return summary


def markdown(summary: dict[str, dict], files: list[str]) -> str:
    size = sum(os.path.getsize(p) for p in files) / 1e6
    lines = [
        f"GRIB -> Parquet, {len(files)} files ({size:.1f} MB per pass), median of runs",
        "",
        "| converter | MB/s | x baseline | MB per CPU-s | x baseline (CPU) "
        "| peak RSS / process (MiB) | peak RSS all workers (MiB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    labels = {
        "baseline": "pygrib + pandas, snappy (1 process)",
        "headrace_1_worker": "headrace, zstd, 1 worker process",
        "headrace_2_workers": "headrace, zstd, 2 worker processes",
    }
    for mode, row in summary.items():
        lines.append(
            f"| {labels[mode]} | {row['mb_per_s_median']:.2f} | {row['ratio_vs_baseline']:.2f} "
            f"| {row['mb_per_cpu_s_median']:.2f} | {row['cpu_ratio_vs_baseline']:.2f} "
            f"| {row['peak_rss_mib_per_process']:.0f} | {row['peak_rss_mib_all_workers']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=3.0)
    options = parser.parse_args()
    files, skipped = eligible_files()
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    for repeat in range(options.repeats):
        for mode in MODES:
            result = measure(mode, files, options.min_seconds)
            runs[mode].append(result)
            print(f"run {repeat + 1} {mode}: {result['mb_per_s']:.2f} MB/s", file=sys.stderr)
    summary = summarise(runs)
    print(markdown(summary, files))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "files": [Path(p).name for p in files],
        "skipped": skipped,
        "bytes_per_pass": sum(os.path.getsize(p) for p in files),
        "summary": summary,
        "runs": runs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_at_end": os.getloadavg(),
        "options": vars(options),
    }
    RESULTS.write_text(json.dumps(document, indent=2))
    print(f"\nwritten {RESULTS.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "headrace-check":
        print(json.dumps(headrace_check(sys.argv[2:])))
    elif len(sys.argv) > 1 and sys.argv[1] == "headrace-run":
        workers, seconds, *paths = sys.argv[2:]
        print(json.dumps(headrace_run(paths, int(workers), float(seconds))))
    else:
        main()
