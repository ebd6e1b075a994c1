"""headrace.jobs with real processes: overrides, retries, timeouts, memory, takeover, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
from typer.testing import CliRunner

from headrace.jobs import (
    InvalidJobDefinition,
    JobDefinition,
    JobDefinitionNotFound,
    JobFailed,
    Jobs,
    SubprocessRunner,
    handle_batch_task,
)
from headrace.ledger import Ledger

PY = sys.executable

# attempt 1 spawns a grandchild that ignores SIGTERM, records both pids, and hangs;
# any later attempt succeeds at once
HANG_ONCE = textwrap.dedent(
    """
    import os, subprocess, sys, time
    out = sys.argv[1]
    if os.environ["AWS_BATCH_JOB_ATTEMPT"] == "1":
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
        with open(out + ".tmp", "w") as fh:
            fh.write(f"{os.getpid()} {child.pid}")
        os.replace(out + ".tmp", out)
        time.sleep(60)
    print("second attempt done")
    """
)


def gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.time() + within
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.time() >= deadline:
            return False
        time.sleep(0.05)


def wait_file(path, timeout: float = 10.0) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield led
    led.close()


def make_jobs(ledger, home, **definitions: JobDefinition) -> Jobs:
    fast = SubprocessRunner(kill_grace=0.5)
    return Jobs(ledger, home, definitions, runners={"subprocess": fast}, heartbeat_seconds=0.5)


PRINT_ENV = JobDefinition(
    "print-env",
    [PY, "-c", "import os, sys; print(*sys.argv[1:]); print(os.environ['GREETING'])", "Ref::who"],
    environment={"GREETING": "hello", "OTHER": "kept"},
    parameters={"who": "default-who"},
)


def check_success_with_overrides(jobs: Jobs) -> None:
    job = jobs.run_sync(
        "print-env",
        job_name="greet",
        job_queue="q1",
        container_overrides={
            "Command": [
                PY,
                "-c",
                "import os, sys; print('args', *sys.argv[1:]);"
                "print(*(os.environ[k] for k in ('GREETING', 'OTHER', 'HEADRACE_JOB_ID',"
                " 'AWS_BATCH_JOB_ID', 'AWS_BATCH_JOB_ATTEMPT')))",
                "Ref::who",
            ],
            "Environment": [{"Name": "GREETING", "Value": "bonjour"}],
            "ResourceRequirements": [
                {"Type": "VCPU", "Value": "2"},
                {"Type": "MEMORY", "Value": "512"},
            ],
        },
        parameters={"who": "world"},
    )
    assert job.status == "SUCCEEDED", job.status_reason
    assert job.exit_code == 0 and job.attempts == 1
    assert job.environment == {"GREETING": "bonjour"}  # the overrides only
    assert job.spec.vcpus == 2 and job.spec.memory == 512
    text = jobs.logs(job.id)
    assert "args world" in text
    assert f"bonjour kept {job.id} {job.id} 1" in text

    d = jobs.describe(job.id[:8])  # a prefix will do
    assert d["jobId"] == job.id and d["jobName"] == "greet" and d["jobQueue"] == "q1"
    assert d["jobArn"].endswith(f":job/{job.id}")
    assert d["status"] == "SUCCEEDED" and d["statusReason"]
    assert d["container"]["command"][-1] == "world"
    assert {"name": "GREETING", "value": "bonjour"} in d["container"]["environment"]
    assert d["container"]["exitCode"] == 0
    assert (d["container"]["vcpus"], d["container"]["memory"]) == (2, 512)
    assert d["container"]["logStreamName"].endswith(f"jobs/{job.id}/1.log")
    (attempt,) = d["attempts"]
    assert attempt["container"]["exitCode"] == 0
    assert attempt["startedAt"] <= attempt["stoppedAt"]
    assert d["createdAt"] <= d["startedAt"] <= d["stoppedAt"]
    assert all(isinstance(d[k], int) for k in ("createdAt", "startedAt", "stoppedAt"))
    assert [j.id for j in jobs.list("SUCCEEDED")] == [job.id]
    assert jobs.list("FAILED") == []


def test_success_with_overrides_and_describe(ledger, tmp_path):
    check_success_with_overrides(make_jobs(ledger, tmp_path, **{"print-env": PRINT_ENV}))


@pytest.mark.postgres
def test_success_on_postgres_ledger(pg_url, tmp_path):
    led = Ledger(pg_url)
    try:
        check_success_with_overrides(make_jobs(led, tmp_path, **{"print-env": PRINT_ENV}))
    finally:
        led.close()


def test_failure_is_retried_then_failed(ledger, tmp_path):
    fail = JobDefinition(
        "fail",
        [
            PY,
            "-c",
            "import os, sys; print('attempt', os.environ['AWS_BATCH_JOB_ATTEMPT']); sys.exit(3)",
        ],
        retry_attempts=3,
    )
    jobs = make_jobs(ledger, tmp_path, fail=fail)
    job = jobs.run_sync("fail", job_name="f")
    assert job.status == "FAILED"
    assert job.attempts == 3 and job.exit_code == 3
    assert "exit code 3" in job.status_reason and "attempt 3" in job.status_reason
    d = jobs.describe(job.id)
    assert [a["container"]["exitCode"] for a in d["attempts"]] == [3, 3, 3]
    assert len({a["container"]["logStreamName"] for a in d["attempts"]}) == 3
    text = jobs.logs(job.id)
    assert all(f"attempt {n}" in text for n in (1, 2, 3))
    assert jobs.logs(job.id, attempt=2).strip() == "attempt 2"


def test_retry_succeeds_on_second_attempt(ledger, tmp_path):
    flaky = JobDefinition(
        "flaky",
        [
            PY,
            "-c",
            "import os, sys; sys.exit(0 if os.environ['AWS_BATCH_JOB_ATTEMPT'] == '2' else 1)",
        ],
        retry_attempts=2,
    )
    seen = []
    job = make_jobs(ledger, tmp_path, flaky=flaky).run(
        make_jobs(ledger, tmp_path, flaky=flaky).submit("flaky", job_name="x"),
        on_update=lambda j: seen.append(j.status),
    )
    assert job.status == "SUCCEEDED" and job.attempts == 2
    assert seen == ["RUNNABLE", "RUNNING", "RUNNABLE", "RUNNING", "SUCCEEDED"]


def test_timeout_kills_the_whole_process_group(ledger, tmp_path):
    pids = tmp_path / "pids"
    hang = JobDefinition("hang", [PY, "-c", HANG_ONCE, str(pids)], timeout=1, retry_attempts=3)
    started = time.monotonic()
    job = make_jobs(ledger, tmp_path, hang=hang).run_sync("hang", job_name="h")
    assert time.monotonic() - started < 10
    main, grandchild = map(int, pids.read_text().split())
    assert gone(main) and gone(grandchild)
    # as on AWS Batch, a timed-out attempt is not retried
    assert job.status == "FAILED" and job.attempts == 1
    assert job.status_reason.startswith("Job attempt duration exceeded timeout")
    assert job.exit_code == 128 + signal.SIGTERM


def test_memory_limit_kills_the_job(ledger, tmp_path):
    hog = JobDefinition(
        "hog", [PY, "-c", "import time; b = b'x' * (300 * 2**20); time.sleep(30)"], memory=100
    )
    job = make_jobs(ledger, tmp_path, hog=hog).run_sync("hog", job_name="m")
    assert job.status == "FAILED"
    assert job.status_reason.startswith("OutOfMemoryError")
    assert job.exit_code == 137


def test_address_space_limit(ledger, tmp_path):
    hog = JobDefinition("hog", [PY, "-c", "b = b'x' * (300 * 2**20)"], memory=150)
    runner = SubprocessRunner(memory_limit="address-space")
    job = Jobs(ledger, tmp_path, runners={"subprocess": runner}).run_sync(hog, job_name="as")
    assert job.status == "FAILED" and job.exit_code == 1
    assert "MemoryError" in Jobs(ledger, tmp_path).logs(job.id)


def test_concurrent_runs_of_one_job_run_it_once(ledger, tmp_path):
    marks = tmp_path / "marks"
    slow = JobDefinition(
        "slow", [PY, "-c", f"import time; open({str(marks)!r}, 'a').write('x'); time.sleep(0.5)"]
    )
    jobs = make_jobs(ledger, tmp_path, slow=slow)
    job_id = jobs.submit("slow", job_name="s")
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: jobs.run(job_id), range(2)))
    assert [r.status for r in results] == ["SUCCEEDED", "SUCCEEDED"]
    assert [r.attempts for r in results] == [1, 1]
    assert marks.read_text() == "x"


def test_idempotent_submit_and_run(ledger, tmp_path):
    marks = tmp_path / "marks"
    once = JobDefinition("once", [PY, "-c", f"open({str(marks)!r}, 'a').write('x')"])
    jobs = make_jobs(ledger, tmp_path, once=once)
    first = jobs.submit("once", job_name="a", idempotency_key="task-1")
    assert jobs.submit("once", job_name="a", idempotency_key="task-1") == first
    assert jobs.run(first).status == "SUCCEEDED"
    again = jobs.run_sync("once", job_name="a", idempotency_key="task-1")
    assert again.id == first and again.attempts == 1
    assert jobs.run(first).attempts == 1
    assert marks.read_text() == "x"
    assert jobs.submit("once", job_name="a", idempotency_key="task-2") != first


def test_a_dead_workers_job_is_taken_over_without_orphans(ledger, tmp_path):
    pids = tmp_path / "pids"
    hang = JobDefinition("hang", [PY, "-c", HANG_ONCE, str(pids)])  # one attempt only
    jobs = make_jobs(ledger, tmp_path)
    job_id = jobs.submit(hang, job_name="crash")
    worker = subprocess.Popen(
        [
            PY,
            "-c",
            "import sys; from headrace.ledger import Ledger; from headrace.jobs import Jobs;"
            "Jobs(Ledger(sys.argv[1]), sys.argv[2]).run(sys.argv[3])",
            ledger.url,
            str(tmp_path),
            job_id,
        ]
    )
    main, grandchild = map(int, wait_file(pids).split())
    assert jobs.get(job_id).status == "RUNNING"
    worker.kill()
    worker.wait()
    assert gone(main)  # PR_SET_PDEATHSIG: the job died with its worker
    job = jobs.run(job_id)  # the owner is dead on this host: take over at once
    assert gone(grandchild)  # swept by its HEADRACE_JOB_ID
    assert job.status == "SUCCEEDED" and job.attempts == 2
    first = job.attempt_log[0]
    assert first["outcome"] == "interrupted" and first["pid"] == main
    assert "second attempt done" in jobs.logs(job_id, attempt=2)


def test_an_interrupted_run_stops_its_processes_and_can_resume(ledger, tmp_path):
    pids = tmp_path / "pids"
    jobs = make_jobs(ledger, tmp_path)
    job_id = jobs.submit(JobDefinition("hang", [PY, "-c", HANG_ONCE, str(pids)]), job_name="i")

    def interrupt(job):
        if job.status == "RUNNING":
            wait_file(pids)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        jobs.run(job_id, on_update=interrupt)
    main, grandchild = map(int, pids.read_text().split())
    assert gone(main, within=1) and gone(grandchild, within=1)
    paused = jobs.get(job_id)
    assert paused.status == "RUNNABLE" and paused.owner is None
    assert paused.attempt_log[0]["outcome"] == "interrupted"
    job = jobs.run(job_id)
    assert job.status == "SUCCEEDED" and job.attempts == 2


def test_validation_errors(ledger, tmp_path):
    with pytest.raises(InvalidJobDefinition, match="non-empty list"):
        JobDefinition("x", "echo hi")  # type: ignore[arg-type]
    with pytest.raises(InvalidJobDefinition, match="retry_attempts"):
        JobDefinition("x", ["true"], retry_attempts=0)
    with pytest.raises(InvalidJobDefinition, match="reserved"):
        JobDefinition("x", ["true"], environment={"AWS_BATCH_JOB_ID": "1"})
    with pytest.raises(InvalidJobDefinition, match="not a valid name"):
        JobDefinition("bad name", ["true"])
    with pytest.raises(InvalidJobDefinition, match="unknown runner"):
        JobDefinition("x", ["true"], runner="docker")
    jobs = make_jobs(
        ledger,
        tmp_path,
        ok=JobDefinition("ok", ["true"]),
        ray=JobDefinition("ray", ["t"], runner="ray"),
    )
    with pytest.raises(JobDefinitionNotFound, match="known: ok, ray"):
        jobs.submit("nope", job_name="n")
    assert jobs.get(jobs.submit("ray", job_name="r")).status == "SUBMITTED"  # test_jobs_ray
    with pytest.raises(InvalidJobDefinition, match="GPU"):
        jobs.submit(
            "ok", job_name="g", container_overrides={"ResourceRequirements": [{"Type": "GPU"}]}
        )
    with pytest.raises(InvalidJobDefinition, match="memory must be positive"):
        jobs.submit("ok", job_name="g", container_overrides={"Memory": 0})
    missing = jobs.run_sync(JobDefinition("missing", ["/no/such/program"]), job_name="m")
    assert missing.status == "FAILED" and missing.exit_code == 127
    assert "CannotStartContainerError" in missing.status_reason


def test_handle_batch_task(ledger, tmp_path):
    definitions = {
        "ok": JobDefinition("ok", [PY, "-c", "import os; print(os.environ['BAND'])"]).to_dict(),
        "bad": JobDefinition("bad", [PY, "-c", "raise SystemExit(2)"]).to_dict(),
    }
    context = {"ledger_url": ledger.url, "home": str(tmp_path), "definitions": definitions}
    out = handle_batch_task(
        {
            "JobName": "composite",
            "JobQueue": "arn:aws:batch:local:000000000000:job-queue/default",
            "JobDefinition": "arn:aws:batch:local:000000000000:job-definition/ok:3",
            "ContainerOverrides": {"Environment": [{"Name": "BAND", "Value": "B04"}]},
            **context,
        },
        idempotency_key="exec-1/Map/0",
    )
    assert out["status"] == "SUCCEEDED" and out["container"]["exitCode"] == 0
    assert out["jobQueue"] == "default"
    again = handle_batch_task(
        {"JobName": "composite", "JobDefinition": "ok"}, idempotency_key="exec-1/Map/0", **context
    )
    assert again["jobId"] == out["jobId"]
    with pytest.raises(JobFailed) as info:
        handle_batch_task({"JobName": "b", "JobDefinition": "bad", **context})
    assert info.value.error_name == "States.TaskFailed"
    cause = json.loads(info.value.cause)
    assert cause["status"] == "FAILED" and cause["container"]["exitCode"] == 2


def test_cli_submit_wait_list_describe_logs(tmp_path):
    from headrace.cli_jobs import jobs_app

    module = f"jobsapp_{uuid.uuid4().hex[:8]}"
    (tmp_path / "headrace.toml").write_text(f'app = "{module}:app"\n')
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            """
            import sys
            from headrace import App
            from headrace.jobs import JobDefinition

            app = App("jobs-test")
            app.job_definitions = {
                "say": JobDefinition("say", [sys.executable, "-c",
                    "import os; print('said', os.environ.get('WORD', 'nothing'))"]),
            }
            """
        )
    )
    runner = CliRunner()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADRACE_")}
    cli = ["-C", str(tmp_path)]

    def invoke(*args: str):
        result = runner.invoke(jobs_app, [*cli, *args], env=env, catch_exceptions=False)
        return result

    done = invoke("submit", "say", "--name", "hello", "--env", "WORD=bird", "--wait")
    assert done.exit_code == 0, done.output
    job_id = done.stdout.strip().splitlines()[-1]
    assert "SUCCEEDED" in done.stderr

    listed = invoke("list", "--json")
    assert [j["jobId"] for j in json.loads(listed.stdout)] == [job_id]
    assert invoke("list").exit_code == 0
    assert json.loads(invoke("describe", job_id[:8]).stdout)["jobName"] == "hello"
    assert invoke("logs", job_id).stdout == "said bird\n"

    failed = invoke(
        "submit", "say", "--command", f'["{PY}", "-c", "raise SystemExit(4)"]', "--wait"
    )
    assert failed.exit_code == 1
    assert "FAILED" in failed.stderr
    queued = invoke("submit", "say")
    pending_id = queued.stdout.strip()
    assert json.loads(invoke("describe", pending_id).stdout)["status"] == "SUBMITTED"
    assert invoke("run", pending_id).exit_code == 0
    assert [
        j["status"] for j in json.loads(invoke("list", "--json", "--status", "failed").stdout)
    ] == ["FAILED"]
