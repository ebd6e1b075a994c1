"""Dataset runs recorded in the project's ledger (headrace.data.runs, ledger.dataset_runs): what
a run records, its progress while it runs, how it ends, and that nothing is recorded outside a
project nor can a ledger that fails stop the pipeline."""

from __future__ import annotations

import logging
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import headrace.data as hd
from headrace.config import PROJECT_VARIABLES
from headrace.data import runs
from headrace.ledger import dataset_runs


@pytest.fixture
def numbers(tmp_path):
    path = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"x": list(range(400))}), path, row_group_size=100)
    return path


@pytest.fixture
def in_project(ledger, tmp_path, monkeypatch):
    """A script's process whose project is given by HEADRACE_LEDGER (as a job's is)."""
    for name in (*PROJECT_VARIABLES, "HEADRACE_PROJECT", "HEADRACE_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HEADRACE_LEDGER", ledger.url)
    monkeypatch.chdir(tmp_path)
    return ledger


def all_runs(ledger, **kw):
    dataset_runs.ensure_tables(ledger.engine)
    with ledger.reader.connect() as conn:
        return dataset_runs.page(conn, **kw)


def double(batch):
    batch["y"] = batch["x"] * 2
    return batch


def test_a_write_is_recorded_with_its_steps_progress_and_output(in_project, numbers, tmp_path):
    out = tmp_path / "doubled"
    hd.read_parquet(str(numbers)).map_batches(double, batch_format="pandas").write_parquet(str(out))
    (run,) = all_runs(in_project)
    assert run["status"] == "SUCCEEDED" and run["error"] is None
    assert run["steps"] == ["ReadParquet", "MapBatches(double)", "WriteParquet"]
    assert run["action"] == "write_parquet" and run["engine"] == "local"
    assert (run["tasks_done"], run["tasks_total"], run["rows_out"]) == (4, 4, 400)
    assert run["output"] == str(out)
    assert run["name"] in ("python -m pytest", "pytest")  # the program that ran it
    assert run["finished_at"] >= run["started_at"]
    with in_project.reader.connect() as conn:
        one = dataset_runs.get(conn, run["id"][:8])
    assert one["stages"][0]["total"] == 4 and one["stages"][0]["tasks"] == 4


def test_a_failing_function_ends_the_run_failed_with_its_error(in_project, numbers, tmp_path):
    def boom(batch):
        raise ValueError("no thanks")

    with pytest.raises(Exception, match="no thanks"):
        hd.read_parquet(str(numbers)).map_batches(boom).write_parquet(str(tmp_path / "out"))
    (run,) = all_runs(in_project)
    assert run["status"] == "FAILED" and "no thanks" in run["error"]
    assert all_runs(in_project, status="FAILED") == [run]
    assert all_runs(in_project, status="SUCCEEDED") == []


def test_progress_is_written_while_the_run_goes_and_a_loop_left_early_is_stopped(
    in_project, numbers, monkeypatch
):
    monkeypatch.setattr(runs, "PROGRESS_SECONDS", 0.05)
    batches = hd.read_parquet(str(numbers)).iter_batches(batch_size=None)
    next(batches)
    next(batches)
    deadline = time.time() + 10
    while time.time() < deadline:
        (run,) = all_runs(in_project)
        if run["rows_out"] == 200:
            break
        time.sleep(0.05)
    assert run["status"] == "RUNNING" and run["rows_out"] == 200
    assert run["action"] == "iter_batches" and run["finished_at"] is None
    batches.close()
    (run,) = all_runs(in_project)
    assert run["status"] == "STOPPED" and run["rows_out"] == 200


def test_a_take_is_recorded_and_a_count_from_the_footers_is_not(in_project, numbers):
    ds = hd.read_parquet(str(numbers))
    assert ds.count() == 400  # Parquet footers: nothing runs
    assert all_runs(in_project) == []
    assert len(ds.map_batches(double).take(3)) == 3
    (run,) = all_runs(in_project)
    assert run["action"] == "take" and run["status"] == "SUCCEEDED" and run["rows_out"] == 3


def test_a_run_whose_process_is_gone_reads_as_lost(in_project, numbers):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dataset_runs.ensure_tables(in_project.engine)
    row = {
        "id": "lost-run",
        "name": "killed.py",
        "job_id": None,
        "engine": "local",
        "action": "write_parquet",
        "steps": ["ReadParquet"],
        "output": None,
        "host": __import__("socket").gethostname(),
        "pid": gone.pid,
    }
    with in_project.begin() as conn:
        dataset_runs.start(conn, row)
    (run,) = all_runs(in_project, status="LOST")
    assert run["id"] == "lost-run" and "is gone" in run["error"]
    assert all_runs(in_project, status="RUNNING") == []


def test_nothing_is_recorded_outside_a_project(tmp_path, numbers, monkeypatch):
    for name in (*PROJECT_VARIABLES, "HEADRACE_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    opened = dict(runs._engines)
    hd.read_parquet(str(numbers)).map_batches(double).write_parquet(str(tmp_path / "out"))
    assert runs._engines == opened
    assert not (tmp_path / ".headrace").exists()


def test_a_ledger_that_cannot_be_written_does_not_fail_the_pipeline(
    tmp_path, numbers, monkeypatch, caplog
):
    for name in (*PROJECT_VARIABLES, "HEADRACE_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    # a folder where the ledger's file would be: SQLite cannot open it
    (tmp_path / "ledger-is-a-folder").mkdir()
    monkeypatch.setenv("HEADRACE_LEDGER", f"sqlite:///{tmp_path / 'ledger-is-a-folder'}")
    with caplog.at_level(logging.WARNING, logger="headrace.data"):
        hd.read_parquet(str(numbers)).map_batches(double).write_parquet(str(tmp_path / "out"))
    assert pq.read_table(tmp_path / "out").num_rows == 400
    assert "dataset run not recorded" in caplog.text


def test_the_cli_lists_runs_describes_one_and_refuses_an_unknown_id(in_project, numbers, tmp_path):
    from typer.testing import CliRunner

    from headrace.cli import app

    hd.read_parquet(str(numbers)).map_batches(double).write_parquet(str(tmp_path / "out"))
    (run,) = all_runs(in_project)
    cli = CliRunner()
    listed = cli.invoke(app, ["datasets", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [r["id"] for r in __import__("json").loads(listed.output)] == [run["id"]]
    table = cli.invoke(app, ["datasets"], env={"COLUMNS": "160"})
    assert run["id"][:8] in table.output and "4/4 blocks, 400 rows" in table.output
    one = cli.invoke(app, ["datasets", run["id"][:8]], env={"COLUMNS": "160"})
    assert one.exit_code == 0, one.output
    assert "ReadParquet → MapBatches(double) → WriteParquet" in one.output
    assert "4 files" in one.output  # the write stage's rows out are the files it wrote
    missing = cli.invoke(app, ["datasets", "nosuch"])
    assert missing.exit_code == 1 and "no dataset run 'nosuch'" in missing.output
    assert cli.invoke(app, ["datasets", "--status", "DONE"]).exit_code == 2


@pytest.mark.ray
@pytest.mark.slow
def test_a_run_on_the_ray_engine_is_recorded_with_its_blocks(in_project, numbers, tmp_path):
    ray = pytest.importorskip("ray")
    from headrace.data import DataContext

    def twice(batch):  # defined here, so Ray ships it by value to its workers
        batch["y"] = batch["x"] * 2
        return batch

    context = DataContext(engine="ray", num_cpus=2)
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    try:
        ds = hd.read_parquet(str(numbers))
        ds._context = context
        ds.map_batches(twice, batch_format="pandas").write_parquet(str(tmp_path / "out"))
        ds.map_batches(twice, batch_size=30).take_all()
    finally:
        ray.shutdown()
    whole, rebatched = sorted(all_runs(in_project), key=lambda r: r["started_at"])
    assert whole["engine"] == "ray" and whole["status"] == "SUCCEEDED"
    assert (whole["tasks_done"], whole["tasks_total"], whole["rows_out"]) == (4, 4, 400)
    # batches of 30 rows: Ray cuts and merges blocks, so no total is claimed
    assert rebatched["tasks_total"] is None and rebatched["rows_out"] == 400
