"""The ledger's tables. Every state change that must survive a crash lives here."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    select,
)

metadata = MetaData()

# One row per coordinator process that ever ran against this ledger; a heartbeat tells whether
# it is alive, so a successor can take over the invocations it had leased.
coordinators = Table(
    "coordinators",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("stopped_at", Float),
    Column("info", Text),  # JSON: metrics address, executor, version
)

# The ingest ledger: which object versions have been seen. Its primary key is what makes a
# trigger fire exactly once per object version, across restarts.
objects = Table(
    "objects",
    metadata,
    Column("bucket", String(63), primary_key=True),
    Column("key", String(1024), primary_key=True),
    Column("version", String(128), primary_key=True),
    Column("size", Integer, nullable=False),
    Column("etag", String(64), nullable=False),
    Column("seen_at", Float, nullable=False),
    Column("event_id", String(64), nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("source", String(128), nullable=False),
    Column("detail_type", String(128), nullable=False),
    Column("subject", String(1100)),  # bucket/key for object events
    Column("payload", Text, nullable=False),  # JSON
    Column("created_at", Float, nullable=False),
    Column("routed", Integer, nullable=False, default=0),  # invocations created for it
)

invocations = Table(
    "invocations",
    metadata,
    Column("id", String(64), primary_key=True),  # also the Lambda aws_request_id
    Column("function", String(128), nullable=False),
    Column("payload", Text, nullable=False),  # JSON event
    Column("status", String(16), nullable=False),  # pending | running | succeeded | dead
    Column("attempts", Integer, nullable=False, default=0),  # attempts that counted
    Column("max_attempts", Integer, nullable=False),
    Column("next_run_at", Float, nullable=False),
    Column("lease_owner", String(64)),
    Column("lease_expires_at", Float),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("result", Text),  # JSON of what the handler returned
    Column("error", Text),
    Column("traceback", Text),
    Column("event_id", String(64)),
    Column("idempotency_key", String(255), unique=True),
    Column("source", String(32), nullable=False),  # object | invoke | redrive | api | workflow
    Column("execution_id", String(255)),  # set when a workflow Task state runs this invocation
    Column("timeout", Float),  # a Task state's TimeoutSeconds, when shorter than the function's
    Index("ix_invocations_ready", "status", "function", "next_run_at"),
    Index("ix_invocations_function_created", "function", "created_at"),
    Index("ix_invocations_lease", "lease_owner", "status"),
    # the console's newest-first pages of every function (added later: see db.add_indexes)
    Index("ix_invocations_created", "created_at"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("invocation_id", String(64), nullable=False),
    Column("number", Integer, nullable=False),
    Column("function", String(128), nullable=False),
    Column(
        "status", String(16), nullable=False
    ),  # ok | error | timeout | memory | crashed | abandoned
    Column("worker", String(128)),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("duration_ms", Float),
    Column("max_rss_mb", Float),
    Column("error", Text),
    Column("traceback", Text),
    Column("log_path", Text),
    Index("ix_attempts_invocation", "invocation_id", "number"),
    Index("ix_attempts_function", "function", "id"),
)


def last_attempt_ms() -> Any:
    """The duration of an invocation's latest attempt (a column for a select on invocations):
    what "took" shows. The invocation's finish minus its creation would count its time in the
    queue and, after a redrive, in the dead-letter list."""
    return (
        select(attempts.c.duration_ms)
        .where(attempts.c.invocation_id == invocations.c.id)
        .order_by(attempts.c.id.desc())
        .limit(1)
        .scalar_subquery()
        .label("last_attempt_ms")
    )


dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("invocation_id", String(64), nullable=False, index=True),
    Column("function", String(128), nullable=False),
    Column("payload", Text, nullable=False),
    Column("error", Text),
    Column("traceback", Text),
    Column("attempts", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("redriven_at", Float),
    Index("ix_dead_letters_function", "function", "created_at"),
)

# Workflow executions and their event-sourced history (see headrace.workflows.interpreter).
executions = Table(
    "executions",
    metadata,
    Column("id", String(255), primary_key=True),  # execution ARN
    Column("name", String(80), nullable=False),
    Column("state_machine", String(80), nullable=False),
    Column("definition", Text, nullable=False),  # the ASL it started with (JSON)
    Column(
        "status", String(16), nullable=False
    ),  # RUNNING | SUCCEEDED | FAILED | TIMED_OUT | ABORTED
    Column("input", Text, nullable=False),
    Column("output", Text),
    Column("error", Text),
    Column("cause", Text),
    Column("started_at", Float, nullable=False),
    Column("stopped_at", Float),
    Index("ix_executions_status", "status", "started_at"),
    Index("ix_executions_machine", "state_machine", "started_at"),
)

history = Table(
    "history",
    metadata,
    Column("execution_id", String(255), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("type", String(64), nullable=False),
    Column("timestamp", Float, nullable=False),
    Column("scope", Text, nullable=False),
    Column("details", Text, nullable=False),  # JSON
)

# Distributed Map runs (AWS's Map Runs): one per start of a DISTRIBUTED Map state, each item a
# child execution (a row of `executions` with its own history), linked here by its index. The
# parent's history says which children it started and which ended; these rows say how they fare.
map_runs = Table(
    "map_runs",
    metadata,
    Column("id", String(400), primary_key=True),  # the MapRunArn
    Column("execution_id", String(255), nullable=False),  # the parent execution's ARN
    Column("scope", Text, nullable=False),  # the parent's scope the Map state runs in
    Column("state", String(80), nullable=False),  # the Map state's name
    Column("execution_type", String(16), nullable=False),  # STANDARD | EXPRESS
    Column("status", String(16), nullable=False),  # RUNNING | SUCCEEDED | FAILED | ABORTED
    Column("total", Integer, nullable=False),  # items
    Column("max_concurrency", Integer, nullable=False),
    Column("tolerated_count", Integer, nullable=False),
    Column("tolerated_percentage", Float, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("stopped_at", Float),
    Column("redrive_count", Integer, nullable=False, default=0),
    Column("redriven_at", Float),
    Index("ix_map_runs_execution", "execution_id", "started_at"),
)

map_run_executions = Table(
    "map_run_executions",
    metadata,
    Column("map_run_id", String(400), primary_key=True),
    Column("idx", Integer, primary_key=True),  # the item's index
    Column("execution_id", String(400), nullable=False, unique=True),  # the child's ARN
)

# SendTaskSuccess / SendTaskFailure / SendTaskHeartbeat requests for `.waitForTaskToken` tasks,
# written by anyone, applied to the execution's history by the coordinator (its only writer).
task_callbacks = Table(
    "task_callbacks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("token", String(1100), nullable=False),
    Column("kind", String(16), nullable=False),  # success | failure | heartbeat
    Column("output", Text),  # JSON
    Column("error", Text),
    Column("cause", Text),
    Column("created_at", Float, nullable=False),
    Column("applied_at", Float),
    Column("outcome", String(16)),  # applied | rejected (no task waits for the token)
    Index("ix_task_callbacks_pending", "applied_at"),
)

# Step Functions activities (CreateActivity): a Task whose Resource is an activity's ARN waits
# for a worker to take it with GetActivityTask and answer with SendTaskSuccess/Failure.
activities = Table(
    "activities",
    metadata,
    Column("name", String(80), primary_key=True),
    Column("created_at", Float, nullable=False),
)

# One row per activity task scheduled by an execution (keyed by its task token): written by the
# coordinator when the task is scheduled, taken by exactly one worker (compare-and-set on
# `worker`), so a task handed out survives a coordinator restart and stays answerable.
activity_tasks = Table(
    "activity_tasks",
    metadata,
    Column("token", String(1100), primary_key=True),
    Column("activity", String(80), nullable=False),
    Column("execution_id", String(255), nullable=False),
    Column("input", Text, nullable=False),  # JSON, as the worker receives it
    Column("scheduled_at", Float, nullable=False),
    Column("worker", String(80)),  # the worker that took it; NULL while it waits
    Column("started_at", Float),
    Column("closed", Integer, nullable=False, default=0),  # its task ended: no worker takes it
    Index("ix_activity_tasks_waiting", "activity", "closed", "worker", "scheduled_at"),
)

# Stream pipelines: per (pipeline, partition) the next offset to read, the last committed
# micro-batch and the batch planned next. The plan is written before any sink sees the batch, so a
# replay after a crash reads exactly the same records and the sinks' idempotency keys stay true.
stream_checkpoints = Table(
    "stream_checkpoints",
    metadata,
    Column("pipeline", String(128), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("seq", Integer, nullable=False),  # last committed batch, 0 before the first
    Column("offset", Integer, nullable=False),  # next offset to read
    Column("planned_seq", Integer),
    Column("planned_end", Integer),
    Column("planned_flush", Integer),  # 0 records, 1 flush sink buffers, 2 flush everything
    Column("watermark", Float),  # epoch seconds
    Column("log_end", Integer),  # the log's end offset seen at commit, for lag
    Column("records", Integer, nullable=False, default=0),  # records read in all
    Column("late", Integer, nullable=False, default=0),  # late records in all
    Column("updated_at", Float, nullable=False),
    Column("failures", Integer, nullable=False, default=0),  # failed tries since the last commit
    Column("last_error", Text),  # why the batch after `seq` keeps failing, if it does
)

# Operator and sink state of a pipeline partition, one row per slot (Arrow IPC bytes), written in
# the same transaction as the checkpoint it belongs to.
stream_state = Table(
    "stream_state",
    metadata,
    Column("pipeline", String(128), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("slot", String(255), primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

# The changelog of keyed operator state (dedup keys, open windows): one row per batch that changed
# some, holding the deltas of every slot it changed (rows gained, changed or lost; Arrow IPC, see
# streams.changelog), written in the same transaction as the checkpoint of batch `seq`. A keyed
# slot's state is its `stream_state` row (the base) with its deltas applied in seq order;
# compaction folds the rows into new bases and deletes them, in one transaction of its own.
stream_state_changes = Table(
    "stream_state_changes",
    metadata,
    Column("pipeline", String(128), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

# Records and bytes in and out of each stage per minute (what `headrace streams stats` shows).
stream_stats = Table(
    "stream_stats",
    metadata,
    Column("pipeline", String(128), primary_key=True),
    Column("stage", String(128), primary_key=True),
    Column("minute", Integer, primary_key=True),  # epoch minute of the commit
    Column("records_in", Integer, nullable=False, default=0),
    Column("records_out", Integer, nullable=False, default=0),
    Column("bytes_in", Integer, nullable=False, default=0),
    Column("bytes_out", Integer, nullable=False, default=0),
    Column("late", Integer, nullable=False, default=0),
)

# Late records per window: how many records each window of a stage missed (it had closed
# before they arrived; they went to the stage's late stream), added in the same transaction as
# the checkpoint of the batch that found them. Times are epoch seconds; records without an event
# time (reason "null_time") have no window and are counted under window_start = window_end = 0.
stream_late_windows = Table(
    "stream_late_windows",
    metadata,
    Column("pipeline", String(128), primary_key=True),
    Column("stage", String(128), primary_key=True),
    Column("reason", String(32), primary_key=True),  # window_closed | null_time
    Column("window_start", BigInteger, primary_key=True),
    Column("window_end", BigInteger, primary_key=True),
    Column("records", Integer, nullable=False, default=0),
    Column("updated_at", Float, nullable=False),
    Index("ix_stream_late_windows_start", "pipeline", "window_start"),
)

# Health of the coordinator's stream side, one row per component ("source:NAME",
# "thread:sources", "thread:pipelines"), written when its status changes; what `headrace streams
# stats` shows beside the pipelines' checkpoints.
stream_health = Table(
    "stream_health",
    metadata,
    Column("component", String(255), primary_key=True),
    Column("status", String(16), nullable=False),  # ok | failing
    Column("failures", Integer, nullable=False, default=0),  # consecutive, 0 when ok
    Column("restarts", Integer, nullable=False, default=0),  # of a thread, since start
    Column("rejected", Integer, nullable=False, default=0),  # records sent to its error stream
    Column("last_error", Text),
    Column("since", Float, nullable=False),  # when the status began
    Column("updated_at", Float, nullable=False),
)
