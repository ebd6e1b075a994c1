"""Batch inference with one model object everywhere: train, push, score a large table.

    python examples/digits_batch/digits_batch.py [--rows 200000] [--engine local|ray]

1. Trains a classifier on scikit-learn's bundled digits (8x8 images, 64 pixel columns) and
   pushes it to the project's model registry as `digits`, alias `production`.
2. Generates a Parquet table of `--rows` digit images: the bundled images repeated with a
   little pixel noise, with their true label.
3. Scores it with `map_batches(ModelScorer, compute=ActorPoolStrategy(1, 2))`: each worker of
   the pool loads the model once (checked by its SHA-256) and scores batch after batch; the
   same script runs on the local engine or on Ray (`--engine ray`).
4. Writes the scored table as Parquet and prints the accuracy, the version that scored and
   where the output is.

The serving endpoint loads the same alias, so it answers with exactly the model that scored.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
os.environ.setdefault("HEADRACE_PROJECT", str(HERE))  # workers find the registry here too

from headrace import data, models  # noqa: E402
from headrace.data import ActorPoolStrategy  # noqa: E402

PIXELS = [f"pixel_{r}_{c}" for r in range(8) for c in range(8)]


def train_and_push() -> models.ModelVersion:
    """A random forest on the bundled digits, pushed with alias `production`."""
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier

    digits = load_digits(as_frame=True)
    X, y = digits.data, digits.target
    clf = RandomForestClassifier(n_estimators=40, random_state=0, n_jobs=1)
    clf.fit(X[:1500], y[:1500])
    return models.push(
        "digits",
        clf,
        alias="production",
        metrics={"accuracy": float(clf.score(X[1500:], y[1500:]))},
        description="random forest on the bundled 8x8 digits",
    )


def generate(path: Path, rows: int, seed: int = 0) -> Path:
    """`rows` noisy copies of the bundled images as Parquet files of 50,000 rows each."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    shutil.rmtree(path, ignore_errors=True)  # a run with fewer rows leaves no files behind
    path.mkdir(parents=True)
    for part, start in enumerate(range(0, rows, 50_000)):
        n = min(50_000, rows - start)
        pick = rng.integers(0, len(digits.target), n)
        pixels = digits.data[pick] + rng.normal(0, 0.5, (n, 64))
        pixels = np.clip(pixels, 0, 16)
        columns = {name: pixels[:, i] for i, name in enumerate(PIXELS)}
        columns["label"] = digits.target[pick]
        columns["image_id"] = np.arange(start, start + n)
        pq.write_table(pa.table(columns), path / f"part-{part:05d}.parquet")
    return path


def score(images: Path, out: Path, *, batch_size: int = 4096) -> data.Dataset:
    """The scoring pipeline: read, score with the registered model, write."""
    ds = data.read_parquet(str(images))
    ds = ds.map_batches(
        models.ModelScorer,
        fn_constructor_args=("digits",),
        fn_constructor_kwargs={"alias": "production", "features": PIXELS, "output": "predicted"},
        compute=ActorPoolStrategy(1, 2),
        batch_size=batch_size,
        batch_format="pyarrow",
    )
    ds.select_columns(["image_id", "label", "predicted"]).write_parquet(str(out), mode="overwrite")
    return ds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--engine", choices=["local", "ray"], default=None)
    args = parser.parse_args(argv)
    if args.engine:
        data.DataContext.get_current().engine = args.engine
    work = HERE / ".headrace" / "digits_batch"
    version = train_and_push()
    print(
        f"pushed {version.ref} (alias production), accuracy on held-out digits "
        f"{version.metrics['accuracy']:.3f}"
    )
    images = generate(work / "images", args.rows)
    started = time.perf_counter()
    out = work / "scored"
    score(images, out)
    seconds = time.perf_counter() - started
    scored = pq.read_table(out)
    right = np.asarray(scored["label"]) == np.asarray(scored["predicted"])
    engine = data.DataContext.get_current().engine
    print(
        f"scored {scored.num_rows:,} images on the {engine} engine in {seconds:.1f} s "
        f"({scored.num_rows / seconds:,.0f} rows/s) with {version.ref}: "
        f"accuracy {right.mean():.3f}"
    )
    print(f"output: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
