"""The app the coordinator tests run: one function per behaviour under test."""

import json
import logging
import os
import time
from urllib.parse import unquote_plus

from headrace import App

app = App("basic")
log = logging.getLogger("basic")


def _record(event):
    rec = event["Records"][0]["s3"]
    return rec["bucket"]["name"], unquote_plus(rec["object"]["key"])


@app.on_object_created(bucket="inbox", prefix="copy/")
@app.function(retries=0)
def copy(event, context):
    """Copy the object to `outbox` under the same key; the output is keyed by the input."""
    bucket, key = _record(event)
    data = context.storage.bucket(bucket).get(key)
    context.storage.bucket("outbox").put(key, data)
    return {"key": key, "size": len(data)}


@app.on_object_created(bucket="inbox", prefix="echo/")
@app.function(retries=0)
def echo(event, context):
    started = time.time()
    print("hello from print")
    log.warning("hello from logging")
    return {
        "started": started,
        "event": event,
        "context": {
            "function_name": context.function_name,
            "function_version": context.function_version,
            "invoked_function_arn": context.invoked_function_arn,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "aws_request_id": context.aws_request_id,
            "log_group_name": context.log_group_name,
            "log_stream_name": context.log_stream_name,
            "remaining_ms": context.get_remaining_time_in_millis(),
        },
    }


@app.on_object_created(bucket="inbox", prefix="fail/")
@app.function(retries=2, backoff=0.2)
def always_fails(event, context):
    print(f"attempt {context.attempt}")
    raise RuntimeError("this input is not acceptable")


@app.function(timeout=2, retries=1, backoff=0.1)  # room to start on a loaded machine
def too_slow(event, context):
    print("going to sleep")
    time.sleep(30)


@app.function(concurrency=1, retries=0)
def one_at_a_time(event, context):
    started = time.time()
    time.sleep(0.15)
    return {"started": started, "finished": time.time()}


@app.function(retries=0, tmp_size=1)
def scratch(event, context):
    path = context.tmp_dir / "data.bin"
    path.write_bytes(b"x" * int(event.get("bytes", 10)))
    return {"tmp_dir": str(context.tmp_dir), "exists": path.exists()}


@app.function(retries=0)
def flaky_once(event, context):
    """Fails on the first attempt, succeeds on the second."""
    if context.attempt == 1:
        raise ConnectionError("first attempt always fails")
    return {"attempt": context.attempt}


@app.function(retries=0)
def noop(event, context):
    return None


@app.function(retries=0)
def bad_result(event, context):
    return {"when": object()}


@app.function(retries=0)
def pid(event, context):
    return {"pid": os.getpid(), "env": json.loads(json.dumps(dict(event)))}


# Registered by reference: plain_handler.py never imports headrace.
app.function("plain_handler.handler", name="plain", retries=0)
app.on_object_created("plain", bucket="inbox", suffix=".txt")


@app.function(retries=0, timeout=30)
def sleepy(event, context):
    time.sleep(float(event.get("seconds", 1)))
    return {"slept": event.get("seconds", 1)}


# A rule written for S3's EventBridge events: objects created in `drop` start an execution whose
# input is the envelope. Object triggers are bus rules too, so both take one event path.
app.state_machine(
    "on_object",
    {
        "StartAt": "Name",
        "States": {
            "Name": {
                "Type": "Pass",
                "Parameters": {"bucket.$": "$.detail.bucket.name", "key.$": "$.detail.object.key"},
                "End": True,
            }
        },
    },
)
app.rule(
    {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": ["drop"]}},
    },
    target="states:on_object",
    name="drop-objects",
)
