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
