"""headrace's Ray engine against the same steps written directly in Ray Data, same run.

The notebook pipeline of benchmarks/data_pipeline.py (read_parquet, count, schema, add_column,
drop_columns, sort, two pandas map_batches filters, write_parquet) over the anchor's generated
reviews (shared/anchors/reviews_data.py), twice per round:

* headrace: the lines as the notebook writes them, `from headrace import data`, with
  `DataContext.engine = "ray"` (headrace builds the plan, Ray Data runs it);
* Ray Data: the anchor's own function (shared/anchors/ray_data_pipeline.py `run_ray`).

Each side runs in a fresh subprocess per round with `ray.init(num_cpus=2)` (not timed), the
sides alternate which goes first, and the ratio is the median of the rounds' ratios
(headrace / Ray Data; below 1 means headrace's Ray engine is faster). After timing, the two
outputs of the last round are compared row for row (sorted by review_id, all columns).

    .venv/bin/python benchmarks/data_engine_ray.py [--rows 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from data_pipeline import ANCHORS, compare, generate, notebook  # noqa: E402

OUT = "/tmp/headrace-bench-reviews-out"


def side(which: str, src: str, out: str) -> None:
    """One timed run in this (fresh) process; prints its seconds as JSON."""
    import ray

    shutil.rmtree(out, ignore_errors=True)
    if which == "ray-data":
        sys.path.insert(0, str(ANCHORS))
        from ray_data_pipeline import run_ray  # the anchor's steps, its own ray.init

        once = run_ray(src, out)
        os.makedirs(out)
        start = time.perf_counter()
        once(out)
    else:
        from headrace.data import DataContext

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        context = DataContext.get_current()
        context.engine = "ray"
        context.enable_progress_bars = False
        start = time.perf_counter()
        notebook(src, out)
    print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)
    ray.shutdown()


def run_side(which: str, src: str) -> tuple[float, str]:
    out = f"{OUT}/{which}"
    done = subprocess.run(
        [sys.executable, __file__, "--side", which, "--src", src, "--out", out],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "RAY_worker_niceness": "0"},
    )
    if done.returncode:
        raise SystemExit(f"{which} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"], out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--side")
    parser.add_argument("--src")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.side:
        side(args.side, args.src, args.out)
        return 0
    src = generate(args.rows)
    ours, theirs, ratios = [], [], []
    outs: dict[str, str] = {}
    for round_ in range(args.rounds):
        order = ["headrace-ray", "ray-data"] if round_ % 2 == 0 else ["ray-data", "headrace-ray"]
        times = {}
        for which in order:
            times[which], outs[which] = run_side(which, src)
        ours.append(times["headrace-ray"])
        theirs.append(times["ray-data"])
        ratios.append(ours[-1] / theirs[-1])
        print(
            f"round {round_ + 1}: headrace engine=ray {ours[-1]:.2f} s, "
            f"Ray Data {theirs[-1]:.2f} s, ratio {ratios[-1]:.2f}",
            flush=True,
        )
    result = {
        "rows": args.rows,
        "headrace_ray_s": ours,
        "ray_data_s": theirs,
        "headrace_ray_median_s": statistics.median(ours),
        "ray_data_median_s": statistics.median(theirs),
        "ratio_median": statistics.median(ratios),
        **compare(outs["headrace-ray"], outs["ray-data"]),
    }
    print(json.dumps(result, indent=2))
    if not result["identical_rows"]:
        print("OUTPUTS DIFFER", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
