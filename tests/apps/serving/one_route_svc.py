"""One route, with a replica of its own: for the start-up log's wording."""

import os

from headrace import App

app = App("serving-one-route")


def pid(event, context):
    return {"statusCode": 200, "body": str(os.getpid())}


app.http("GET /solo", pid, replicas=1)
