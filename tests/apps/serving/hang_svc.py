"""A handler module that loads its model at import, as SAM handlers do; a model that says
{"hang": True} never finishes loading, for the abandoned roll-over test."""

import os
import sys
import time

from headrace import App

if sys.argv[0].endswith("replica.py") and os.environ.get("HEADRACE_MODEL_PATH"):
    from headrace.serving.model import current_model

    if current_model().get("hang"):
        time.sleep(600)

app = App("serving-hang-tests")


def which(event, context):
    return {"statusCode": 200, "body": os.environ.get("HEADRACE_MODEL", "")}


app.http("GET /which", which, model="digits@production")
