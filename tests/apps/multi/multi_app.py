"""The app several coordinators share in the scale-out test: object triggers, a state machine
with a Map, and a source feeding a windowed pipeline. Its feed folder comes from MULTI_FEED."""

import hashlib
import os
import time
from urllib.parse import unquote_plus

from headrace import App
from headrace.streams import ObjectSource
from headrace.streams.operators import aggregations as agg

app = App("multi")


@app.on_object_created(bucket="inbox", prefix="in/")
@app.function(retries=0)
def transform(event, context):
    """Write a digest and the upper-cased object to `outbox` under the same key."""
    rec = event["Records"][0]["s3"]
    bucket, key = rec["bucket"]["name"], unquote_plus(rec["object"]["key"])
    data = context.storage.bucket(bucket).get(key)
    time.sleep(0.3)  # a backlog for one coordinator: the others claim the rest
    digest = hashlib.sha256(data).hexdigest().encode()
    context.storage.bucket("outbox").put(key, digest + b"\n" + data.upper())
    return {"key": key, "pid": os.getpid()}


@app.function(retries=0)
def square(event, context):
    time.sleep(0.02)
    return {"item": event["item"], "square": event["item"] ** 2}


@app.function(retries=0)
def total(event, context):
    return {"sum": sum(r["square"] for r in event["results"]), "n": len(event["results"])}


FAN = {
    "StartAt": "Fan",
    "States": {
        "Fan": {
            "Type": "Map",
            "ItemsPath": "$.items",
            "MaxConcurrency": 4,
            "ItemSelector": {"item.$": "$$.Map.Item.Value"},
            "ItemProcessor": {
                "StartAt": "Square",
                "States": {
                    "Square": {
                        "Type": "Task",
                        "Resource": "headrace:function:square",
                        "End": True,
                    }
                },
            },
            "ResultPath": "$.results",
            "Next": "Total",
        },
        "Total": {
            "Type": "Task",
            "Resource": "headrace:function:total",
            "ResultPath": "$.total",
            "Next": "Wait",
        },
        "Wait": {"Type": "Wait", "Seconds": 1, "Next": "Done"},
        "Done": {
            "Type": "Pass",
            "Parameters": {"label.$": "$.label", "total.$": "$.total", "results.$": "$.results"},
            "End": True,
        },
    },
}
app.state_machine("fan", FAN)

feed = os.environ.get("MULTI_FEED")
if feed:
    app.source(
        ObjectSource("feed", feed, suffix=".jsonl", interval=0.2, settle_seconds=0.5),
        event_source="multi.feed",
        detail_type="Tick",
        time_field="t",
        id_field="id",
    )
    app.stream("ticks", partitions=2, key="k")
    app.stream("windows")
    app.rule({"detail-type": ["Tick"]}, target="stream:ticks")
    pipe = app.pipeline("agg", stream="ticks")
    pipe.tumbling(
        10,
        time_column="_event_time",
        key="k",
        grace=3600,
        aggs={"n": agg.count(), "total": agg.sum("v")},
    )
    pipe.to_stream("windows")
