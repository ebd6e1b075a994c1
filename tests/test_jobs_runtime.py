"""Job runtimes: the project's environment, another virtualenv, a container image.

A state machine written for AWS overrides a job's command with `["/usr/bin/python3", "job.py"]`;
the job must run with the libraries of the runtime its definition chose, not the host's bare
system Python, and a failed job must explain itself in the task's error.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import threading

import pytest

from headrace.app import load_app
from headrace.config import load_settings
from headrace.jobs import InvalidJobDefinition, JobDefinition, Jobs, RuntimeNotAvailable
from headrace.jobs.runtime import resolve_interpreter
from headrace.ledger import Ledger
from headrace.server.coordinator import Coordinator
from headrace.workflows import api
from tests.test_workflows_durable import APP_DIR

SYSTEM_PYTHON = "/usr/bin/python3"  # what the state machines users bring write

JOB = textwrap.dedent(
    """
    import sys
    import {module}
    print("ran with", sys.prefix, "and", {module}.__name__)
    """
)
FAILING_JOB = textwrap.dedent(
    """
    import sys
    for i in range(30):
        print("step", i)
    print("cannot read band B04: no such file", file=sys.stderr)
    raise SystemExit(3)
    """
)


def make_venv(path):
    """A real virtualenv holding a module nothing else on this machine has."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    purelib = subprocess.run(
        [
            str(path / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_path('purelib'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (path / purelib / "only_in_job_venv.py").write_text("WHO = 'job venv'\n")
    assert purelib != sysconfig.get_path("purelib")


def batch_machine() -> dict:
    return {
        "StartAt": "Job",
        "States": {
            "Job": {
                "Type": "Task",
                "Resource": "arn:aws:states:::batch:submitJob.sync",
                "Parameters": {
                    "JobName": "runtime-test",
                    "JobQueue": "arn:aws:batch:us-east-1:123456789012:job-queue/default",
                    "JobDefinition.$": "$.definition",
                    "ContainerOverrides": {"Command": [SYSTEM_PYTHON, "job.py"]},
                },
                "ResultSelector": {"status.$": "$.Status", "log.$": "$.Container.LogStreamName"},
                "End": True,
            }
        },
    }


@pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK), reason=f"no {SYSTEM_PYTHON} here")
def test_state_machine_jobs_run_in_the_runtime_their_definition_chose(tmp_path):
    venv = tmp_path / "job-venv"
    make_venv(venv)
    work = {}
    for name, module in (("project", "sqlalchemy"), ("venv", "only_in_job_venv")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "job.py").write_text(JOB.format(module=module))
        work[name] = str(folder)
    (tmp_path / "failing").mkdir()
    (tmp_path / "failing" / "job.py").write_text(FAILING_JOB)
    # the system Python has neither the project's libraries nor the venv's module
    for module in ("sqlalchemy", "only_in_job_venv"):
        probe = subprocess.run([SYSTEM_PYTHON, "-c", f"import {module}"], capture_output=True)
        assert probe.returncode != 0, f"{SYSTEM_PYTHON} has {module}: the test proves nothing"

    settings = load_settings(APP_DIR, home=str(tmp_path / "home"), poll_interval=0.2, workers=2)
    app = load_app(settings)
    app.job_definition("in-project", ["python", "job.py"], working_dir=work["project"])
    app.job_definition("in-venv", ["python", "job.py"], working_dir=work["venv"], venv=str(venv))
    app.job_definition(
        "failing", ["python", "job.py"], working_dir=str(tmp_path / "failing"), retry_attempts=2
    )
    app.job_definition("in-image", ["python", "job.py"], image="python:3.11-slim")
    app.state_machine("runtimes", batch_machine())
    coordinator = Coordinator(settings, app)
    thread = threading.Thread(target=coordinator.run, kwargs={"drain_timeout": 5})
    thread.start()
    engine_answers = (
        shutil.which("docker")
        and subprocess.run(["docker", "info"], capture_output=True).returncode == 0
    )
    try:
        assert coordinator.ready.wait(30)
        ledger = Ledger(settings.ledger_url)
        arns = {
            name: api.start_execution(ledger, app, "runtimes", {"definition": name}, name=name)
            for name in ("in-project", "in-venv", "failing", "in-image")
        }
        rows = {name: api.wait_for(ledger, arn, timeout=120) for name, arn in arns.items()}
        jobs = Jobs(ledger, settings.home)

        for name, prefix, module in (
            ("in-project", sys.prefix, "sqlalchemy"),
            ("in-venv", str(venv), "only_in_job_venv"),
        ):
            row = rows[name]
            assert row["status"] == "SUCCEEDED", (name, row["error"], row["cause"])
            assert row["output"]["status"] == "SUCCEEDED"
            (job,) = [j for j in jobs.list() if j.spec.name == name]
            assert job.command == [SYSTEM_PYTHON, "job.py"]  # the record keeps what was asked
            log = jobs.logs(job.id)
            assert f"ran with {prefix} and {module}" in log, log
            assert f"headrace: {SYSTEM_PYTHON} is " in log  # the log says what it resolved to

        failed = rows["failing"]
        assert (failed["status"], failed["error"]) == ("FAILED", "States.TaskFailed")
        cause = json.loads(failed["cause"])  # the job's description, as DescribeJobs gives it
        assert cause["Status"] == "FAILED" and cause["Container"]["ExitCode"] == 3
        assert cause["StatusReason"].startswith("Essential container in task exited")
        assert "exit code 3" in cause["StatusReason"] and len(cause["Attempts"]) == 2
        assert cause["LogTail"][-1] == "cannot read band B04: no such file"
        assert cause["LogTail"][-2] == "step 29" and len(cause["LogTail"]) == 20
        assert "stackTrace" not in failed["cause"] and "Traceback" not in failed["cause"]

        imaged = rows["in-image"]
        if not engine_answers:  # the container engine is absent: the task says so
            assert (imaged["status"], imaged["error"]) == ("FAILED", "Batch.ClientException")
            assert "no container engine is available" in imaged["cause"], imaged["cause"]
            assert "stackTrace" not in imaged["cause"]
        ledger.close()
    finally:
        coordinator.stop()
        thread.join(30)
        app.state_machines.pop("runtimes", None)
        for name in ("in-project", "in-venv", "failing", "in-image"):
            app.job_definitions.pop(name, None)


@pytest.fixture
def jobs(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield Jobs(ledger, tmp_path / "home")
    ledger.close()


def test_a_docker_client_without_an_engine_is_a_clear_error(jobs, monkeypatch):
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client on this machine")
    if subprocess.run([docker, "info"], capture_output=True).returncode == 0:
        pytest.skip("docker's engine answers here: the absent-engine path cannot be shown")
    monkeypatch.setenv("HEADRACE_CONTAINER_ENGINE", "docker")
    image = JobDefinition("boxed", ["python", "-c", "print(1)"], image="python:3.11-slim")
    with pytest.raises(RuntimeNotAvailable) as err:
        jobs.submit(image, job_name="boxed")
    message = str(err.value)
    assert "job definition 'boxed'" in message and "python:3.11-slim" in message
    assert "docker is installed but its engine does not answer" in message
    assert "Cannot connect to the Docker daemon" in message  # docker's own words
    assert "start the docker daemon or install podman" in message
    assert jobs.list() == []  # nothing was recorded


def test_no_engine_installed_and_a_missing_venv(jobs, monkeypatch, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("HEADRACE_CONTAINER_ENGINE", raising=False)
    image = JobDefinition("boxed", ["true"], image="ghcr.io/org/job:1.2@sha256:abc")
    with pytest.raises(RuntimeNotAvailable, match="docker is not installed; podman is not"):
        jobs.submit(image, job_name="boxed")
    missing = JobDefinition("gone", ["python", "x.py"], venv=str(tmp_path / "no-venv"))
    with pytest.raises(RuntimeNotAvailable, match=r"does not exist \(fix: create it \(python -m"):
        jobs.submit(missing, job_name="gone")
    (tmp_path / "not-a-venv").mkdir()
    empty_venv = JobDefinition("hollow", ["python", "x.py"], venv=str(tmp_path / "not-a-venv"))
    with pytest.raises(RuntimeNotAvailable, match="has no bin/python"):
        jobs.submit(empty_venv, job_name="hollow")
    with pytest.raises(InvalidJobDefinition, match="both venv and image"):
        JobDefinition("both", ["x"], venv="/v", image="python:3.11")
    with pytest.raises(InvalidJobDefinition, match="image reference"):
        JobDefinition("bad", ["x"], image="--privileged")


def test_a_relative_venv_is_relative_to_the_working_dir(jobs, tmp_path):
    make_venv(tmp_path / "work" / ".venv")
    (tmp_path / "work" / "job.py").write_text(JOB.format(module="only_in_job_venv"))
    spec = JobDefinition(
        "rel",
        ["/usr/bin/env", "X=1", "python3", "job.py"],
        venv=".venv",
        working_dir=str(tmp_path / "work"),
    )
    job = jobs.run_sync(spec, job_name="rel")
    assert job.status == "SUCCEEDED", jobs.logs(job.id)
    assert f"ran with {tmp_path / 'work' / '.venv'} and only_in_job_venv" in jobs.logs(job.id)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["python", "a.py"], ["/r/bin/python", "a.py"]),
        (["python3", "-m", "pkg"], ["/r/bin/python", "-m", "pkg"]),
        (["/usr/bin/python3", "a.py"], ["/r/bin/python", "a.py"]),
        (["/usr/local/bin/python3.12", "a.py"], ["/r/bin/python", "a.py"]),
        (["/usr/bin/env", "python3", "a.py"], ["/usr/bin/env", "/r/bin/python", "a.py"]),
        (["env", "-i", "A=1", "python", "a.py"], ["env", "-i", "A=1", "/r/bin/python", "a.py"]),
        (["/usr/bin/env", "bash", "python"], ["/usr/bin/env", "bash", "python"]),
        (["bash", "-c", "python a.py"], ["bash", "-c", "python a.py"]),
        (["python2", "a.py"], ["python2", "a.py"]),
        (["pythonista"], ["pythonista"]),
    ],
)
def test_interpreter_names_resolve_to_the_runtime(command, expected):
    assert resolve_interpreter(command, "/r/bin/python")[0] == expected
