"""Streaming memory: read -> map_batches -> write over 50M narrow rows, and a sort that spills.

1. Streaming. ROWS rows of four 8-byte columns (id, a, b as int64, x as float64: 32 bytes a
   row, 1.6 GB as Arrow at 50M rows) in 10 Parquet files of 500,000-row row groups, generated
   once into /tmp/headrace-bench-memory (not timed). A child process runs

       data.read_parquet(src).map_batches(add_one).write_parquet(out)

   (`add_one` a pandas function, so the blocks go through the task-pool workers) while this
   process samples, every 20 ms, the resident memory of the child and all its descendants
   (the dataset workers) plus the bytes in the child's shared-memory block folder (blocks
   between processes live there, and count against RAM although no process maps them yet).
   Peak = the largest sample. Output row count checked.
2. Sort that spills. SORT_ROWS rows (int64 random key, int64 payload; 16 bytes a row) sorted by
   key with `DataContext.sort_memory_bytes` set to a fraction of the input's size, written to
   Parquet; the child reports whether the sort spilled (its spill folder existed) and the output
   is checked to be in key order with every row present. Same sampling.

    .venv/bin/python benchmarks/data_memory.py [--rows 50000000] [--sort-rows 20000000]
        [--sort-memory-mb 64] [--only stream|sort]
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from headrace.data import block_folders

ROOT = Path("/tmp/headrace-bench-memory")
SPILL = ROOT / "spill"  # the sort's DataContext.spill_dir


def narrow(rows: int) -> str:
    folder = ROOT / f"narrow-{rows}"
    if not list(folder.glob("*.parquet")):
        print(f"generating {rows:,} rows into {folder} (not timed)", flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        per_file, group = -(-rows // 10), 500_000
        rng = np.random.default_rng(0)
        for part, first in enumerate(range(0, rows, per_file)):
            n = min(per_file, rows - first)
            path = folder / f"part-{part:02d}.parquet"
            schema = pa.schema(
                [("id", pa.int64()), ("a", pa.int64()), ("b", pa.int64()), ("x", pa.float64())]
            )
            with pq.ParquetWriter(path, schema) as out:
                for start in range(first, first + n, group):
                    m = min(group, first + n - start)
                    ids = np.arange(start, start + m, dtype=np.int64)
                    out.write_table(
                        pa.table(
                            {"id": ids, "a": ids % 1000, "b": ids * 7, "x": rng.random(m)},
                            schema=schema,
                        )
                    )
    return str(folder)


def sortable(rows: int) -> str:
    folder = ROOT / f"sort-{rows}"
    if not list(folder.glob("*.parquet")):
        print(f"generating {rows:,} rows into {folder} (not timed)", flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(1)
        per_file = -(-rows // 8)
        for part, first in enumerate(range(0, rows, per_file)):
            n = min(per_file, rows - first)
            table = pa.table(
                {
                    "key": rng.integers(0, 1 << 40, n),
                    "payload": np.arange(first, first + n, dtype=np.int64),
                }
            )
            pq.write_table(table, folder / f"part-{part}.parquet", row_group_size=500_000)
    return str(folder)


def add_one(df):
    df["b"] = df["b"] + 1
    return df


def child(kind: str, src: str, out: str, sort_memory: int) -> None:
    import shutil

    from headrace import data
    from headrace.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    if kind == "stream":
        data.read_parquet(src).map_batches(add_one).write_parquet(out)
    else:
        context.sort_memory_bytes = sort_memory
        context.spill_dir = str(SPILL)
        data.read_parquet(src).sort("key").write_parquet(out)
    print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)


def measure(kind: str, src: str, out: str, sort_memory: int = 0) -> dict:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", kind, src, out, str(sort_memory)],
        stdout=subprocess.PIPE,
        text=True,
    )
    me = psutil.Process(proc.pid)
    # the child's block folder, named after its pid and start time: read while it runs
    shm = os.path.join(block_folders.root(), block_folders.folder_name(proc.pid))
    peak = {"tree_rss": 0, "shm": 0, "total": 0, "spilled_bytes": 0}
    SPILL.mkdir(parents=True, exist_ok=True)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss = held = spilled = 0
            with contextlib.suppress(psutil.Error):
                for p in [me, *me.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        rss += p.memory_info().rss
            for f in glob.glob(f"{shm}/*"):
                with contextlib.suppress(OSError):
                    held += os.path.getsize(f)
            for root, _, names in os.walk(SPILL):
                for name in names:
                    with contextlib.suppress(OSError):
                        spilled += os.path.getsize(os.path.join(root, name))
            peak["spilled_bytes"] = max(peak["spilled_bytes"], spilled)
            peak["tree_rss"] = max(peak["tree_rss"], rss)
            peak["shm"] = max(peak["shm"], held)
            peak["total"] = max(peak["total"], rss + held)
            time.sleep(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    stdout, _ = proc.communicate()
    done.set()
    thread.join()
    if proc.returncode:
        raise SystemExit(f"{kind} run failed (exit {proc.returncode})")
    return {**json.loads(stdout.strip().splitlines()[-1]), **peak}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000_000)
    parser.add_argument("--sort-rows", type=int, default=20_000_000)
    parser.add_argument("--sort-memory-mb", type=int, default=64)
    parser.add_argument("--only", choices=["stream", "sort"])
    parser.add_argument("--child", nargs=4)
    args = parser.parse_args()
    if args.child:
        kind, src, out, memory = args.child
        child(kind, src, out, int(memory))
        return 0
    result: dict = {}
    if args.only != "sort":
        stream_part(args, result)
    if args.only == "stream":
        return 0
    return sort_part(args, result)


def stream_part(args: argparse.Namespace, result: dict) -> None:
    src = narrow(args.rows)
    out = str(ROOT / "out-stream")
    stream = measure("stream", src, out)
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in glob.glob(f"{out}/*.parquet"))
    assert rows == args.rows, rows
    result["stream"] = {"rows": args.rows, "arrow_bytes": args.rows * 32, **stream}
    print(json.dumps(result["stream"]), flush=True)


def sort_part(args: argparse.Namespace, result: dict) -> int:
    src = sortable(args.sort_rows)
    out = str(ROOT / "out-sort")
    sort = measure("sort", src, out, args.sort_memory_mb << 20)
    files = sorted(glob.glob(f"{out}/*.parquet"))
    keys = pa.concat_tables([pq.read_table(f, columns=["key"]) for f in files]).column("key")
    keys = keys.to_numpy()
    ordered = bool((keys[1:] >= keys[:-1]).all())
    complete = len(keys) == args.sort_rows
    result["sort"] = {
        "rows": args.sort_rows,
        "arrow_bytes": args.sort_rows * 16,
        "sort_memory_bytes": args.sort_memory_mb << 20,
        "ordered": ordered,
        "complete": complete,
        **sort,
    }
    print(json.dumps(result["sort"]), flush=True)
    spilled = result["sort"]["spilled_bytes"] > 0
    return 0 if ordered and complete and spilled else 1


if __name__ == "__main__":
    sys.exit(main())
