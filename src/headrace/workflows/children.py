"""A Distributed Map's child executions in the ledger: what their parent's events do to them.

A DISTRIBUTED Map run by the coordinator is a Map Run (`headrace.ledger.map_runs`) whose items
are child executions: ordinary executions with their own name, ARN and history, which the
coordinator runs (and resumes after a crash) like any other. The parent's history records which
children it started (`MapIterationStarted` with the child's ARN) and how each ended
(`MapIterationSucceeded`/`Failed`); the child rows are written in the same transaction as the
events that name them, so each item's child execution exists exactly once.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection

from headrace.ledger import executions as store
from headrace.ledger import map_runs


def child_definition(state: dict[str, Any], query_language: str) -> dict[str, Any]:
    """A Distributed Map's ItemProcessor as the state machine its child executions run."""
    processor = state.get("ItemProcessor") or state.get("Iterator") or {}
    machine = {k: v for k, v in processor.items() if k != "ProcessorConfig"}
    language = state.get("QueryLanguage", query_language)
    if "QueryLanguage" not in machine and language != "JSONPath":
        machine["QueryLanguage"] = language
    return machine


def child_event(scope: str, index: int, row: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """The parent's MapIterationSucceeded/Failed for a child execution that ended."""
    if row["status"] == "SUCCEEDED":
        output = row["output"]
        output = json.loads(output) if isinstance(output, str) else output
        return (
            "MapIterationSucceeded",
            scope,
            {"index": index, "output": output, "execution": row["id"]},
        )
    error = row["error"] or {"TIMED_OUT": "States.Timeout", "ABORTED": "States.Aborted"}.get(
        row["status"], "States.Runtime"
    )
    details = {"index": index, "error": error, "cause": row["cause"] or "", "execution": row["id"]}
    return ("MapIterationFailed", scope, details)


def stop_children(
    conn: Connection, execution_id: str, run_id: str | None = None, *, error: str = ""
) -> None:
    """Abort the running child executions of an execution's Map Runs (of one run, if given):
    a parent that ends, or a Map that fails, stops its children, as on AWS."""
    runs = (
        [run_id]
        if run_id
        else [r["id"] for r in map_runs.list_runs(conn, execution_id) if r["status"] == "RUNNING"]
    )
    for run in runs:
        for child in map_runs.children(conn, run, status="RUNNING"):
            if not store.lock_running(conn, child["id"]):
                continue
            store.append_next(conn, child["id"], "ExecutionAborted", {"error": error, "cause": ""})
            store.finish_execution(conn, child["id"], "ABORTED", None, error or None, None)
            stop_children(conn, child["id"])  # a child's own Distributed Maps
        if run_id is None:
            map_runs.finish_run(conn, run, "ABORTED")


def redrive_child(conn: Connection, child_id: str, execution_type: str) -> bool:
    """Run a failed or aborted child execution again (its parent was redriven): a STANDARD
    child resumes from its history; an EXPRESS child, which keeps none, starts over."""
    row = store.find(conn, child_id)
    if row is None or row["status"] == "RUNNING" or row["status"] == "SUCCEEDED":
        return False
    if execution_type == "EXPRESS":
        map_runs.reset_history(conn, child_id)
    else:
        count = store.count_events(conn, child_id, "ExecutionRedriven") + 1
        store.append_next(conn, child_id, "ExecutionRedriven", {"redriveCount": count})
    store.reopen_execution(conn, child_id)
    return True
