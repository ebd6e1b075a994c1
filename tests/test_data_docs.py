"""docs/datasets.md's snippets and examples/reviews run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.data_helpers import reviews_module

ROOT = Path(__file__).resolve().parents[1]


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "datasets.md").read_text(), re.S)


@pytest.mark.slow
def test_notebook_snippet_on_the_projects_buckets(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADRACE_HOME", str(tmp_path / "home"))
    buckets = tmp_path / "home" / "buckets"
    reviews_module().generate(str(buckets / "amazon-reviews-pds" / "parquet"), rows=2_000)
    (buckets / "reviews-curated").mkdir()
    (snippet,) = [b for b in _blocks() if "ActorPoolStrategy" in b]
    scope: dict = {}
    exec(snippet, scope)
    written = list((buckets / "reviews-curated" / "helpful-reviews").glob("*.parquet"))
    assert written
    from headrace import data

    out = data.read_parquet(str(buckets / "reviews-curated" / "helpful-reviews"))
    assert out.count() == scope["ds"].count() > 0
    assert "is_helpful" in out.columns() and "review_body" not in out.columns()


def test_batch_formats_snippet():
    (snippet,) = [b for b in _blocks() if "numpy_style" in b]
    scope: dict = {}
    exec(snippet, scope)
    assert [r["a"] for r in scope["pandas_style"].take_all()] == [0, 2, 4]
    assert scope["numpy_style"].take(2)[1]["root"] == 1.0
    assert scope["arrow_style"].count() == 3
    assert scope["by_parity"] == [{"odd": 0, "sum(a)": 6}, {"odd": 1, "sum(a)": 9}]


def test_errors_snippet():
    (snippet,) = [b for b in _blocks() if "UserFunctionError" in b]
    scope: dict = {}
    exec(snippet, scope)
    assert "MapBatches(parse)" in scope["message"] and "ValueError" in scope["message"]
    assert "rows 0-1 of the output of FromItems" in scope["message"]


@pytest.mark.slow
def test_reviews_example_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "reviews" / "run_demo.py"), "4000"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HEADRACE_HOME": str(tmp_path / "home")},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rows: 4000" in result.stdout
    kept = int(re.search(r"wrote ([\d,]+) reviews", result.stdout).group(1).replace(",", ""))
    curated = tmp_path / "home" / "buckets" / "reviews-curated"
    from headrace import data

    assert data.read_parquet(str(curated / "helpful-reviews")).count() == kept > 0
    assert list((curated / "helpful-reviews-sample-csv").glob("*.csv"))
    assert list((curated / "helpful-reviews-sample-json").glob("*.json"))


@pytest.mark.slow
@pytest.mark.ray
def test_reviews_example_as_a_job_on_each_engine(tmp_path):
    pytest.importorskip("ray")
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "reviews" / "run_jobs.py"), "2000"],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "HEADRACE_HOME": str(tmp_path / "home")},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "ray and local: the same rows" in result.stdout
    assert "rows: 2000" in result.stdout  # the notebook's count(), printed by each job
