"""GRIB -> Parquet through the real pipeline: ``headrace up`` on examples/grib_to_parquet.

    python benchmarks/_grib_coordinator.py WORKERS REPS FILE...   -> JSON throughput measurement

Starts the coordinator in a fresh ``HEADRACE_HOME`` with ``HEADRACE_WORKERS=WORKERS``, warms it
with one copy of every file (as the other modes do one warm-up pass), then copies the files
``REPS`` times under distinct names (``rep{k}_{name}``) into ``buckets/landing/`` with
``shutil.copy`` and times from the first copy until every ``buckets/curated/<key>.parquet``
exists. CPU seconds and peak RSS are those of the coordinator and all its descendants (worker
processes), read from /proc over the timed window. Stops the coordinator with SIGTERM.

This script imports neither pygrib nor eccodes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "grib_to_parquet"
# Accepted by the example's trigger; files with other names are copied as ``.grib``.
SUFFIXES = (".grib", ".grib2", ".grb", ".grb2", ".bin")


def _key(path: str) -> str:
    name = Path(path).name
    return name if name.endswith(SUFFIXES) else f"{name}.grib"


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _cpu_seconds(procs: list[psutil.Process]) -> dict[int, float]:
    seconds = {}
    for p in procs:
        try:
            times = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        seconds[p.pid] = times.user + times.system
    return seconds


def _peak_rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _wait_for(curated: Path, keys: set[str], deadline: float) -> None:
    missing = {f"{k}.parquet" for k in keys}
    while missing:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{len(missing)} outputs missing, e.g. {sorted(missing)[:3]}")
        if curated.is_dir():
            missing.difference_update(os.listdir(curated))
        time.sleep(0.01)


def run(workers: int, reps: int, files: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="headrace-grib-bench-") as tmp:
        home = Path(tmp) / "home"
        env = {**os.environ, "HEADRACE_HOME": str(home), "HEADRACE_WORKERS": str(workers)}
        log = open(Path(tmp) / "up.log", "w")  # noqa: SIM115 - closed after the coordinator stops
        proc = subprocess.Popen(
            [sys.executable, "-m", "headrace.cli", "-C", str(EXAMPLE), "up", "--quiet"],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
        )
        try:
            info = home / "coordinator.json"
            deadline = time.time() + 60
            while not (info.exists() and json.loads(info.read_text()).get("pid") == proc.pid):
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("headrace up did not start:\n" + _tail(tmp))
                time.sleep(0.05)
            landing, curated = home / "buckets" / "landing", home / "buckets" / "curated"
            landing.mkdir(parents=True, exist_ok=True)

            warm = {}
            for path in files:
                key = f"warm_{_key(path)}"
                shutil.copy(path, landing / key)
                warm[key] = path
            _wait_for(curated, set(warm), time.perf_counter() + 600)

            tree = psutil.Process(proc.pid)
            cpu_before = _cpu_seconds(_tree(tree))
            keys, size = set(), 0
            started = time.perf_counter()
            for rep in range(reps):
                for path in files:
                    key = f"rep{rep}_{_key(path)}"
                    shutil.copy(path, landing / key)
                    keys.add(key)
                    size += os.path.getsize(path)
            _wait_for(curated, keys, started + 1800)
            seconds = time.perf_counter() - started
            procs = _tree(tree)
            cpu_after = _cpu_seconds(procs)
            peaks = sorted((_peak_rss_mib(p.pid) for p in procs), reverse=True)
            # a process that started inside the window counts from zero
            cpu = sum(after - cpu_before.get(pid, 0.0) for pid, after in cpu_after.items())
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
    return {
        "bytes": size,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "passes": reps,
        # the largest process first; the coordinator itself is one of them
        "peak_rss_mib": peaks,
    }


def _tail(tmp: str) -> str:
    try:
        return (Path(tmp) / "up.log").read_text()[-3000:]
    except OSError:
        return ""


if __name__ == "__main__":
    workers, reps, *paths = sys.argv[1:]
    print(json.dumps(run(int(workers), int(reps), paths)))
