"""Service integrations of Task states that run in workers: DynamoDB items (headrace.tables),
SNS publish (headrace.notify) and AWS Batch jobs (headrace.jobs).

Each is an ordinary function handler `(event, context)`, registered by the coordinator under a
reserved name, so these tasks get the same leases, timeouts and crash recovery as any function.
The event carries the ledger URL (and topics, job definitions): workers hold no configuration.
"""

from __future__ import annotations

from typing import Any

from headrace.ledger import Ledger

DYNAMODB = "__dynamodb__"
SNS = "__sns__"
BATCH = "__batch__"

_ledgers: dict[str, Ledger] = {}


def _ledger(url: str) -> Ledger:
    ledger = _ledgers.get(url)
    if ledger is None:
        ledger = _ledgers[url] = Ledger(url)
    return ledger


def dynamodb(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    from headrace.tables import Tables

    return Tables(_ledger(event["ledger"])).execute(event["action"], event["params"])


def sns(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    from headrace.notify import Notifier, Topic
    from headrace.notify.subscriptions import subscription_from_dict

    topics = {
        name: Topic(name, [subscription_from_dict(s) for s in subs])
        for name, subs in event.get("topics", {}).items()
    }
    return Notifier(_ledger(event["ledger"]), topics).publish_request(event["params"])


HANDLERS = {
    DYNAMODB: "headrace.workflows.services:dynamodb",
    SNS: "headrace.workflows.services:sns",
    BATCH: "headrace.jobs:handle_batch_task",
}
