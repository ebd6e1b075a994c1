"""Functions the coordinator benchmarks run."""

import time

from headrace import App

app = App("bench")


@app.function(retries=0)
def noop(event, context):
    return None


@app.on_object_created(bucket="landing")
@app.function(retries=0)
def stamp(event, context):
    """Report when the handler started, for trigger latency."""
    return {"started": time.time(), "key": event["Records"][0]["s3"]["object"]["key"]}
