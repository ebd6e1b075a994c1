"""The app the console's browser tests run: the transactions example (a source, a stream
pipeline with a window and a feature group) plus functions on a bucket and state machines with
Map, Parallel, caught errors and a long wait, so every page has something real to show."""

import time

from transactions import app  # examples/transactions_features, on PYTHONPATH

from headrace.streams.operators import aggregations as agg


@app.on_object_created(bucket="inbox", prefix="in/")
@app.function(retries=0)
def ingest(event, context):
    key = event["Records"][0]["s3"]["object"]["key"]
    print(f"ingesting {key}")
    return {"key": key}


@app.function(retries=1, backoff=0.1)
def reject(event, context):
    print("about to refuse", event)
    raise ValueError(f"refused {event.get('why', 'everything')}")


@app.function(retries=0)
def square(event, context):
    n = event["n"]
    if n % 5 == 4:
        raise ArithmeticError(f"{n} is unlucky")
    return {"n": n, "square": n * n}


@app.function(retries=0)
def nap(event, context):
    time.sleep(float(event.get("seconds", 0)))
    return {"slept": event.get("seconds", 0)}


app.state_machine(
    "fanout",
    {
        "StartAt": "Squares",
        "States": {
            "Squares": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "MaxConcurrency": 4,
                "ItemSelector": {"n.$": "$$.Map.Item.Value"},
                "ItemProcessor": {
                    "StartAt": "Square",
                    "States": {
                        "Square": {
                            "Type": "Task",
                            "Resource": "headrace:function:square",
                            "Catch": [{"ErrorEquals": ["ArithmeticError"], "Next": "Unlucky"}],
                            "End": True,
                        },
                        "Unlucky": {"Type": "Pass", "Result": {"unlucky": True}, "End": True},
                    },
                },
                "ResultPath": "$.squares",
                "Next": "Both",
            },
            "Both": {
                "Type": "Parallel",
                "Branches": [
                    {
                        "StartAt": "Quick",
                        "States": {
                            "Quick": {
                                "Type": "Task",
                                "Resource": "headrace:function:nap",
                                "Parameters": {"seconds": 0},
                                "End": True,
                            }
                        },
                    },
                    {"StartAt": "Noop", "States": {"Noop": {"Type": "Pass", "End": True}}},
                ],
                "ResultPath": "$.both",
                "Next": "Wait",
            },
            "Wait": {"Type": "Wait", "SecondsPath": "$.wait", "Next": "Done"},
            "Done": {"Type": "Succeed"},
        },
    },
)

app.state_machine(
    "failing",
    {
        "StartAt": "Reject",
        "States": {
            "Reject": {
                "Type": "Task",
                "Resource": "headrace:function:reject",
                "End": True,
            }
        },
    },
)


# Sensor readings the tests append with chosen event times, some after their minute closed: the
# late records per window the Streams page counts.
app.stream("readings")
sensors = app.pipeline("sensors", stream="readings")
sensors.tumbling(60, time_column="t", key="sensor", aggs={"n": agg.count()}, grace=0)
sensors.to_stream("sensor-minutes")
app.stream("sensor-minutes")


@app.http("GET /hello")
def hello(event, context):
    """The HTTP route the Serving page shows with its replicas and latency."""
    return {"statusCode": 200, "body": "hello from the console app"}
