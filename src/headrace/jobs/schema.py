"""The job tables. They live on their own MetaData, created by `Jobs`, so the ledger's schema
module does not need to know about them."""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

STATUSES = ("SUBMITTED", "RUNNABLE", "RUNNING", "SUCCEEDED", "FAILED")
TERMINAL = ("SUCCEEDED", "FAILED")

job_runs = Table(
    "job_runs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(128), nullable=False),  # the submission's JobName
    Column("definition", String(128), nullable=False),
    Column("queue", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),  # attempts started
    Column("exit_code", Integer),
    Column("status_reason", Text),
    Column("command", Text, nullable=False),  # JSON argv, overrides and Ref:: applied
    Column("environment", Text, nullable=False),  # JSON of the overrides only
    # JSON of the effective definition, so a run does not depend on who registered what later
    Column("spec", Text, nullable=False),
    # JSON list, one per attempt: number, exit_code, reason, log_path, pid, started_at, ...
    Column("attempt_log", Text, nullable=False),
    Column("log_paths", Text, nullable=False),  # JSON list, one per attempt
    Column("owner", String(255)),  # "host:pid" of the worker running it
    Column("heartbeat_at", Float),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("stopped_at", Float),
    Column("idempotency_key", String(512), unique=True),
)

Index("job_runs_status_created", job_runs.c.status, job_runs.c.created_at)

# TerminateJob/CancelJob requests: the worker running the job reads them while it waits on the
# attempt (a table of its own, so ledgers made before it need no migration)
job_cancels = Table(
    "job_cancels",
    metadata,
    Column("job_id", String(36), primary_key=True),
    Column("reason", Text, nullable=False),
    Column("requested_at", Float, nullable=False),
)

STEP_STATES = (
    "PENDING",
    "CANCEL_PENDING",
    "RUNNING",
    "COMPLETED",
    "CANCELLED",
    "FAILED",
    "INTERRUPTED",
)
STEP_DONE = ("COMPLETED", "CANCELLED", "FAILED", "INTERRUPTED")

# EMR-style steps: run one at a time per cluster, in the order they were added, each as a job
job_steps = Table(
    "job_steps",
    metadata,
    Column("id", String(16), primary_key=True),  # s-XXXXXXXXXXXXX, as EMR's
    Column("cluster_id", String(128), nullable=False),
    Column("position", Float, nullable=False),  # order within the cluster
    Column("name", String(256), nullable=False),
    Column("config", Text, nullable=False),  # JSON: Type, Args, Jar, ActionOnFailure
    Column("definition", Text, nullable=False),  # JSON of the JobDefinition it runs as
    Column("action_on_failure", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", Text),
    Column("job_id", String(36)),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("ended_at", Float),
)
Index("job_steps_cluster_position", job_steps.c.cluster_id, job_steps.c.position)

# a step cluster ends TERMINATED when a step with ActionOnFailure=TERMINATE_CLUSTER fails
step_clusters = Table(
    "step_clusters",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("reason", Text),
    Column("created_at", Float, nullable=False),
)
