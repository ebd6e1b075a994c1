"""System 3 end to end on the real Landsat bands: `headrace up` as a subprocess runs the band
composite state machine; one cell is made to fail (a missing band), so the Catch path and its
notification run while every other cell's composite and task-log row are present."""

import json
import re
import sys
from pathlib import Path

import pytest
import rasterio

from headrace.app import load_app
from headrace.config import load_settings
from headrace.ledger import Ledger
from headrace.tables import Tables
from headrace.workflows import api
from tests.e2e_helpers import Up, headrace

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "band_composite"


@pytest.fixture(params=["landsat", "generated"])
def cells(request, tmp_path):
    """The real Landsat bands cut into cells (../shared/data), or the example's generated cells
    (rasterio-written, Landsat-like) so a fresh clone runs this test too."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        from cells import landsat_cells, landsat_scene
        from rasters import write_sample_cells

        if request.param == "landsat":
            request.getfixturevalue("shared_data")
            scene = landsat_scene()
            assert scene is not None
            yield landsat_cells(scene, tmp_path / "cells")
        else:
            yield write_sample_cells(tmp_path / "cells", cells=4, size=(300, 320))
    finally:
        sys.path.remove(str(EXAMPLE))


def test_band_composites_with_one_failing_cell(cells, tmp_path):
    home = tmp_path / "home"
    env = {
        "HEADRACE_HOME": str(home),
        "HEADRACE_POLL_INTERVAL": "0.3",
        "COMPOSITE_NOTICES": str(tmp_path / "notices"),
    }
    broken = {
        "cell": "broken",
        "bands": {**cells[0]["bands"], "red": str(tmp_path / "cells" / "missing" / "red.tif")},
        "date": "2015-08-04",
    }
    up = Up(EXAMPLE, env, tmp_path / "up.log").start()
    try:
        started = headrace(
            "start-execution",
            "band-composite",
            "--name",
            "landsat",
            "--input",
            json.dumps({"cells": [*cells, broken], "output_bucket": "composites"}),
            project=EXAMPLE,
            env=env,
        )
        assert started.returncode == 0, started.stderr
        ledger = Ledger(load_settings(EXAMPLE, home=str(home)).ledger_url)
        row = api.wait_for(ledger, "landsat", timeout=240)
        assert row["status"] == "SUCCEEDED", (row, up.output())
        results = {r["cell"]: r for r in row["output"]}
        assert results["broken"]["status"] == "FAILED"
        assert results["broken"]["error"] == "States.TaskFailed"
        good = [c["cell"] for c in cells]
        for name in good:
            assert results[f"composite-{name}"]["status"] == "SUCCEEDED"
            path = home / "buckets" / "composites" / "2015-08-04" / f"{name}.tif"
            with rasterio.open(path) as src:
                assert src.count == 3 and src.crs.to_epsg() == 32616
                assert src.overviews(1)  # overviews were built
                assert src.tags(1)["STATISTICS_MEAN"]
        log = Tables(ledger).scan("composite-tasklog")["Items"]
        assert sorted(i["cell"] for i in log) == sorted(good)
        failures = (tmp_path / "notices" / "failures.jsonl").read_text().splitlines()
        assert len(failures) == 1 and "cell broken failed" in failures[0]
        assert len((tmp_path / "notices" / "done.jsonl").read_text().splitlines()) == 1
        # the failed job's logs say why
        jobs = json.loads(headrace("jobs", "list", "--json", project=EXAMPLE, env=env).stdout)
        failed = [j for j in jobs if j["status"] == "FAILED"]
        assert len(failed) == 1
        logs = headrace("jobs", "logs", failed[0]["jobId"], project=EXAMPLE, env=env).stdout
        assert "missing" in logs and "red.tif" in logs
        history = json.loads(
            headrace("history", "landsat", "--json", project=EXAMPLE, env=env).stdout
        )
        assert [e["type"] for e in history].count("MapIterationSucceeded") == len(good) + 1
        graph = headrace("graph", "band-composite", "-e", "landsat", project=EXAMPLE, env=env)
        assert graph.returncode == 0 and graph.stdout.startswith("flowchart TD")
        # the Map's iteration counts, and the job state inside it coloured per item: the
        # broken cell's failure was caught (NotifyFailure ran), so it is caught, not failed
        assert f"Map<br/>{len(good) + 1} succeeded" in graph.stdout
        job = re.search(r"^\s+(s\d+)\[\"Composite<br/>Task<br/>([^\"]*)\"\]$", graph.stdout, re.M)
        assert job and job.group(2) == f"{len(good)} succeeded · 1 caught (States.TaskFailed)"
        assert re.search(rf"^\s+class [s\d,]*\b{job.group(1)}\b[s\d,]* caught$", graph.stdout, re.M)
        dot = headrace("graph", "band-composite", "--format", "dot", project=EXAMPLE, env=env)
        assert dot.stdout.startswith("digraph") and dot.stdout.count("{") == dot.stdout.count("}")
        assert up.terminate() == 0
        ledger.close()
    finally:
        if up.alive():
            up.kill9()


def test_example_definition_is_valid_and_uses_known_resources():
    app = load_app(load_settings(EXAMPLE))
    app.register_services()
    app.check_state_machines()
    assert "band-composite" in app.job_definitions
