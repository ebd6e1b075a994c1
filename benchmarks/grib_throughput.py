"""GRIB -> Parquet throughput: headrace (1 and 2 workers, direct and through ``headrace up``)
against the pygrib baseline.

Run: ``.venv/bin/python benchmarks/grib_throughput.py [--quick] [--rounds 8] [--modes M1,M2]``

Every measurement runs in its own child process (pygrib and the eccodes package crash when
used in one process), on the files of ../shared/data/grib that both converters read (the
spectral file and any file either fails on are left out). Interpreter start-up and imports are
outside the timed window in every mode.

* ``baseline`` and ``headrace_{1,2}_worker(s)``: paired runs. Each is a process kept alive for
  the whole benchmark (the baseline script, or a pool of 1 or 2 headrace workers) that first
  converts every file once (a long-running converter has its ecCodes tables and grid cache
  loaded), then converts whole passes over the files, largest first, when asked. The three are
  asked in turn, in a shuffled order, for about ``--slice-seconds`` of passes each, ``--rounds``
  times; the ratio to the baseline is computed per round and the median of those is reported.
  This machine is shared and its speed drifts by 20-30% over tens of seconds: alternating
  slices of a few seconds puts both sides of each ratio in the same conditions. Each conversion
  writes a new Parquet file that is deleted right after, in both converters.
* ``coordinator_{1,2}_worker(s)``: the real pipeline, ``headrace up`` on
  examples/grib_to_parquet with ``HEADRACE_WORKERS=1|2`` (see ``_grib_coordinator.py``): after a
  warm-up copy of every file, the files are copied into the landing bucket enough times
  (``rep{k}_{name}``) for the run to last about ``--coordinator-seconds``, timed from the first
  copy until every Parquet output exists.

The coordinator modes run ``--repeats`` times. The table reports the median MB/s of input
bytes (wall clock) with min-max, the ratio to the baseline (paired modes: median of the
per-round ratios; coordinator modes: against the baseline's median MB/s), CPU seconds per pass
of the files (all processes of the mode) and peak RSS (largest process; sum over processes).
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


def headrace_serve(files: list[str], workers: int) -> None:
    """A warm pool kept alive: ``pass N`` on stdin -> N timed passes; ``exit`` -> peak RSS."""
    import multiprocessing as mp
    import tempfile

    size = sum(os.path.getsize(p) for p in files)
    with tempfile.TemporaryDirectory() as folder:
        barrier = mp.Barrier(workers + 1)
        with mp.Pool(workers, _worker_init, (files, folder, barrier)) as pool:
            barrier.wait(timeout=600)
            print(json.dumps({"ready": True}), flush=True)
            tasks = [(p, folder) for p in files]
            for line in sys.stdin:
                command, *args = line.split()
                if command != "pass":
                    break
                passes, cpu = int(args[0]), 0.0
                started = time.perf_counter()
                for _ in range(passes):
                    for _, seconds in pool.imap_unordered(_convert_one, tasks):
                        cpu += seconds
                answer = {
                    "bytes": size * passes,
                    "seconds": time.perf_counter() - started,
                    "cpu_seconds": cpu,
                    "passes": passes,
                }
                print(json.dumps(answer), flush=True)
            peaks = pool.map(_worker_peak_rss, range(workers), chunksize=1)
    print(json.dumps({"peak_rss_mib": sorted(peaks, reverse=True)}), flush=True)


class _Server:
    """A converter process answering ``pass N`` requests with one JSON line each."""

    def __init__(self, args: list[str], script: Path = Path(__file__)) -> None:
        self.name = f"{script.name} {args[0]}"
        self.process = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._answer()  # ready: warmed up

    def passes(self, count: int) -> dict:
        self.process.stdin.write(f"pass {count}\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self) -> list[float]:
        self.process.stdin.write("exit\n")
        self.process.stdin.flush()
        peaks = self._answer()["peak_rss_mib"]
        self.process.wait(timeout=60)
        return peaks

    def _answer(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} stopped (exit code {self.process.wait()})")
        return json.loads(line)


def _server(mode: str, files: list[str]) -> _Server:
    if mode == "baseline":
        return _Server(["serve", *files], HERE / "_grib_baseline.py")
    return _Server(["headrace-serve", "1" if mode.endswith("_1_worker") else "2", *files])


def paired_runs(
    files: list[str], modes: list[str], rounds: int, slice_seconds: float, seed: int = 7
) -> tuple[dict[str, list[dict]], dict[str, list[float]]]:
    """Rounds of about ``slice_seconds`` of passes per mode, in a shuffled order per round."""
    import random

    servers = {mode: _server(mode, files) for mode in modes}
    try:
        one_pass = {mode: server.passes(1)["seconds"] for mode, server in servers.items()}
        counts = {mode: max(1, round(slice_seconds / one_pass[mode])) for mode in modes}
        runs: dict[str, list[dict]] = {mode: [] for mode in modes}
        order = list(modes)
        shuffle = random.Random(seed).shuffle
        for number in range(rounds):
            shuffle(order)
            for mode in order:
                result = servers[mode].passes(counts[mode])
                result["load_average_before"] = os.getloadavg()[0]
                _rates(result)
                runs[mode].append(result)
                print(
                    f"round {number + 1} {mode}: {result['mb_per_s']:.2f} MB/s, "
                    f"{result['cpu_s_per_pass']:.2f} CPU-s per pass, {result['seconds']:.1f} s",
                    file=sys.stderr,
                )
        peaks = {mode: server.close() for mode, server in servers.items()}
    finally:
        for server in servers.values():
            if server.process.poll() is None:
                server.process.kill()
    return runs, peaks


def _rates(result: dict) -> dict:
    result["mb_per_s"] = result["bytes"] / result["seconds"] / 1e6
    result["cpu_s_per_pass"] = result["cpu_seconds"] / result["passes"]
    return result


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


def measure(mode: str, files: list[str], reps: int) -> dict:
    """One run of a coordinator mode (``headrace up`` over ``reps`` copies of the files)."""
    load = os.getloadavg()[0]
    workers = "1" if mode.endswith("_1_worker") else "2"
    result = _rates(_child([workers, str(reps), *files], HERE / "_grib_coordinator.py"))
    result["load_average_before"] = load
    return result


def coordinator_reps(runs: dict[str, list[dict]], mode: str, pass_bytes: int, target: float):
    """Copies of the file set that keep the pipeline busy for about ``target`` seconds."""
    direct = runs.get("headrace_1_worker" if mode.endswith("_1_worker") else "headrace_2_workers")
    speed = direct[-1]["mb_per_s"] * 1e6 if direct else pass_bytes
    return max(2, math.ceil(target * speed / pass_bytes))


def summarise(runs: dict[str, list[dict]], peaks: dict[str, list[float]]) -> dict[str, dict]:
    baseline = runs["baseline"]
    base = statistics.median(r["mb_per_s"] for r in baseline)
    base_cpu = statistics.median(r["cpu_s_per_pass"] for r in baseline)
    summary = {}
    for mode, results in runs.items():
        if not results:
            continue
        speeds = [r["mb_per_s"] for r in results]
        cpu = statistics.median(r["cpu_s_per_pass"] for r in results)
        if mode in peaks:  # paired: one ratio per round, both sides measured side by side
            pairs = list(zip(results, baseline, strict=True))
            ratios = [r["mb_per_s"] / b["mb_per_s"] for r, b in pairs]
            cpu_ratios = [b["cpu_s_per_pass"] / r["cpu_s_per_pass"] for r, b in pairs]
            per_process, all_processes = max(peaks[mode]), sum(peaks[mode])
        else:
            ratios = [statistics.median(speeds) / base]
            cpu_ratios = [base_cpu / cpu]
            per_process = max(max(r["peak_rss_mib"]) for r in results)
            all_processes = max(sum(r["peak_rss_mib"]) for r in results)
        summary[mode] = {
            "mb_per_s_median": statistics.median(speeds),
            "mb_per_s_min": min(speeds),
            "mb_per_s_max": max(speeds),
            "mb_per_s_runs": speeds,
            "ratio_vs_baseline": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "ratio_runs": ratios,
            "cpu_s_per_pass_median": cpu,
            "cpu_ratio_vs_baseline": statistics.median(cpu_ratios),
            "peak_rss_mib_per_process": per_process,
            "peak_rss_mib_all_processes": all_processes,
            "seconds": [r["seconds"] for r in results],
            "passes": [r["passes"] for r in results],
        }
    return summary


def markdown(summary: dict[str, dict], files: list[str], rounds: int, repeats: int) -> str:
    size = sum(os.path.getsize(p) for p in files) / 1e6
    lines = [
        f"GRIB -> Parquet, {len(files)} files ({size:.2f} MB per pass); baseline and direct "
        f"headrace: {rounds} paired rounds (x baseline: median (min-max) of the per-round "
        f"ratios); headrace up: median of {repeats} runs",
        "",
        "| converter | MB/s (min-max) | x baseline | CPU-s per pass | x baseline (CPU) "
        "| peak RSS, largest process (MiB) | peak RSS, all processes (MiB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for mode, row in summary.items():
        lines.append(
            f"| {LABELS[mode]} | {row['mb_per_s_median']:.2f} "
            f"({row['mb_per_s_min']:.2f}-{row['mb_per_s_max']:.2f}) "
            f"| {row['ratio_vs_baseline']:.2f} ({row['ratio_min']:.2f}-{row['ratio_max']:.2f}) "
            f"| {row['cpu_s_per_pass_median']:.2f} "
            f"| {row['cpu_ratio_vs_baseline']:.2f} | {row['peak_rss_mib_per_process']:.0f} "
            f"| {row['peak_rss_mib_all_processes']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="paired rounds")
    parser.add_argument("--slice-seconds", type=float, default=2.5, help="per mode and round")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each coordinator mode")
    parser.add_argument("--coordinator-seconds", type=float, default=12.0)
    parser.add_argument(
        "--quick", action="store_true", help="one short run of every mode (smoke test)"
    )
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset")
    options = parser.parse_args()
    if options.quick:
        options.rounds, options.slice_seconds = 2, 0.5
        options.repeats, options.coordinator_seconds = 1, 2.0
    modes = [m for m in MODES if m in options.modes.split(",")]
    if "baseline" not in modes:
        modes.insert(0, "baseline")  # every ratio needs it
    files, skipped = eligible_files()
    pass_bytes = sum(os.path.getsize(p) for p in files)
    direct = [m for m in modes if not m.startswith("coordinator")]
    runs, peaks = paired_runs(files, direct, options.rounds, options.slice_seconds)
    coordinator_modes = [m for m in modes if m.startswith("coordinator")]
    runs |= {mode: [] for mode in coordinator_modes}
    for repeat in range(options.repeats):
        for mode in coordinator_modes:
            reps = coordinator_reps(runs, mode, pass_bytes, options.coordinator_seconds)
            result = measure(mode, files, reps)
            runs[mode].append(result)
            print(
                f"run {repeat + 1} {mode}: {result['mb_per_s']:.2f} MB/s, "
                f"{result['cpu_s_per_pass']:.2f} CPU-s per pass, {result['seconds']:.1f} s",
                file=sys.stderr,
            )
    summary = summarise(runs, peaks)
    print(markdown(summary, files, options.rounds, options.repeats))
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
    elif len(sys.argv) > 1 and sys.argv[1] == "headrace-serve":
        workers, *paths = sys.argv[2:]
        headrace_serve(paths, int(workers))
    else:
        main()
