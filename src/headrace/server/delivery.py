"""Delivery: the one place where a routed event becomes invocations and executions.

Every event — an object created in a bucket, a source record, a scheduled tick — is an envelope
routed by the bus's rules (object triggers are rules too), then delivered here inside the
caller's ledger transaction: the event is recorded once in the outbox, each function target gets
an invocation whose idempotency key is `<event id>:<function>`, and each state machine target an
execution named `event-<event id>`. A redelivery after a crash therefore adds nothing. Stream
targets are appended by the caller (their logs live outside the ledger).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from headrace.events.bus import Target
from headrace.events.envelope import without_precise_time
from headrace.functions.spec import FunctionSpec
from headrace.ledger import Ledger, NewInvocation
from headrace.ledger import executions as execution_store
from headrace.workflows.api import execution_arn, record_execution
from headrace.workflows.names import name_for

Routed = Mapping[Target, list[tuple[dict[str, Any], Any]]]  # Bus.deliveries


@dataclass
class Delivered:
    functions: set[str] = field(default_factory=set)  # functions that got new invocations
    invocations: int = 0
    executions: list[str] = field(default_factory=list)  # ids of executions started
    refused: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # with the reason


def deliver(
    ledger: Ledger,
    conn: Connection,
    routed: Routed,
    *,
    functions: Mapping[str, FunctionSpec],
    state_machines: Mapping[str, dict[str, Any]],
    invocation_source: str = "bus",
    subjects: Mapping[str, str] | None = None,
    record: list[dict[str, Any]] | None = None,
) -> Delivered:
    """Deliver `routed` (from `Bus.deliveries`) to its function and state machine targets.

    Events delivered to at least one of those are recorded in the outbox with the number of
    targets; `record` lists envelopes to record even when nothing was delivered (every object
    created is recorded, so the ledger says it was seen). `subjects` names an event's object.
    """
    out = Delivered()
    targets: dict[str, int] = {}
    envelopes: dict[str, dict[str, Any]] = {e["id"]: e for e in record or ()}
    new: list[NewInvocation] = []
    for target, pairs in routed.items():
        if target.kind == "function":
            spec = functions[target.name]
            keys = [f"{envelope['id']}:{spec.name}" for envelope, _ in pairs]
            known = ledger.invocations_by_key(conn, keys)
            for (envelope, payload), key in zip(pairs, keys, strict=True):
                if key in known:  # delivered before: a redelivery
                    continue
                new.append(
                    NewInvocation(
                        function=spec.name,
                        payload=payload,
                        max_attempts=spec.max_attempts,
                        source=invocation_source,
                        event_id=envelope["id"],
                        idempotency_key=key,
                    )
                )
                out.functions.add(spec.name)
                envelopes[envelope["id"]] = envelope
                targets[envelope["id"]] = targets.get(envelope["id"], 0) + 1
        elif target.kind == "state_machine":
            for envelope, payload in pairs:
                try:
                    with conn.begin_nested():  # one event's execution never costs the others
                        started = _start_execution(
                            conn, target.name, state_machines[target.name], envelope["id"], payload
                        )
                except Exception as exc:
                    reason = f"starting {target} failed: {type(exc).__name__}: {exc}"
                    out.refused.append((envelope, reason))
                    continue
                if started:
                    out.executions.append(started)
                    envelopes[envelope["id"]] = envelope
                    targets[envelope["id"]] = targets.get(envelope["id"], 0) + 1
    recorded = ledger.known_events(conn, list(envelopes))
    for event_id, envelope in envelopes.items():
        if event_id in recorded:  # an earlier delivery recorded it already
            continue
        ledger.record_event(
            conn,
            event_id=event_id,
            source=envelope["source"],
            detail_type=envelope["detail-type"],
            subject=(subjects or {}).get(event_id),
            payload=without_precise_time(envelope),
            routed=targets.get(event_id, 0),
        )
    ledger.enqueue(new, conn)
    out.invocations = len(new)
    return out


def _start_execution(
    conn: Connection, state_machine: str, definition: dict[str, Any], event_id: str, input: Any
) -> str | None:
    name = name_for("event-", event_id)  # an id is the sender's: any characters
    if execution_store.find(conn, execution_arn(state_machine, name)) is not None:
        return None  # this event started it already
    return record_execution(conn, state_machine, definition, input, name=name)
