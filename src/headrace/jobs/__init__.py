"""Job definitions, runners and job runs recorded in the ledger (AWS Batch semantics).

jobs = Jobs(ledger, settings.home, {"train": JobDefinition("train", ["python", "train.py"])})
job = jobs.run_sync("train", job_name="nightly", container_overrides={
    "Environment": [{"Name": "EPOCHS", "Value": "3"}]})
jobs.describe(job.id)   # DescribeJobs' shape
"""

from headrace.jobs.batch import handle_batch_task
from headrace.jobs.definition import JobDefinition, apply_overrides
from headrace.jobs.errors import (
    InvalidJobDefinition,
    JobBusy,
    JobDefinitionNotFound,
    JobError,
    JobFailed,
    JobNotFound,
    RunnerNotAvailable,
    RuntimeNotAvailable,
)
from headrace.jobs.records import JobRun
from headrace.jobs.runners import Attempt, JobRunner, Poll, get_runner
from headrace.jobs.service import Jobs
from headrace.jobs.subprocess_runner import SubprocessRunner

__all__ = [
    "Attempt",
    "InvalidJobDefinition",
    "JobBusy",
    "JobDefinition",
    "JobDefinitionNotFound",
    "JobError",
    "JobFailed",
    "JobNotFound",
    "JobRun",
    "JobRunner",
    "Jobs",
    "Poll",
    "RunnerNotAvailable",
    "RuntimeNotAvailable",
    "SubprocessRunner",
    "apply_overrides",
    "get_runner",
    "handle_batch_task",
]
