"""The ray runner on real Ray: Ray's job submission API against a head started here (one for
the module), and a head started for a job and gone after it. Slow: Ray starts processes."""

from __future__ import annotations

import shutil
import threading
import time

import psutil
import pytest

pytest.importorskip("ray")

from headrace.jobs import JobDefinition, Jobs
from headrace.jobs.ray_head import LocalRayHead
from headrace.ledger import Ledger

pytestmark = [pytest.mark.slow, pytest.mark.ray]

SCRIPT = """
import os, sys, time
print("first line", os.environ["AWS_BATCH_JOB_ATTEMPT"], os.environ.get("GREETING"), flush=True)
import ray
ray.init()
print("sum", sum(ray.get([ray.remote(lambda i: i * i).remote(i) for i in range(10)])), flush=True)
if sys.argv[2:]:
    open(sys.argv[2], "w").write(str(os.getpid()))
    time.sleep(600)
sys.exit(int(sys.argv[1]))
"""


@pytest.fixture(scope="module")
def head():
    with LocalRayHead(num_cpus=2) as running, pytest.MonkeyPatch.context() as patch:
        # the cluster wants its token from every client, as one with token auth on does
        patch.setenv("RAY_AUTH_TOKEN", running.token)
        yield running
    assert not ray_processes()


def ray_processes() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any("hr-ray-" in arg for arg in proc.info["cmdline"] or ()):
                found.append(proc)
        except (psutil.Error, TypeError):
            continue
    return found


@pytest.fixture
def jobs(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield Jobs(ledger, tmp_path / "home", heartbeat_seconds=1.0)
    ledger.close()


def definition(tmp_path, *args: str, cluster: str | None = None, **kw) -> JobDefinition:
    (tmp_path / "job.py").write_text(SCRIPT)
    return JobDefinition(
        "ray-job",
        ["python", "job.py", *args],
        runner="ray",
        cluster=cluster,
        working_dir=str(tmp_path),
        environment={"GREETING": "hello"},
        **kw,
    )


def test_exit_codes_logs_and_retries_on_a_ray_cluster(jobs, head, tmp_path):
    ok = jobs.run_sync(definition(tmp_path, "0", cluster=head.address), job_name="ok")
    assert ok.status == "SUCCEEDED" and ok.exit_code == 0
    log = jobs.logs(ok.id)
    assert "first line 1 hello" in log and "sum 285" in log
    failed = jobs.run_sync(
        definition(tmp_path, "5", cluster=head.address, retry_attempts=2), job_name="bad"
    )
    assert failed.status == "FAILED" and failed.exit_code == 5
    assert [a["exit_code"] for a in failed.attempt_log] == [5, 5]
    assert "first line 2 hello" in jobs.logs(failed.id, 2)
    # Ray kept both submissions under the job's id and attempt
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(head.address, headers=head.headers)
    assert client.get_job_info(f"{failed.id}-2").driver_exit_code == 5


def test_cancel_stops_the_ray_job_and_its_driver(jobs, head, tmp_path):
    pid_file = tmp_path / "driver.pid"
    job_id = jobs.submit(
        definition(tmp_path, "0", str(pid_file), cluster=head.address), job_name="hang"
    )
    thread = threading.Thread(target=jobs.run, args=(job_id,))
    thread.start()
    deadline = time.time() + 120
    while not pid_file.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert pid_file.exists(), jobs.logs(job_id)
    driver = psutil.Process(int(pid_file.read_text()))
    began = time.time()
    jobs.terminate(job_id, "stopped by the test")
    thread.join(60)
    job = jobs.get(job_id)
    assert job.status == "FAILED" and job.status_reason.startswith("stopped by the test")
    assert time.time() - began < 30
    assert not driver.is_running() or driver.status() == psutil.STATUS_ZOMBIE
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(head.address, headers=head.headers)
    assert str(client.get_job_status(f"{job_id}-1")).endswith("STOPPED")


def test_a_job_without_a_cluster_gets_a_head_that_goes_with_it(jobs, tmp_path, monkeypatch):
    monkeypatch.delenv("HEADRACE_RAY_ADDRESS", raising=False)
    before = {p.pid for p in ray_processes()}  # the module's head, if started
    job = jobs.run_sync(definition(tmp_path, "3"), job_name="own-head")
    assert job.status == "FAILED" and job.exit_code == 3, jobs.logs(job.id)
    log = jobs.logs(job.id)
    assert "started a local Ray head at http://127.0.0.1:" in log and "sum 285" in log
    assert {p.pid for p in ray_processes()} <= before  # nothing of its head is left


def test_an_unreachable_cluster_fails_the_job_with_the_fix(jobs, tmp_path):
    job = jobs.run_sync(definition(tmp_path, "0", cluster="http://127.0.0.1:9"), job_name="x")
    assert job.status == "FAILED"
    assert "Ray cluster 'http://127.0.0.1:9'" in job.status_reason
    assert "does not answer" in job.status_reason and "ray start --head" in job.status_reason


def test_a_head_dies_with_the_process_that_started_it(tmp_path):
    """A coordinator's worker killed with its coordinator takes its job's Ray head along."""
    import os
    import signal
    import subprocess
    import sys

    ready = tmp_path / "ready"
    code = (
        "import sys, time\n"
        "from headrace.jobs.ray_head import LocalRayHead\n"
        "head = LocalRayHead(num_cpus=1)\n"
        "head.start()\n"
        f"open({str(ready)!r}, 'w').write(head.folder)\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 120
        while not ready.exists() and time.time() < deadline:
            time.sleep(0.2)
        folder = ready.read_text()
        mine = [p for p in ray_processes() if any(folder in a for a in p.cmdline())]
        assert mine
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        _, alive = psutil.wait_procs(mine, timeout=60)
        assert not alive, [p.cmdline()[:2] for p in alive]
    finally:
        owner.kill()
        if ready.exists():  # nobody was left to remove the head's folder
            shutil.rmtree(ready.read_text(), ignore_errors=True)


def test_the_job_reserves_its_vcpus_and_memory_on_the_cluster(jobs, head, tmp_path):
    (tmp_path / "free.py").write_text(
        "import ray\nray.init()\nfree, total = ray.available_resources(), ray.cluster_resources()\n"
        "print('free cpus', free.get('CPU', 0.0))\n"
        "print('held memory', int(total['memory'] - free['memory']))\n"
    )
    spec = JobDefinition(
        "ray-reserve",
        ["python", "free.py"],
        runner="ray",
        cluster=head.address,
        working_dir=str(tmp_path),
        vcpus=1.5,
        memory=300,
    )
    run = jobs.run_sync(spec, job_name="reserve")
    assert run.status == "SUCCEEDED", jobs.logs(run.id)
    log = jobs.logs(run.id)
    assert "free cpus 0.5" in log  # 2 CPUs, 1.5 held by the job's driver
    assert f"held memory {300 * 2**20}" in log
