"""examples/digits_batch: train, push, score a generated table with the registered model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_example_scores_every_row_with_the_pushed_model(tmp_path):
    folder = tmp_path / "digits_batch"
    shutil.copytree(
        ROOT / "examples" / "digits_batch", folder, ignore=shutil.ignore_patterns(".headrace")
    )
    env = {**os.environ, "HEADRACE_PROJECT": str(folder)}
    env.pop("HEADRACE_DATA_ENGINE", None)
    script = folder / "digits_batch.py"
    for rows in (6_000, 2_500):  # the second run: fewer rows, a new version
        done = subprocess.run(
            [sys.executable, str(script), "--rows", str(rows)],
            capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert "pushed digits:2 (alias production)" in done.stdout
    assert "scored 2,500 images on the local engine" in done.stdout
    scored = pq.read_table(folder / ".headrace" / "digits_batch" / "scored")
    assert scored.num_rows == 2_500
    assert sorted(scored["image_id"].to_pylist()) == list(range(2_500))
    labels, predicted = scored["label"].to_pylist(), scored["predicted"].to_pylist()
    accuracy = sum(a == b for a, b in zip(labels, predicted, strict=True)) / len(labels)
    assert accuracy > 0.9
    assert f"output: {folder / '.headrace' / 'digits_batch' / 'scored'}" in done.stdout
