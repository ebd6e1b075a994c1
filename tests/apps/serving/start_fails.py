"""An app whose handler module cannot load in a replica (as a model that fails to load at
import), for the start-failure test."""

import os
import sys
import time

from headrace import App

if sys.argv[0].endswith("replica.py") and os.environ.get("START_HANGS"):
    time.sleep(600)
if sys.argv[0].endswith("replica.py"):
    raise RuntimeError("the model file is truncated")

app = App("serving-start-fails")


def echo(event, context):
    return {"statusCode": 200, "body": "ok"}


app.http("GET /echo", echo)
