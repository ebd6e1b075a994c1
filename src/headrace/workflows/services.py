"""Service integrations of Task states that run in workers: DynamoDB items (headrace.tables),
SNS publish (headrace.notify) and AWS Batch jobs (headrace.jobs).

Each is an ordinary function handler `(event, context)`, registered by the coordinator under a
reserved name, so these tasks get the same leases, timeouts and crash recovery as any function.
The event carries the ledger URL (and topics, job definitions): workers hold no configuration.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from headrace.ledger import Ledger
from headrace.workflows.errors import StatesError

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


def batch(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """`submitJob.sync` runs the job here and returns it as DescribeJobs shows it;
    `submitJob` records it, starts it in a process of its own and returns at once."""
    from headrace.jobs import JobDefinition, JobFailed, Jobs, handle_batch_task
    from headrace.jobs.records import job_arn

    settings = {
        "ledger_url": event["ledger"],
        "home": event["home"],
        "definitions": event.get("definitions", {}),
        "idempotency_key": event.get("idempotency_key"),
    }
    params = _with_project_env(event)
    if event["action"].endswith(".sync"):
        try:
            return _pascal(handle_batch_task(params, **settings))
        except JobFailed as exc:  # the failed job's description, as Step Functions shows it
            raise StatesError(exc.error_name, json.dumps(_pascal(exc.description))) from None
    jobs = Jobs(
        _ledger(event["ledger"]),
        event["home"],
        {n: JobDefinition.from_dict(d) for n, d in settings["definitions"].items()},
    )
    job_id = jobs.submit(
        params["JobDefinition"],
        job_name=params["JobName"],
        job_queue=params.get("JobQueue") or "default",
        container_overrides=params.get("ContainerOverrides"),
        parameters=params.get("Parameters"),
        idempotency_key=settings["idempotency_key"],
    )
    # its own session: the job outlives this worker, as a Batch job outlives its submitter
    subprocess.Popen(
        [
            sys.executable,
            "-m",
            "headrace.workflows.services",
            event["ledger"],
            event["home"],
            json.dumps(settings["definitions"]),
            job_id,
        ],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return {"JobId": job_id, "JobName": params["JobName"], "JobArn": job_arn(job_id)}


def _pascal(value: Any) -> Any:
    """DescribeJobs' camelCase keys as Step Functions' Batch integration returns them
    (`JobId`, `Status`, `Container.ExitCode`)."""
    if isinstance(value, dict):
        return {k[:1].upper() + k[1:]: _pascal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_pascal(v) for v in value]
    return value


def _with_project_env(event: dict[str, Any]) -> dict[str, Any]:
    """The job's parameters with HEADRACE_LEDGER/STORAGE/HOME added to its environment, so a
    job script reaches the project's ledger (task-log tables) and buckets like a function."""
    params = dict(event["params"])
    overrides = dict(params.get("ContainerOverrides") or {})
    env = list(overrides.get("Environment") or [])
    names = {e.get("Name") for e in env}
    for name, key in (
        ("HEADRACE_LEDGER", "ledger"),
        ("HEADRACE_STORAGE", "storage"),
        ("HEADRACE_HOME", "home"),
    ):
        if name not in names and event.get(key):
            env.append({"Name": name, "Value": str(event[key])})
    overrides["Environment"] = env
    params["ContainerOverrides"] = overrides
    return params


def _run_detached(ledger_url: str, home: str, definitions: str, job_id: str) -> None:
    from headrace.jobs import JobDefinition, Jobs

    defs = {n: JobDefinition.from_dict(d) for n, d in json.loads(definitions).items()}
    Jobs(Ledger(ledger_url), home, defs).run(job_id)


HANDLERS = {
    DYNAMODB: "headrace.workflows.services:dynamodb",
    SNS: "headrace.workflows.services:sns",
    BATCH: "headrace.workflows.services:batch",
}

if __name__ == "__main__":
    _run_detached(*sys.argv[1:5])
