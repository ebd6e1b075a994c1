"""The spark-submit runner on real Spark: local[*], and a standalone master and worker started
here from pyspark's own daemon script (one cluster for the module). Slow: every test starts
JVMs on a 2-core machine."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

pytest.importorskip("pyspark")

from headrace.jobs import JobDefinition, Jobs
from headrace.jobs.spark_standalone import StandaloneCluster
from headrace.jobs.steps import Steps, parse_steps
from headrace.ledger import Ledger

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "bank_marketing"
BANK_CSV = ROOT.parent / "shared" / "data" / "tabular" / "bank.csv"

EXIT_WITH = """
import sys, time
print("first line", flush=True)
from pyspark.sql import SparkSession
spark = SparkSession.builder.appName("exit-with").getOrCreate()
print("count", spark.range(int(sys.argv[1])).count(), flush=True)
if len(sys.argv) > 3:
    open(sys.argv[3], "w").write("started")
    time.sleep(600)
spark.stop()
sys.exit(int(sys.argv[2]))
"""


@pytest.fixture(scope="module")
def cluster():
    with StandaloneCluster(cores=2, memory="1g") as running:
        yield running
    # the daemons are gone with the cluster
    assert not [
        p
        for p in psutil.process_iter(["cmdline"])
        if "hr-spark-" in " ".join(p.info["cmdline"] or [])
    ]


@pytest.fixture
def jobs(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield Jobs(ledger, tmp_path / "home", heartbeat_seconds=1.0)
    ledger.close()


def job_processes(job_id: str) -> list[int]:
    marker = f"HEADRACE_JOB_ID={job_id}".encode()
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            with open(f"/proc/{proc.info['pid']}/environ", "rb") as fh:
                if marker in fh.read().split(b"\0"):
                    found.append(proc.info["pid"])
        except OSError:
            continue
    return found


def generated_csv(folder: Path, rows: int) -> Path:
    sys.path.insert(0, str(EXAMPLE))
    try:
        import make_data
    finally:
        sys.path.remove(str(EXAMPLE))
    path = folder / "bank.csv"
    make_data.write(str(path), rows)
    return path


def test_exit_codes_logs_and_the_ledger_on_local(jobs, tmp_path):
    (tmp_path / "job.py").write_text(EXIT_WITH)
    definition = JobDefinition(
        "spark-exit", ["job.py", "1000", "7"], runner="spark", working_dir=str(tmp_path)
    )
    job = jobs.run_sync(definition, job_name="exit7")
    assert job.status == "FAILED" and job.exit_code == 7  # the script's own exit code
    log = jobs.logs(job.id)
    assert "first line" in log and "count 1000" in log
    assert not job_processes(job.id)


def test_bank_marketing_as_emr_steps_on_local(jobs, tmp_path):
    """The issue's step, as written, with bucket paths: on the real UCI file when there."""
    buckets = tmp_path / "buckets"
    (buckets / "raw").mkdir(parents=True)
    source = BANK_CSV if BANK_CSV.exists() else generated_csv(tmp_path, 3000)
    (buckets / "raw" / "bank.csv").write_bytes(source.read_bytes())
    step = (
        'Type=Spark,Name="Spark Application Step",ActionOnFailure=CONTINUE,'
        f"Args=[{EXAMPLE / 'bank_marketing.py'},--input_path,s3://raw/bank.csv,"
        "--output_path,s3://curated/bank/]"
    )
    broken = "Type=Spark,Name=broken,ActionOnFailure=CANCEL_AND_WAIT,Args=[no_such_script.py]"
    steps = Steps(jobs)
    ids = steps.add(
        "j-bank",
        parse_steps([step, broken, "Type=Spark,Name=after,Args=[x.py]"]),
        working_dir=str(tmp_path),
        environment={"HEADRACE_STORAGE": str(buckets)},
    )
    final = {s.id: s for s in steps.run("j-bank")}
    assert [final[i].status for i in ids] == ["COMPLETED", "FAILED", "CANCELLED"]
    log = jobs.logs(final[ids[0]].job_id)
    result = json.loads(log.split("RESULT ", 1)[1].splitlines()[0])
    expected_rows = 4521 if source == BANK_CSV else 3000
    assert result["rows"] == expected_rows
    assert result["logistic_regression_auc"] > 0.8
    assert result["sklearn_accuracy"] > 0.85
    import pyarrow.parquet as pq

    scored = pq.read_table(buckets / "curated" / "bank" / "sklearn_scored")
    assert scored.num_rows == expected_rows
    assert set(scored.column("sklearn_prediction").to_pylist()) <= {0.0, 1.0}
    assert scored.column("month_int").to_pylist()[0] in range(1, 13)
    predictions = pq.read_table(buckets / "curated" / "bank" / "spark_ml_predictions")
    assert predictions.num_rows == result["test_rows"]


def test_the_standalone_master_runs_the_example_and_cancels_cleanly(jobs, cluster, tmp_path):
    csv_path = generated_csv(tmp_path, 1500)
    definition = JobDefinition(
        "bank-standalone",
        [
            str(EXAMPLE / "bank_marketing.py"),
            "--input_path",
            str(csv_path),
            "--output_path",
            str(tmp_path / "out"),
        ],
        runner="spark-submit",
        cluster=cluster.master,
        memory=3072,
        working_dir=str(tmp_path),
    )
    job = jobs.run_sync(definition, job_name="bank-standalone")
    assert job.status == "SUCCEEDED", jobs.logs(job.id)[-3000:]
    assert '"rows": 1500' in jobs.logs(job.id)
    state = cluster.state()
    assert [a["name"] for a in state["completedapps"]] == ["bank-marketing"]
    assert state["completedapps"][0]["state"] == "FINISHED"

    # cancel a running application: the driver group dies, the master drops the executors
    (tmp_path / "hang.py").write_text(EXIT_WITH)
    started = tmp_path / "started"
    hang = JobDefinition(
        "hang",
        ["hang.py", "10", "0", str(started)],
        runner="spark-submit",
        cluster=cluster.master,
        working_dir=str(tmp_path),
    )
    job_id = jobs.submit(hang, job_name="hang")
    thread = threading.Thread(target=jobs.run, args=(job_id,))
    thread.start()
    deadline = time.time() + 180
    while not started.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert started.exists(), jobs.logs(job_id)[-2000:]
    assert cluster.state()["activeapps"]
    jobs.terminate(job_id, "stopped by the test")
    thread.join(60)
    job = jobs.get(job_id)
    assert job.status == "FAILED" and job.status_reason.startswith("stopped by the test")
    assert not job_processes(job_id)  # driver JVM and its Python workers
    deadline = time.time() + 30
    while cluster.state()["activeapps"] and time.time() < deadline:
        time.sleep(0.5)
    assert not cluster.state()["activeapps"]
    assert cluster.state()["workers"][0]["coresused"] == 0


def test_cli_submit_engine_spark_streams_output(tmp_path, cluster):
    from headrace.cli_jobs import jobs_app

    (tmp_path / "job.py").write_text(EXIT_WITH)
    env = {"HEADRACE_HOME": str(tmp_path / "home"), "HEADRACE_SPARK_MASTER": cluster.master}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = CliRunner().invoke(
            jobs_app,
            ["submit", "--engine", "spark", "job.py", "--wait", "--", "50", "0"],
            env=env,
            catch_exceptions=False,
        )
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output[-3000:]
    assert "first line" in result.output and "count 50" in result.output
    assert cluster.master in result.output  # spark-submit logs where it ran


def test_state_machine_batch_job_on_the_spark_runner(tmp_path):
    from headrace.app import load_app
    from headrace.config import load_settings
    from headrace.server.coordinator import Coordinator
    from headrace.workflows import api
    from tests.test_workflows_durable import APP_DIR

    (tmp_path / "job.py").write_text(EXIT_WITH)
    settings = load_settings(APP_DIR, home=str(tmp_path / "home"), poll_interval=0.2, workers=1)
    app = load_app(settings)
    app.job_definition(
        "count", ["job.py", "Ref::rows", "0"], runner="spark", working_dir=str(tmp_path)
    )
    app.state_machine(
        "spark",
        {
            "StartAt": "Count",
            "States": {
                "Count": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::batch:submitJob.sync",
                    "Parameters": {
                        "JobName": "count",
                        "JobQueue": "default",
                        "JobDefinition": "count",
                        "Parameters": {"rows.$": "$.rows"},
                    },
                    "ResultSelector": {"status.$": "$.Status", "code.$": "$.Container.ExitCode"},
                    "End": True,
                }
            },
        },
    )
    coordinator = Coordinator(settings, app)
    thread = threading.Thread(target=coordinator.run, kwargs={"drain_timeout": 5})
    thread.start()
    try:
        assert coordinator.ready.wait(60)
        ledger = Ledger(settings.ledger_url)
        arn = api.start_execution(ledger, app, "spark", {"rows": "77"}, name="one")
        row = api.wait_for(ledger, arn, timeout=240)
        assert row["status"] == "SUCCEEDED", (row["error"], row["cause"])
        assert row["output"] == {"status": "SUCCEEDED", "code": 0}
        (job,) = Jobs(ledger, settings.home).list()
        assert job.spec.runner == "spark-submit"
        assert "count 77" in Jobs(ledger, settings.home).logs(job.id)
        ledger.close()
    finally:
        coordinator.stop()
        thread.join(60)
        app.state_machines.pop("spark", None)
        app.job_definitions.pop("count", None)


def test_no_java_is_a_clear_error(tmp_path, monkeypatch):
    from headrace.jobs.errors import RunnerNotAvailable
    from headrace.jobs.spark_runner import SparkSubmitRunner

    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RunnerNotAvailable, match="needs Java"):
        SparkSubmitRunner()
