"""Routes with replica counts of their own beside routes on the shared replicas, for the
per-route replicas test under `headrace up`."""

import os
import time

from headrace import App

app = App("serving-own-replicas")


def pid(event, context):
    return {"statusCode": 200, "body": str(os.getpid())}


def slow_pid(event, context):
    time.sleep(float((event["queryStringParameters"] or {}).get("s", "0")))
    return {"statusCode": 200, "body": str(os.getpid())}


app.http("GET /shared", pid)
app.http("GET /solo", "pid", replicas=1)
app.http("GET /wide", "pid", replicas=2)
app.http("GET /elastic", slow_pid, min_replicas=1, max_replicas=2)
