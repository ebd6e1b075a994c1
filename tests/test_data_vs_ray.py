"""The same dataset code on Ray Data (2.60, the [ray] extra) and on headrace gives the same
results: names, types, values, order where the operation defines one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from headrace import data
from tests.data_helpers import reviews_module
from tests.data_parity_pipelines import run

pytestmark = [pytest.mark.ray, pytest.mark.slow]
HERE = Path(__file__).resolve().parent


def test_same_code_same_results_as_ray_data(tmp_path):
    pytest.importorskip("ray")
    src = tmp_path / "reviews"
    reviews_module().generate(str(src), rows=3_000, files_per_category=1, seed=4)
    out = tmp_path / "ray.json"
    proc = subprocess.run(
        [sys.executable, str(HERE / "data_parity_pipelines.py"), "ray", str(src), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    theirs = json.loads(out.read_text())
    ours = json.loads(json.dumps(run(data, str(src))))
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        assert ours[key] == theirs[key], key
