"""The Ray Data reviews notebook on headrace's local engine against Ray Data, same run.

Data: the anchor's generator (shared/anchors/reviews_data.py: ROWS synthetic product reviews
in 16 snappy Parquet files, seeds 2024 + file index), byte for byte, generated once per size
and cached in /tmp/headrace-bench-cache (benchmarks/_reviews_cache.py; not timed).
Pipeline, as the notebook writes it: read_parquet;
count(); schema(); add_column("helpful_votes_ratio", lambda df: df["helpful_votes"] /
df["total_votes"]); drop_columns([review_body, vine, product_parent, verified_purchase,
review_headline]); sort("total_votes"); map_batches(lambda df: df[df["total_votes"] < 100]);
map_batches(lambda df: df[(df["total_votes"] > 0) & (df["marketplace"] == "US")]);
write_parquet. headrace runs those lines with `from headrace import data` (the default batch
format); Ray Data is the anchor script itself (shared/anchors/ray_data_pipeline.py, which passes
batch_format="pandas" because today's Ray default batch is a dict of numpy arrays), in a
subprocess of the same interpreter (Ray 2.60 from the project's [ray] extra), ray.init
excluded from its times as in the anchor. Both: 3 runs, output folder wiped before each,
median (min-max). After timing, the two outputs are compared row for row (sorted by
review_id; all 10 columns equal, NaN equal to NaN) and headrace's files are checked to be in
total_votes order.

    .venv/bin/python benchmarks/data_pipeline.py [--rows 1000000] [--runs 3] [--no-ray]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _reviews_cache
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
ANCHORS = HERE.parents[1] / "shared" / "anchors"
RAY_OUT = "/tmp/anchors-reviews-out/ray"  # where the anchor script writes
DROP = ["review_body", "vine", "product_parent", "verified_purchase", "review_headline"]


def generate(rows: int) -> str:
    return _reviews_cache.reviews(rows, 16, ANCHORS)


def notebook(src: str, out: str) -> tuple[int, object]:
    """The notebook's steps, as written for Ray Data, with headrace's module."""
    from headrace import data

    ds = data.read_parquet(src)
    n = ds.count()
    schema = ds.schema()
    ds = ds.add_column("helpful_votes_ratio", lambda df: df["helpful_votes"] / df["total_votes"])
    ds = ds.drop_columns(DROP)
    ds = ds.sort("total_votes")
    ds = ds.map_batches(lambda df: df[df["total_votes"] < 100])
    ds = ds.map_batches(lambda df: df[(df["total_votes"] > 0) & (df["marketplace"] == "US")])
    ds.write_parquet(out)
    return n, schema


def run_headrace(src: str, runs: int) -> tuple[list[float], str]:
    from headrace.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    out = "/tmp/headrace-bench-reviews-out/headrace"
    times = []
    for rep in range(runs):
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        n, _ = notebook(src, out)
        times.append(time.perf_counter() - start)
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in glob.glob(f"{out}/*.parquet"))
        print(
            f"  headrace run {rep + 1}: {times[-1]:.2f} s; input {n:,}; output {rows:,}", flush=True
        )
    return times, out


def run_ray(src: str) -> tuple[list[float], str]:
    proc = subprocess.run(
        [sys.executable, str(ANCHORS / "ray_data_pipeline.py"), "ray", src],
        capture_output=True,
        text=True,
        cwd=str(ANCHORS),
        # Ray starts its workers at niceness 15; on a shared machine they would get less CPU
        # than headrace's (niceness 0), and Ray would look slower than it is
        env={**os.environ, "RAY_worker_niceness": "0"},
    )
    if proc.returncode != 0:
        raise SystemExit(f"Ray Data run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    times = [float(t) for t in re.findall(r"ray run \d+: ([\d.]+) s", proc.stdout)]
    for line in proc.stdout.splitlines():
        if line.startswith(("ray ", "  ray run")):
            print(line, flush=True)
    return times, RAY_OUT


def _sorted_table(folder: str) -> pa.Table:
    files = sorted(glob.glob(f"{folder}/**/*.parquet", recursive=True))
    table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")
    return table.sort_by("review_id")


def compare(ours: str, theirs: str) -> dict:
    a, b = _sorted_table(ours), _sorted_table(theirs)
    same_columns = sorted(a.column_names) == sorted(b.column_names)
    b = b.select(a.column_names).cast(a.schema) if same_columns else b
    equal = same_columns and a.num_rows == b.num_rows and a.equals(b)
    files = sorted(glob.glob(f"{ours}/*.parquet"))
    votes = pa.concat_tables([pq.read_table(f, columns=["total_votes"]) for f in files])
    ordered = votes.column("total_votes").to_numpy()
    return {
        "rows_headrace": a.num_rows,
        "rows_ray": b.num_rows,
        "identical_rows": bool(equal),
        "headrace_sorted": bool((ordered[1:] >= ordered[:-1]).all()),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    src = generate(args.rows)
    print(f"headrace local engine, {args.rows:,} rows", flush=True)
    ours, out = run_headrace(src, args.runs)
    result = {
        "rows": args.rows,
        "headrace_s": ours,
        "headrace_median_s": statistics.median(ours),
    }
    if not args.no_ray:
        print("Ray Data (anchor script)", flush=True)
        theirs, ray_out = run_ray(src)
        result.update(
            ray_s=theirs,
            ray_median_s=statistics.median(theirs),
            ratio=statistics.median(theirs) / statistics.median(ours),
            **compare(out, ray_out),
        )
    print(json.dumps(result, indent=2))
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / f"data_pipeline_{args.rows}.json").write_text(json.dumps(result, indent=2))
    if "identical_rows" in result and not (result["identical_rows"] and result["headrace_sorted"]):
        print("OUTPUTS DIFFER", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    sys.exit(main())
