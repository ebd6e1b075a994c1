"""The GRIB -> Parquet script users write today (pygrib + pandas), run as a child process.

Kept in its own file because pygrib bundles its own libeccodes: importing it next to the
``eccodes`` package in one process crashes at exit, so this script never imports headrace.

    python benchmarks/_grib_baseline.py check FILE...   -> JSON list of files it converts
    python benchmarks/_grib_baseline.py serve FILE...   -> timed passes on request (see serve)
    python benchmarks/_grib_baseline.py cold FILE...    -> JSON: first and second pass times
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()  # before the imports: a cold process pays for them too

import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import uuid  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pygrib  # noqa: E402

_IMPORTED = time.perf_counter()


def convert(src: str, dst: str) -> None:
    """Per file: every message's values, stacked into a DataFrame, written with snappy."""
    columns, names, seen = [], [], {}
    grbs = pygrib.open(src)
    try:
        for grb in grbs:
            values = grb.values
            if np.ma.isMaskedArray(values):
                values = np.ma.filled(values.astype(np.float64), np.nan)
            columns.append(np.asarray(values, dtype=np.float64).ravel())
            count = seen.get(grb.shortName, 0)
            seen[grb.shortName] = count + 1
            names.append(grb.shortName if count == 0 else f"{grb.shortName}_{count}")
    finally:
        grbs.close()
    frame = pd.DataFrame(np.stack(columns, axis=1), columns=names)
    frame.to_parquet(dst, compression="snappy")


def check(files: list[str]) -> list[str]:
    ok = []
    with tempfile.TemporaryDirectory() as folder:
        for path in files:
            try:
                convert(path, os.path.join(folder, "check.parquet"))
            except Exception as exc:  # report and leave the file out of the comparison
                print(f"baseline cannot convert {path}: {exc!r}", file=sys.stderr)
            else:
                ok.append(path)
    return ok


def one_pass(files: list[str], folder: str) -> None:
    """Convert every file to a new Parquet file in ``folder``, deleted right after."""
    for path in files:
        dst = os.path.join(folder, f"{uuid.uuid4().hex}.parquet")
        convert(path, dst)
        os.unlink(dst)


def serve(files: list[str]) -> None:
    """One warm-up pass, then ``pass N`` on stdin -> N timed passes; ``exit`` -> peak RSS.

    Each answer is one JSON line on stdout. Kept alive between requests so that the caller can
    alternate short measurements of this and the converter under test (paired runs).
    """
    with tempfile.TemporaryDirectory() as folder:
        one_pass(files, folder)
        print(json.dumps({"ready": True}), flush=True)
        size = sum(os.path.getsize(p) for p in files)
        for line in sys.stdin:
            command, *args = line.split()
            if command != "pass":
                break
            passes = int(args[0])
            started, cpu = time.perf_counter(), time.process_time()
            for _ in range(passes):
                one_pass(files, folder)
            answer = {
                "bytes": size * passes,
                "seconds": time.perf_counter() - started,
                "cpu_seconds": time.process_time() - cpu,
                "passes": passes,
            }
            print(json.dumps(answer), flush=True)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_rss_mib": [peak_kib / 1024]}), flush=True)


def cold(files: list[str]) -> None:
    """In this fresh process: the imports, a first pass, then a second (warm) pass."""
    with tempfile.TemporaryDirectory() as folder:
        passes, cpu = [], []
        for _ in range(2):
            started, started_cpu = time.perf_counter(), time.process_time()
            one_pass(files, folder)
            passes.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
    times = {"first": passes[0], "second": passes[1], "first_cpu": cpu[0], "second_cpu": cpu[1]}
    print(json.dumps({"imports": _IMPORTED - _STARTED, **times}))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "check":
        print(json.dumps(check(args)))
    elif command == "cold":
        cold(args)
    else:
        serve(args)
