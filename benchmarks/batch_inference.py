"""Batch inference with an actor pool: headrace's local engine against Ray Data, same model.

Data: ROWS noisy copies of scikit-learn's bundled 8x8 digits (64 float pixel columns, an id and
the label) in 16 Parquet files, generated once per size into /tmp/headrace-bench-cache/digits/ROWS
(not timed). Model: a LogisticRegression fitted on the bundled digits, saved once with joblib;
both sides load that same file in each actor's constructor and call `predict` on pandas batches
of 4,096 rows:

    ds.map_batches(Scorer, batch_size=4096, batch_format="pandas", <pool of 2 actors>)

headrace: `data.read_parquet(...)` with `compute=ActorPoolStrategy(2, 2)`; Ray Data 2.60:
`ray.data.read_parquet(...)` with `compute=ray.data.ActorPoolStrategy(size=2)` and
`num_cpus=0.5` per actor (at one CPU each, a pool of 2 on Ray's 2 CPUs leaves none for the
reads that feed it and makes no progress: ../shared/anchors/RESULTS.md section 7), in a
subprocess, `ray.init(num_cpus=2)` excluded from its time, Ray's workers at niceness 0 like
headrace's (`RAY_worker_niceness=0`; Ray's default 15 would starve them on a shared
machine). Both consume every scored batch (nothing written), 3 runs each, interleaved,
median; the ratio is the median of the rounds' ratios. The predictions are compared row for
row (by id) at the end.

    .venv/bin/python benchmarks/batch_inference.py [--rows 2000000] [--runs 3] [--no-ray]
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

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

MODEL = "/tmp/headrace-bench-cache/digits/model.joblib"
# Ray starts its workers at niceness 15: on a machine shared with other work they would get
# less CPU than headrace's workers (niceness 0) and Ray would look slower than it is
RAY_ENV = {**os.environ, "RAY_worker_niceness": "0"}
PIXELS = [f"pixel_{i}" for i in range(64)]

SCORER = """
import joblib


class Scorer:
    def __init__(self, path):
        self.model = joblib.load(path)

    def __call__(self, df):
        out = df[["id"]].copy()
        out["predicted"] = self.model.predict(df[PIXELS].to_numpy())
        return out
"""

RAY_SIDE = (
    """
import json, sys, time
import ray
PIXELS = [f"pixel_{i}" for i in range(64)]
"""
    + SCORER
    + """
folder, model, runs, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
ctx = ray.data.DataContext.get_current()
ctx.enable_progress_bars = False
times = []
for _ in range(runs):
    start = time.perf_counter()
    ds = ray.data.read_parquet(folder).map_batches(
        Scorer, fn_constructor_args=(model,), batch_size=4096, batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=2), num_cpus=0.5,
    )
    parts = [b for b in ds.iter_batches(batch_size=None, batch_format="pyarrow")]
    times.append(time.perf_counter() - start)
import pyarrow as pa, pyarrow.parquet as pq
pq.write_table(pa.concat_tables(parts), out)
print(json.dumps({"times": times}))
"""
)

namespace: dict = {"PIXELS": PIXELS}
exec(SCORER, namespace)  # the same class text on both sides
Scorer = namespace["Scorer"]


def generate(rows: int) -> str:
    folder = Path(f"/tmp/headrace-bench-cache/digits/{rows}")
    if not list(folder.glob("*.parquet")):
        from sklearn.datasets import load_digits

        print(f"generating {rows:,} rows into {folder} (not timed)", flush=True)
        digits = load_digits()
        rng = np.random.default_rng(0)
        partial = folder.with_name(folder.name + ".partial")  # renamed when complete
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        per_file = -(-rows // 16)
        for part, start in enumerate(range(0, rows, per_file)):
            n = min(per_file, rows - start)
            pick = rng.integers(0, len(digits.target), n)
            pixels = np.clip(digits.data[pick] + rng.normal(0, 0.5, (n, 64)), 0, 16)
            columns = {name: pixels[:, i] for i, name in enumerate(PIXELS)}
            columns["id"] = np.arange(start, start + n)
            columns["label"] = digits.target[pick]
            pq.write_table(pa.table(columns), partial / f"part-{part:02d}.parquet")
        partial.rename(folder)
    if not Path(MODEL).exists():
        import joblib
        from sklearn.datasets import load_digits
        from sklearn.linear_model import LogisticRegression

        digits = load_digits()
        model = LogisticRegression(max_iter=2000).fit(digits.data, digits.target)
        joblib.dump(model, MODEL)
    return str(folder)


def headrace_once(folder: str) -> tuple[float, pa.Table]:
    from headrace import data
    from headrace.data import ActorPoolStrategy

    start = time.perf_counter()
    ds = data.read_parquet(folder).map_batches(
        Scorer,
        fn_constructor_args=(MODEL,),
        batch_size=4096,
        batch_format="pandas",
        compute=ActorPoolStrategy(2, 2),
    )
    parts = list(ds.iter_batches(batch_size=None, batch_format="pyarrow"))
    return time.perf_counter() - start, pa.concat_tables(parts)


def ray_once(folder: str, out: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", RAY_SIDE, folder, MODEL, "1", out],
        capture_output=True,
        text=True,
        check=False,
        env=RAY_ENV,
    )
    if done.returncode:
        raise SystemExit(f"Ray Data side failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["times"][0]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    folder = generate(args.rows)
    ours, theirs, ratios = [], [], []
    ray_out = "/tmp/headrace-bench-cache/digits/ray-predictions.parquet"
    table = None
    for run in range(args.runs):
        seconds, table = headrace_once(folder)
        ours.append(seconds)
        line = f"run {run + 1}: headrace {seconds:.2f} s"
        if not args.no_ray:
            theirs.append(ray_once(folder, ray_out))
            ratios.append(theirs[-1] / seconds)
            line += f", Ray Data {theirs[-1]:.2f} s ({ratios[-1]:.1f}x)"
        print(line, flush=True)
    result = {
        "rows": args.rows,
        "headrace_s": statistics.median(ours),
        "headrace_rows_per_s": args.rows / statistics.median(ours),
    }
    assert table is not None and table.num_rows == args.rows
    if theirs:
        mine = table.sort_by("id")
        ray_table = pq.read_table(ray_out).sort_by("id")
        result.update(
            ray_data_s=statistics.median(theirs),
            ray_data_rows_per_s=args.rows / statistics.median(theirs),
            ratio=statistics.median(ratios),
            ratios_by_round=ratios,
            same_predictions=mine.column("predicted").equals(ray_table.column("predicted"))
            and mine.column("id").equals(ray_table.column("id")),
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
