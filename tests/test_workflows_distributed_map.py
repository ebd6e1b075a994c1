"""Distributed Maps run by the coordinator: Map Runs whose items are child executions."""

import contextlib
import csv
import gzip
import io
import json
import random
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from headrace.app import load_app
from headrace.cli import app as cli
from headrace.config import load_settings
from headrace.ledger import Ledger
from headrace.ledger.schema import attempts, invocations
from headrace.storage import ObjectStore
from headrace.workflows import api
from headrace.workflows.asl import parse
from tests.coordinator_thread import coordinator_thread
from tests.e2e_helpers import Up

APP_DIR = Path(__file__).parent / "apps" / "dmap"


@pytest.fixture
def dmap(tmp_path):
    settings = load_settings(
        APP_DIR, home=str(tmp_path / "home"), poll_interval=0.2, workers=2, metrics="127.0.0.1:0"
    )
    app = load_app(settings)
    with coordinator_thread(settings, app) as coordinator:
        ledger = Ledger(settings.ledger_url)
        urls = SimpleNamespace(
            storage_url=settings.storage_url,
            console=coordinator.metrics_url.removesuffix("/metrics"),
        )
        yield app, ledger, tmp_path, urls
    ledger.close()


def _data(tmp_path, n, **extra):
    return {
        "items": list(range(n)),
        "sleep": 0,
        "marks": str(tmp_path / "marks"),
        "gate": str(tmp_path / "gate"),
        **extra,
    }


def _runs(marks):
    out: dict[int, int] = {}
    for p in Path(marks).glob("*.*"):
        i = int(p.name.split(".", 1)[0])
        out[i] = out.get(i, 0) + 1
    return out


def test_each_item_is_a_child_execution_of_a_map_run(dmap):
    app, ledger, tmp_path, settings = dmap
    (tmp_path / "gate").mkdir()
    (tmp_path / "gate" / "open").touch()
    arn = api.start_execution(ledger, app, "standard", _data(tmp_path, 8), name="std-1")
    row = api.wait_for(ledger, arn, timeout=60)
    assert row["status"] == "SUCCEEDED", row
    assert row["output"]["results"] == [{"item": i, "square": i * i} for i in range(8)]
    runs = api.list_map_runs(ledger, "std-1")
    assert len(runs) == 1
    run = runs[0]
    assert run["mapRunArn"].startswith("arn:aws:states:local:000000000000:mapRun:standard/Fan:")
    assert run["status"] == "SUCCEEDED" and run["executionArn"] == arn
    assert run["itemCounts"]["succeeded"] == 8 and run["itemCounts"]["total"] == 8
    assert run["itemCounts"]["pending"] == 0 and run["maxConcurrency"] == 6
    children = api.map_run_executions(ledger, run["mapRunArn"])
    assert [c["idx"] for c in children] == list(range(8))
    run_id = run["mapRunArn"].rsplit(":", 1)[1]
    first = children[0]
    assert first["id"] == f"arn:aws:states:local:000000000000:execution:standard/Fan:{run_id}-0"
    assert first["name"] == f"{run_id}-0" and first["status"] == "SUCCEEDED"
    # a child has its own history, with its states in it, and says whose child it is
    history = [e["type"] for e in api.get_history(ledger, first["id"])]
    assert history[0] == "ExecutionStarted" and "TaskSucceeded" in history
    assert history[-1] == "ExecutionSucceeded"
    described = api.describe_execution(ledger, first["name"])
    assert described["map_run"] == run["mapRunArn"] and described["parent"] == arn
    assert described["input"]["item"] == 0
    # the parent's history holds the Map Run and each child's start and end, no child's states
    parent = api.get_history(ledger, arn)
    types = [e["type"] for e in parent]
    assert types.count("MapRunStarted") == 1 and "TaskScheduled" not in types
    started = [e["details"]["execution"] for e in parent if e["type"] == "MapIterationStarted"]
    assert started == [c["id"] for c in children]
    # executions lists top-level ones; a Map Run's children are listed with it
    assert [r["id"] for r in _cli(tmp_path, "executions", "--json")] == [arn]
    by_run = _cli(tmp_path, "executions", "--map-run", run["mapRunArn"], "--json")
    assert len(by_run) == 8
    assert _cli(tmp_path, "list-map-runs", "std-1", "--json")[0]["mapRunArn"] == run["mapRunArn"]
    described = _cli(tmp_path, "describe-map-run", run["mapRunArn"])
    assert described["executionCounts"]["succeeded"] == 8
    with pytest.raises(api.ExecutionError, match="does not exist"):
        api.describe_map_run(ledger, run["mapRunArn"] + "x")
    # the console's JSON API: the parent's Map Runs, a Map Run's children by index, pages
    shown = httpx.get(f"{settings.console}/api/executions/std-1").json()
    assert [r["mapRunArn"] for r in shown["map_runs"]] == [run["mapRunArn"]]
    page = httpx.get(f"{settings.console}/api/map-runs/{run['mapRunArn']}?limit=5").json()
    assert page["map_run"]["itemCounts"]["succeeded"] == 8
    assert [c["idx"] for c in page["items"]] == [0, 1, 2, 3, 4] and page["next"] == 4
    rest = httpx.get(f"{settings.console}/api/map-runs/{run['mapRunArn']}?after=4").json()
    assert [c["idx"] for c in rest["items"]] == [5, 6, 7] and rest["next"] is None
    child = httpx.get(f"{settings.console}/api/executions/{first['name']}").json()
    assert child["execution"]["map_run"] == run["mapRunArn"]
    listed = httpx.get(f"{settings.console}/api/executions").json()["items"]
    assert [r["id"] for r in listed] == [arn]
    assert httpx.get(f"{settings.console}/api/map-runs/nope").status_code == 404


def _cli(tmp_path, *args):
    result = CliRunner().invoke(
        cli, ["-C", str(APP_DIR), *args], env={"HEADRACE_HOME": str(tmp_path / "home")}
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_redrive_reruns_only_failed_children(dmap):
    app, ledger, tmp_path, _ = dmap
    arn = api.start_execution(ledger, app, "strict", _data(tmp_path, 12), name="strict-1")
    row = api.wait_for(ledger, arn, timeout=60)
    # items 3, 7 and 11 fail; one is tolerated, the second fails the Map Run
    assert row["status"] == "FAILED", row
    assert row["error"] == "States.ExceedToleratedFailureThreshold", row
    run = api.list_map_runs(ledger, arn)[0]
    assert run["status"] == "FAILED" and run["toleratedFailureCount"] == 1
    assert run["itemCounts"]["failed"] >= 2
    with pytest.raises(api.ExecutionError, match="redrive its parent"):
        api.redrive_execution(ledger, api.map_run_executions(ledger, run["mapRunArn"])[3]["id"])
    children = api.map_run_executions(ledger, run["mapRunArn"])
    kept = {c["idx"] for c in children if c["status"] == "SUCCEEDED"}
    # which of items 3, 7 and 11 failed and which the Map Run's failure aborted mid-task
    # depends on the order their tasks ended in
    failed = [c["idx"] for c in children if c["status"] == "FAILED"]
    (tmp_path / "gate").mkdir()
    (tmp_path / "gate" / "open").touch()
    api.redrive_execution(ledger, arn)
    row = api.wait_for(ledger, arn, timeout=60)
    assert row["status"] == "SUCCEEDED", row
    assert row["output"]["results"] == [{"item": i, "square": i * i} for i in range(12)]
    # children that had succeeded ran once; the failed ones ran again (and so may children
    # the failure aborted while their task ran)
    after = _runs(tmp_path / "marks")
    assert kept and all(after[i] == 1 for i in kept), (kept, after)
    assert {3, 7} <= set(range(12)) - kept and sorted(after) == list(range(12))
    run = api.describe_map_run(ledger, run["mapRunArn"])
    assert run["status"] == "SUCCEEDED" and run["redriveCount"] == 1
    assert run["itemCounts"]["succeeded"] == 12
    # a STANDARD child resumed from its history: the failed task, then the redrive
    child = api.map_run_executions(ledger, run["mapRunArn"])[failed[0]]
    types = [e["type"] for e in api.get_history(ledger, child["id"])]
    assert types.count("ExecutionStarted") == 1 and "ExecutionRedriven" in types
    assert types.index("TaskFailed") < types.index("ExecutionRedriven")


def test_tolerated_failures_and_express_children(dmap):
    app, ledger, tmp_path, _ = dmap
    arn = api.start_execution(ledger, app, "tolerant", _data(tmp_path, 10))
    row = api.wait_for(ledger, arn, timeout=60)
    assert row["status"] == "SUCCEEDED", row  # 2 of 10 failed, 30 % tolerated
    results = row["output"]["results"]
    assert results[3] is None and results[7] is None and results[0] == {"item": 0, "square": 0}
    run = api.list_map_runs(ledger, arn)[0]
    assert run["itemCounts"]["failed"] == 2 and run["toleratedFailurePercentage"] == 30
    # the count as configured (none: 0), not the 3 failures the percentage allows here
    assert run["toleratedFailureCount"] == 0
    # EXPRESS children keep no history but their start and end
    arn = api.start_execution(ledger, app, "express", _data(tmp_path, 4, gate=None))
    row = api.wait_for(ledger, arn, timeout=60)
    assert row["status"] == "SUCCEEDED", row
    run = api.list_map_runs(ledger, arn)[0]
    assert run["executionType"] == "EXPRESS"
    child = api.map_run_executions(ledger, run["mapRunArn"])[1]
    types = [e["type"] for e in api.get_history(ledger, child["id"])]
    assert types == ["ExecutionStarted", "ExecutionSucceeded"]
    assert child["status"] == "SUCCEEDED"


def test_cli_input_from_a_file_and_map_runs_at_80_columns(dmap):
    _, ledger, tmp_path, _ = dmap
    data = _data(tmp_path, 3, gate=None)
    (tmp_path / "input.json").write_text(json.dumps(data))
    env = {"HEADRACE_HOME": str(tmp_path / "home"), "COLUMNS": "80"}

    def run(*args):
        return CliRunner().invoke(cli, ["-C", str(APP_DIR), *args], env=env)

    # --input file://PATH, as the AWS CLI takes it
    started = run("start-execution", "express", "--input", f"file://{tmp_path}/input.json")
    assert started.exit_code == 0, started.output
    arn = started.output.strip()
    assert api.wait_for(ledger, arn, timeout=60)["status"] == "SUCCEEDED"
    assert api.describe_execution(ledger, arn)["input"] == data
    missing = run("start-execution", "express", "--input", f"file://{tmp_path}/nope.json")
    # click's error box wraps a long temp path: read the message without the box
    message = "".join(c for c in missing.output if c not in "│╭╮╰╯─ \n")
    assert missing.exit_code == 2 and "nope.json" in message
    # list-map-runs piped at 80 columns: one "field  value" line each, nothing cut with "…"
    # (an ARN wider than the terminal folds onto the next line)
    listed = run("list-map-runs", arn)
    assert listed.exit_code == 0, listed.output
    lines = [line.split() for line in listed.output.splitlines()]
    assert ["status", "SUCCEEDED"] in lines and ["type", "EXPRESS"] in lines
    assert ["total", "3"] in lines and "…" not in listed.output
    map_run = api.list_map_runs(ledger, arn)[0]["mapRunArn"]
    assert "".join(w for line in lines[:2] for w in line).endswith(map_run)


def test_stopping_the_parent_stops_its_children(dmap):
    app, ledger, tmp_path, _ = dmap
    (tmp_path / "gate").mkdir()
    (tmp_path / "gate" / "open").touch()
    arn = api.start_execution(ledger, app, "standard", _data(tmp_path, 30, sleep=0.3))
    deadline = time.monotonic() + 30
    while not api.list_map_runs(ledger, arn) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    api.stop_execution(ledger, arn, error="Cancelled")
    run = api.list_map_runs(ledger, arn)[0]
    assert run["status"] == "ABORTED"
    statuses = {c["status"] for c in api.map_run_executions(ledger, run["mapRunArn"])}
    assert "RUNNING" not in statuses and "ABORTED" in statuses
    # a redrive runs the aborted children again, and the items never started
    api.redrive_execution(ledger, arn)
    row = api.wait_for(ledger, arn, timeout=90)
    assert row["status"] == "SUCCEEDED", row
    assert row["output"]["results"] == [{"item": i, "square": i * i} for i in range(30)]
    assert api.describe_map_run(ledger, run["mapRunArn"])["itemCounts"]["succeeded"] == 30


def test_s3_inventory_manifest_batches_and_result_writer(dmap):
    app, ledger, _, settings = dmap
    store = ObjectStore(settings.storage_url)
    rows = [("data", f"obj/{i}.bin", str(i)) for i in range(7)]
    text = io.StringIO()
    csv.writer(text).writerows(rows[:4])
    first = gzip.compress(text.getvalue().encode())
    text = io.StringIO()
    csv.writer(text).writerows(rows[4:])
    inventory = store.bucket("inventory", create=True)
    inventory.put("inv/data/a.csv.gz", first)
    inventory.put("inv/data/b.csv", text.getvalue().encode())
    manifest = {
        "sourceBucket": "data",
        "destinationBucket": "arn:aws:s3:::inventory",
        "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, Size",
        "files": [{"key": "inv/data/a.csv.gz"}, {"key": "inv/data/b.csv"}],
    }
    inventory.put("inv/data/manifest.json", json.dumps(manifest).encode())
    data = {"manifest": "inv/data/manifest.json", "most": 6, "tag": "t"}
    arn = api.start_execution(ledger, app, "inventory", data)
    row = api.wait_for(ledger, arn, timeout=60)
    assert row["status"] == "SUCCEEDED", row
    run = api.list_map_runs(ledger, arn)[0]
    assert run["mapRunArn"].split(":mapRun:")[1].startswith("inventory/Sums:")
    run_id = run["mapRunArn"].rsplit(":", 1)[1]
    assert row["output"] == {
        "MapRunArn": run["mapRunArn"],
        "ResultWriterDetails": {"Bucket": "results", "Key": f"sums/{run_id}/manifest.json"},
    }
    written = json.loads(store.bucket("results").get(f"sums/{run_id}/SUCCEEDED_0.json"))
    # MaxItems 6 of 7 rows, in batches of 2: 0+1, 2+3, 4+5
    assert [json.loads(x["Output"]) for x in written] == [
        {"sum": 1, "tag": "t"},
        {"sum": 5, "tag": "t"},
        {"sum": 9, "tag": "t"},
    ]
    assert written[0]["ExecutionArn"].endswith(f"inventory/Sums:{run_id}-0")
    result_manifest = json.loads(store.bucket("results").get(f"sums/{run_id}/manifest.json"))
    assert result_manifest["MapRunArn"] == run["mapRunArn"]


def test_a_jsonata_machine_and_the_documented_map(dmap):
    app, ledger, tmp_path, _ = dmap
    arn = api.start_execution(ledger, app, "jsonata", _data(tmp_path, 5))
    row = api.wait_for(ledger, arn, timeout=60)
    assert row["status"] == "SUCCEEDED" and row["output"] == 0 + 1 + 4 + 9 + 16, row
    run = api.list_map_runs(ledger, arn)[0]
    child = api.map_run_executions(ledger, run["mapRunArn"])[2]
    assert child["output"] == "4" and json.loads(child["input"])["item"] == 2
    # the state docs/workflows.md shows is valid ASL
    doc = (Path(__file__).parents[1] / "docs" / "workflows.md").read_text()
    block = doc.split("## Distributed Map", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    state = json.loads("{" + block + "}")["Fan"]
    machine = parse({"StartAt": "Fan", "States": {"Fan": state}})
    assert machine.raw["States"]["Fan"]["ItemProcessor"]["ProcessorConfig"]["Mode"] == (
        "DISTRIBUTED"
    )


def test_two_coordinators_on_postgres_share_the_children(tmp_path, pg_url):
    """Children run wherever a lease puts them; their ends reach the parent either way."""
    with contextlib.ExitStack() as started:
        for n in range(2):
            settings = load_settings(
                APP_DIR,
                home=str(tmp_path / f"home{n}"),
                ledger=pg_url,
                poll_interval=0.2,
                workers=2,
            )
            app = load_app(settings)
            started.enter_context(coordinator_thread(settings, app))
        ledger = Ledger(settings.ledger_url)
        data = _data(tmp_path, 24, sleep=0.05, gate=None)
        arn = api.start_execution(ledger, app, "standard", data)
        row = api.wait_for(ledger, arn, timeout=120)
        assert row["status"] == "SUCCEEDED", row
        assert row["output"]["results"] == [{"item": i, "square": i * i} for i in range(24)]
        run = api.list_map_runs(ledger, arn)[0]
        assert run["status"] == "SUCCEEDED" and run["itemCounts"]["succeeded"] == 24
        assert set(_runs(tmp_path / "marks").values()) == {1}
        ledger.close()


@pytest.mark.slow
@pytest.mark.parametrize("execution_type", ["standard", "express"])
def test_kill9_midway_every_item_once(tmp_path, execution_type):
    rng = random.Random(11)
    home = tmp_path / "home"
    marks = tmp_path / "marks"
    env = {"HEADRACE_HOME": str(home), "HEADRACE_POLL_INTERVAL": "0.2"}
    settings = load_settings(APP_DIR, home=str(home))
    app = load_app(settings)
    ledger = Ledger(settings.ledger_url)
    up = Up(APP_DIR, env, tmp_path / "up.log").start()
    n = 120
    try:
        data = {"items": list(range(n)), "sleep": 0.02, "marks": str(marks), "gate": None}
        arn = api.start_execution(ledger, app, execution_type, data)
        for _ in range(3):
            time.sleep(rng.uniform(0.8, 1.6))
            up.kill9()
            up.start()
        row = api.wait_for(ledger, arn, timeout=300)
        assert up.terminate() == 0
    finally:
        if up.alive():
            up.kill9()
    assert row["status"] == "SUCCEEDED", (row, up.output())
    assert row["output"]["results"] == [{"item": i, "square": i * i} for i in range(n)]
    run = api.list_map_runs(ledger, arn)[0]
    assert run["status"] == "SUCCEEDED" and run["itemCounts"]["succeeded"] == n
    children = api.map_run_executions(ledger, run["mapRunArn"])
    assert [c["idx"] for c in children] == list(range(n))  # one child per item
    with ledger.engine.connect() as conn:
        ok = conn.execute(
            select(attempts.c.invocation_id, func.count())
            .where(attempts.c.status == "ok", attempts.c.function == "record")
            .group_by(attempts.c.invocation_id)
        ).all()
        per_child = conn.execute(
            select(invocations.c.execution_id, func.count())
            .where(invocations.c.execution_id.in_([c["id"] for c in children]))
            .group_by(invocations.c.execution_id)
        ).all()
    runs = _runs(marks)
    assert sorted(runs) == list(range(n))
    if execution_type == "standard":
        # exactly once: one invocation per child, completed once
        assert {k for _, k in per_child} == {1} and len(per_child) == n
        assert {k for _, k in ok} == {1}
        assert set(runs.values()) == {1}, runs
    ledger.close()


@pytest.mark.parametrize("machine", ["keyed", "keyed_express"])
def test_a_map_over_an_object_writes_its_children_as_aws_does(dmap, machine):
    app, ledger, _, settings = dmap
    scores = {"ann": 3, "bob": -1, "cy": 5}
    arn = api.start_execution(ledger, app, machine, {"scores": scores})
    row = api.wait_for(ledger, arn, timeout=60)
    assert row["status"] == "SUCCEEDED", row
    run = api.list_map_runs(ledger, arn)[0]
    run_id = run["mapRunArn"].rsplit(":", 1)[1]
    children = api.map_run_executions(ledger, run["mapRunArn"])
    assert [c["status"] for c in children] == ["SUCCEEDED", "FAILED", "SUCCEEDED"]
    bucket = ObjectStore(settings.storage_url).bucket("results")
    manifest = json.loads(bucket.get(f"scores/{run_id}/manifest.json"))
    assert manifest["DestinationBucket"] == "results"
    assert manifest["MapRunArn"] == run["mapRunArn"] and manifest["ResultFiles"]["PENDING"] == []
    files = {
        kind: [json.loads(line) for line in bucket.get(entries[0]["Key"]).decode().splitlines()]
        for kind, entries in manifest["ResultFiles"].items()
        if entries
    }
    ok, failed = files["SUCCEEDED"], files["FAILED"]
    # each child got its key, its value, and where the items came from
    assert [json.loads(e["Input"]) for e in ok] == [
        {"name": "ann", "score": 3, "source": "STATE_DATA"},
        {"name": "cy", "score": 5, "source": "STATE_DATA"},
    ]
    assert [e["ExecutionArn"] for e in ok] == [children[0]["id"], children[2]["id"]]
    assert all(e["Name"] == e["ExecutionArn"].rsplit(":", 1)[1] for e in ok + failed)
    assert all(e["StateMachineArn"].endswith(f":stateMachine:{machine}/Score") for e in ok)
    assert all(e["StartDate"] <= e["StopDate"] for e in ok + failed)
    assert [json.loads(e["Output"])["name"] for e in ok] == ["ann", "cy"]
    (bad,) = failed
    assert (bad["Status"], bad["Error"], bad["Cause"]) == ("FAILED", "Negative", "below 0")
    assert bad["ExecutionArn"] == children[1]["id"] and "Output" not in bad
