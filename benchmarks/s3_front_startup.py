"""What the S3 endpoint's front costs at start-up, A/B between two source trees in one run.

Every `headrace up` starts rclone and the front (`python -m headrace.s3api.front`, a process
of its own) and waits for both. Three figures per tree, rounds alternating the trees so
drift on the shared machine hits both alike:

- front: from spawning the front's process to its "listening on" line (its imports and
  aiohttp's start; rclone's address given at once); front-cpu: the CPU time (user + system)
  that process used, which on a loaded machine varies far less than the wall time;
- endpoint: `start_endpoint()` as the coordinator calls it, rclone and the front together;
  endpoint-cpu: the CPU time of rclone and the front, started and stopped;
- up: `headrace up` (benchmarks/app, folder storage, SQLite ledger, `s3 = 127.0.0.1:0`) from
  spawning it to its info file naming it.

    .venv/bin/python benchmarks/s3_front_startup.py --tree main=/work/main/src \\
        --tree new=src [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent / "app"

_ENDPOINT = """
import sys, time
from headrace.config import load_settings
from headrace.s3api.rclone import start_endpoint
settings = load_settings(sys.argv[1], home=sys.argv[2], s3="127.0.0.1:0")
started = time.perf_counter()
endpoint = start_endpoint(sys.argv[3], settings)
took = time.perf_counter() - started
endpoint.stop()
import resource
children = resource.getrusage(resource.RUSAGE_CHILDREN)
print(took, children.ru_utime + children.ru_stime)
"""


def _env(src: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(src).resolve())}


def front_start(src: str, folder: Path) -> tuple[float, float]:
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "headrace.s3api.front", "--host", "127.0.0.1"),
            *("--port", "0", "--upstream", "http://127.0.0.1:9", "--root", str(folder)),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        env=_env(src),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    took = time.perf_counter() - started
    proc.send_signal(signal.SIGTERM)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert line.startswith(b"listening on"), line
    return took, usage.ru_utime + usage.ru_stime


def endpoint_start(src: str, folder: Path) -> tuple[float, float]:
    project, home, root = folder / "p", folder / "home", folder / "buckets"
    project.mkdir(exist_ok=True)
    out = subprocess.run(
        [sys.executable, "-c", _ENDPOINT, str(project), str(home), str(root)],
        capture_output=True,
        text=True,
        check=True,
        env=_env(src),
    )
    took, cpu = out.stdout.split()
    return float(took), float(cpu)


def up_start(src: str, folder: Path) -> tuple[float, None]:
    home = folder / "home-up"
    info = home / "coordinator.json"
    env = {**_env(src), "HEADRACE_HOME": str(home), "HEADRACE_S3": "127.0.0.1:0"}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "headrace.cli", "-C", str(APP_DIR), "up", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        while True:
            if info.exists():
                with_pid = json.loads(info.read_text() or "{}")
                if with_pid.get("pid") == proc.pid and with_pid.get("s3"):
                    return time.perf_counter() - started, None
            if proc.poll() is not None:
                raise RuntimeError(f"headrace up exited with {proc.returncode}")
            if time.perf_counter() - started > 120:
                raise RuntimeError("headrace up did not start in 120 s")
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


MEASURES = {"front": front_start, "endpoint": endpoint_start, "up": up_start}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", action="append", required=True, help="NAME=SRC_FOLDER")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree)
    names = [*MEASURES, "front-cpu", "endpoint-cpu"]
    times: dict[str, dict[str, list[float]]] = {m: {t: [] for t in trees} for m in names}
    for round_ in range(args.rounds):
        order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
        for measure, run in MEASURES.items():
            for name in order:
                with tempfile.TemporaryDirectory(prefix="s3-startup-") as folder:
                    wall, cpu = run(trees[name], Path(folder))
                times[measure][name].append(wall)
                if cpu is not None:
                    times[f"{measure}-cpu"][name].append(cpu)
    print(f"{'measure':<13}" + "".join(f"{name:>28}" for name in trees))
    for measure, by_tree in times.items():
        cells = []
        for values in by_tree.values():
            cells.append(f"{statistics.median(values):.3f} s ({min(values):.3f}-{max(values):.3f})")
        print(f"{measure:<13}" + "".join(f"{c:>28}" for c in cells))
    print(json.dumps(times))
    return 0


if __name__ == "__main__":
    sys.exit(main())
