"""Handlers for the serving tests: an echo, malformed and failing handlers, a slow one, a
batched JSON route and a model-bound route."""

import json
import os
import time

from headrace import App

app = App("serving-tests")


def echo(event, context):
    return {
        "statusCode": 200,
        "headers": {"x-pid": str(os.getpid())},
        "multiValueHeaders": {"x-many": ["1", "2"]},
        "body": json.dumps(
            {
                "path": event["path"],
                "params": event["pathParameters"],
                "query": event["multiValueQueryStringParameters"],
                "encoded": event["isBase64Encoded"],
                "body": event["body"],
                "function": context.function_name,
            }
        ),
    }


def echo_v2(event, context):
    return {"route": event["routeKey"], "headers": event["headers"], "pid": os.getpid()}


def malformed(event, context):
    return {"status": 200, "body": "where is statusCode?"}


def fails(event, context):
    raise RuntimeError("database password is hunter2")


def slow(event, context):
    time.sleep(float((event["queryStringParameters"] or {}).get("s", "0.5")))
    return {"statusCode": 200, "headers": {"x-pid": str(os.getpid())}, "body": "slept"}


def plus_one(batch, context):
    return [{"n": item["n"] + 1, "batch": len(batch), "pid": os.getpid()} for item in batch]


app.function(echo)
app.function(slow, timeout=2)
app.http("POST /items/{id}", "echo")
app.http("ANY /files/{proxy+}", "echo")
app.http("GET /v2/{name}", echo_v2, payload="v2")
app.http("GET /malformed", malformed)
app.http("GET /fails", fails)
app.http("GET /slow", "slow")
app.http("POST /plus", plus_one, payload="json", max_batch_size=32, max_wait_ms=20)


def scratch(event, context):
    (context.tmp_dir / "f").write_bytes(b"x" * 1000)
    return {"statusCode": 200, "body": str(context.tmp_dir)}


app.http("POST /scratch", scratch)


def plus_one_strict(batch, context):
    return [{"n": item["n"] + 1, "batch": len(batch)} for item in batch]  # KeyError without "n"


app.http("POST /plus-strict", plus_one_strict, payload="json", max_batch_size=32, max_wait_ms=50)


def shaped(event, context):
    """Answers what the query asks: ?status=204&body=x&h=content-length:2 (framing tests)."""
    query = event["multiValueQueryStringParameters"] or {}
    headers = dict(h.split(":", 1) for h in query.get("h", []))
    return {
        "statusCode": int(query.get("status", ["200"])[0]),
        "headers": headers,
        "body": "x" * int(query["size"][0]) if "size" in query else query.get("body", ["hello"])[0],
    }


app.http("ANY /shape", shaped)


def event_headers(event, context):
    return {"statusCode": 200, "body": json.dumps(event["headers"])}


app.http("GET /event-headers", event_headers)
