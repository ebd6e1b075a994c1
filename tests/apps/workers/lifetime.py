"""Handlers for the worker-lifetime tests: they leave marks on disk the tests compare with the
ledger (the pid a handler ran in, the outputs it wrote)."""

import ctypes
import os
import time
from pathlib import Path

from headrace import App

app = App("workers")


def _marks(event) -> Path:
    path = Path(event["marks"])
    path.mkdir(parents=True, exist_ok=True)
    return path


@app.function(timeout=3, retries=2, backoff=0.1)
def slow_output(event, context):
    """Record its pid, work for `seconds`, then write its output (one line per completion)."""
    marks = _marks(event)
    (marks / f"{context.aws_request_id}-{context.attempt}.pid").write_text(str(os.getpid()))
    (context.tmp_dir / "partial.bin").write_bytes(b"x" * 1000)
    time.sleep(event.get("seconds", 2.0))
    with open(marks / f"{context.aws_request_id}.out", "a") as fh:
        fh.write(f"attempt {context.attempt}\n")
    return {"attempt": context.attempt}


@app.function(timeout=30, retries=0)
def drain_me(event, context):
    marks = _marks(event)
    (marks / f"{context.aws_request_id}.pid").write_text(str(os.getpid()))
    time.sleep(event.get("seconds", 2.0))
    return {"finished": time.time()}


@app.function(timeout=30, retries=0)
def native_abort(event, context):
    # what glibc or ecCodes print right before they abort, written to fd 2 as native code does
    os.write(2, b"grib_handle_new: reading message 3\n")
    os.write(2, b"corrupted size vs. prev_size\n")
    os.abort()


@app.function(timeout=30, retries=0)
def native_segfault(event, context):
    os.write(2, b"about to read address 0\n")
    ctypes.string_at(0)


@app.function(timeout=30, retries=0)
def crash_with_scratch(event, context):
    (context.tmp_dir / "half-written.grib2").write_bytes(b"x" * 4096)
    os._exit(3)


@app.function(timeout=0.5, retries=0)
def timeout_with_scratch(event, context):
    (context.tmp_dir / "half-written.grib2").write_bytes(b"x" * 4096)
    time.sleep(30)


@app.function(timeout=60, retries=0, tmp_size=5)
def scratch_hog(event, context):
    """Write 1 MiB every 10 ms up to 2 GiB: it must be stopped long before it gets there."""
    marks = _marks(event)
    chunk = b"x" * 2**20
    with open(context.tmp_dir / "big.bin", "wb") as fh:
        for _ in range(2048):
            fh.write(chunk)
            fh.flush()
            time.sleep(0.01)
    (marks / f"{context.aws_request_id}.finished").write_text("wrote 2 GiB")
    return {"written_mb": 2048}


JOB_SCRIPT = """
import os, sys, time
with open(sys.argv[1] + ".tmp", "w") as fh:
    fh.write(str(os.getpid()))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(60)
"""


@app.function(timeout=120, retries=0)
def runs_a_job(event, context):
    """Run a batch job in a process of its own, as a `batch:submitJob.sync` task does."""
    import sys

    from headrace.jobs import JobDefinition, Jobs
    from headrace.ledger import Ledger

    definition = JobDefinition("sleeper", [sys.executable, "-c", JOB_SCRIPT, event["pidfile"]])
    jobs = Jobs(Ledger(event["ledger"]), event["home"], {"sleeper": definition})
    job_id = jobs.submit("sleeper", job_name="sleeper")
    return jobs.run(job_id).status
