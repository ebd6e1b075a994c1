"""What the console reads from the ledger without parsing whole events: a history's outline
(the fields a fold of state statuses needs, extracted by the database) and a state's runs; and
late records counted per window with each stream checkpoint. On SQLite and PostgreSQL."""

from __future__ import annotations

import json

from sqlalchemy import insert

from headrace.ledger import browse
from headrace.ledger.checkpoints import StageCounts, commit_batch, read_late_windows
from headrace.ledger.schema import history
from headrace.workflows import execute
from headrace.workflows.graph import StatusFold, graph_model, state_statuses
from tests.test_workflows_graph import machine_with_oops, resources

ARN = "arn:aws:states:local:000000000000:execution:oops:one"


def _stored(ledger, events) -> None:
    with ledger.begin() as conn:
        conn.execute(
            insert(history),
            [
                {
                    "execution_id": ARN,
                    "seq": i,
                    "type": e["type"],
                    "timestamp": float(i),
                    "scope": e.get("scope", ""),
                    "details": json.dumps(e.get("details") or {}),
                }
                for i, e in enumerate(events, start=1)
            ],
        )


def test_a_fold_of_the_outline_paints_what_a_fold_of_whole_events_paints(ledger):
    data = machine_with_oops()
    r = execute(data, {"n": 11, "tag": "a|b", "cells": [1, 2, 3, 4, 5]}, resources=resources())
    _stored(ledger, r.history)
    with ledger.reader.connect() as conn:
        outline = browse.history_outline(conn, ARN, 0)
        chunks, seen = [], 0
        while more := browse.history_outline(conn, ARN, seen, 7):
            chunks.append(more)
            seen = more[-1][0]
    assert [e[0] for e in outline] == list(range(1, len(r.history) + 1))
    started = [d for _, kind, _, d in outline if kind == "MapStateStarted"]
    assert started == [{"name": "Cells", "items": 5}]  # the items as a count, not the items
    assert all("input" not in d and "output" not in d for *_, d in outline)
    assert [e for chunk in chunks for e in chunk] == outline
    fold = StatusFold(data)
    for chunk in chunks:  # fed as the console's background fold feeds it
        fold.feed({"type": t, "scope": sc, "details": d} for _, t, sc, d in chunk)
    whole = state_statuses(data, r.history)
    assert graph_model(data, fold.statuses()) == graph_model(data, whole)


def test_state_runs_reads_one_states_entries_and_exits(ledger):
    data = machine_with_oops()
    r = execute(data, {"n": 11, "tag": "a|b", "cells": [1, 2, 3, 4, 5]}, resources=resources())
    _stored(ledger, r.history)
    with ledger.reader.connect() as conn:
        runs = browse.state_runs(conn, ARN, ["Composite cell"])
        one = browse.state_runs(conn, ARN, ["Composite cell"], "[2]")
        none = browse.state_runs(conn, ARN, ["nosuch"])
    entered = [run for run in runs if run[1].endswith("StateEntered")]
    assert len(entered) == 5 and {run[4] for run in runs} == {"Composite cell"}
    assert [run[3] for run in one] == ["Cells[2]"] * len(one) and one
    assert "input" in json.loads(one[0][5])
    assert none == []


def test_late_records_are_added_per_window_with_the_checkpoint(ledger):
    minute = 1_700_000_040 * 1_000_000  # epoch microseconds

    def batch(seq: int, windows: dict) -> None:
        counts = [StageCounts("source"), StageCounts("tumbling", late_windows=windows)]
        with ledger.begin() as conn:
            commit_batch(
                conn, "p", 0, seq=seq, offset=seq * 10, watermark=None, log_end=None,
                records=10, late=sum(windows.values()), state={}, counts=counts,
            )  # fmt: skip

    batch(1, {("window_closed", minute, minute + 60_000_000): 2, ("null_time", 0, 0): 1})
    batch(2, {("window_closed", minute, minute + 60_000_000): 3})
    with ledger.reader.connect() as conn:
        rows = read_late_windows(conn)
        assert read_late_windows(conn, pipeline="other") == []
    got = {(r["reason"], r["window_start"], r["window_end"]): r["records"] for r in rows}
    assert got == {
        ("window_closed", 1_700_000_040.0, 1_700_000_100.0): 5,
        ("null_time", None, None): 1,
    }
    assert {r["stage"] for r in rows} == {"tumbling"} and rows[0]["window_start"] is not None
