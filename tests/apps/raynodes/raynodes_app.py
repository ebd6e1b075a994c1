"""The app of the multi-node Ray test: one function that says which node ran it."""

import os
import time
from pathlib import Path

from headrace import App

app = App("raynodes")


@app.function(retries=0)
def where(event, context):
    """Mark the start (in event["marks"]), sleep, and name the node: HEADRACE_TEST_NODE is set
    in the environment of each node's `ray start`, which its Ray workers inherit."""
    node = os.environ.get("HEADRACE_TEST_NODE", "?")
    if event.get("marks"):
        Path(event["marks"], f"{event['n']}-{node}-{context.attempt}").touch()
    time.sleep(float(event["seconds"]))
    return {"n": event["n"], "node": node}
