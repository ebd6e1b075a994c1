"""State machines and the functions their Task states call, for the workflow tests."""

import json
import time
from pathlib import Path

from headrace import App

app = App("flows")


@app.function(retries=0)
def double(event, context):
    return {"value": event["value"] * 2}


@app.function(retries=0)
def record(event, context):
    """Count how often each item ran: a second completion of an item would show here."""
    marks = Path(event["marks"])
    marks.mkdir(parents=True, exist_ok=True)
    time.sleep(float(event.get("sleep", 0)))
    with open(marks / f"{event['item']}.{context.aws_request_id}", "w") as fh:
        fh.write(json.dumps(event))
    return {"item": event["item"], "square": event["item"] ** 2}


@app.function(retries=0)
def flaky(event, context):
    marks = Path(event["marks"]) / "flaky"
    marks.mkdir(parents=True, exist_ok=True)
    n = len(list(marks.iterdir()))
    (marks / str(n)).touch()
    if n < 2:
        raise ConnectionError(f"attempt {n + 1} fails")
    return {"attempts": n + 1}


@app.function(retries=0)
def explode(event, context):
    raise ValueError(f"cannot handle {event}")


app.state_machine(
    "squares",
    {
        "StartAt": "Fan",
        "States": {
            "Fan": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "MaxConcurrency": 8,
                "ItemSelector": {
                    "item.$": "$$.Map.Item.Value",
                    "sleep.$": "$.sleep",
                    "marks.$": "$.marks",
                },
                "ItemProcessor": {
                    "StartAt": "Record",
                    "States": {
                        "Record": {
                            "Type": "Task",
                            "Resource": "headrace:function:record",
                            "End": True,
                        }
                    },
                },
                "ResultPath": "$.results",
                "Next": "Done",
            },
            "Done": {
                "Type": "Pass",
                "Parameters": {"n.$": "States.ArrayLength($.results)", "results.$": "$.results"},
                "End": True,
            },
        },
    },
)

app.state_machine(
    "retry_and_catch",
    {
        "StartAt": "Flaky",
        "States": {
            "Flaky": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": "flaky", "Payload.$": "$"},
                "Retry": [
                    {
                        "ErrorEquals": ["ConnectionError"],
                        "IntervalSeconds": 1,
                        "BackoffRate": 1.0,
                        "MaxAttempts": 3,
                    }
                ],
                "ResultSelector": {"attempts.$": "$.Payload.attempts"},
                "ResultPath": "$.flaky",
                "Next": "Explode",
            },
            "Explode": {
                "Type": "Task",
                "Resource": "arn:aws:lambda:local:000000000000:function:explode",
                "Catch": [
                    {"ErrorEquals": ["ValueError"], "ResultPath": "$.error", "Next": "Handled"}
                ],
                "End": True,
            },
            "Handled": {"Type": "Pass", "End": True},
        },
    },
)

app.state_machine(
    "doubling",
    {
        "StartAt": "Check",
        "States": {
            "Check": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.value", "NumericLessThan": 100, "Next": "Double"}],
                "Default": "Done",
            },
            "Double": {"Type": "Task", "Resource": "headrace:function:double", "Next": "Check"},
            "Done": {"Type": "Succeed"},
        },
    },
)


@app.function(retries=0)
def gated(event, context):
    """Item 3 fails until its gate folder holds an `open` file."""
    result = record(event, context)
    if event["item"] == 3 and not (Path(event["gate"]) / "open").exists():
        raise FileNotFoundError(f"{event['gate']}/open")
    return result


app.state_machine(
    "gated",
    {
        "StartAt": "Fan",
        "States": {
            "Fan": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "ItemSelector": {
                    "item.$": "$$.Map.Item.Value",
                    "gate.$": "$.gate",
                    "marks.$": "$.marks",
                },
                "ItemProcessor": {
                    "StartAt": "Gated",
                    "States": {
                        "Gated": {
                            "Type": "Task",
                            "Resource": "headrace:function:gated",
                            "End": True,
                        }
                    },
                },
                "End": True,
            }
        },
    },
)


@app.function(retries=0)
def ask(event, context):
    """Hand the task token out, as a human-approval step would by email."""
    path = Path(event["marks"]) / "token.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(event["token"])
    return {"asked": True}


app.state_machine(
    "approval",
    {
        "StartAt": "Ask",
        "States": {
            "Ask": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
                "Parameters": {
                    "FunctionName": "ask",
                    "Payload": {"token.$": "$$.Task.Token", "marks.$": "$.marks"},
                },
                "HeartbeatSeconds": 6,  # room for two CLI calls on a loaded machine
                "ResultPath": "$.approval",
                "Catch": [
                    {
                        "ErrorEquals": ["States.HeartbeatTimeout"],
                        "ResultPath": "$.error",
                        "Next": "TimedOut",
                    }
                ],
                "End": True,
            },
            "TimedOut": {"Type": "Pass", "End": True},
        },
    },
)


# workflow variables carried across Task states (a resumed execution must see the same values),
# read back by a JSONata state in an otherwise JSONPath machine
app.state_machine(
    "tally",
    {
        "StartAt": "Init",
        "States": {
            "Init": {"Type": "Pass", "Assign": {"count": 0, "total": 0}, "Next": "Loop"},
            "Loop": {
                "Type": "Choice",
                "Choices": [{"Variable": "$count", "NumericLessThan": 8, "Next": "Work"}],
                "Default": "Done",
            },
            "Work": {
                "Type": "Task",
                "Resource": "headrace:function:record",
                "Parameters": {"item.$": "$count", "sleep.$": "$.sleep", "marks.$": "$.marks"},
                "ResultPath": None,
                "Assign": {
                    "count.$": "States.MathAdd($count, 1)",
                    "total.$": "States.MathAdd($total, $.square)",
                },
                "Next": "Loop",
            },
            "Done": {
                "Type": "Pass",
                "QueryLanguage": "JSONata",
                "Output": {"count": "{% $count %}", "total": "{% $total %}"},
                "End": True,
            },
        },
    },
)


@app.function(retries=0)
def big(event, context):
    """A result of `n` bytes, to meet the 256 KiB quota on task results."""
    return {"n": event["n"], "s": "y" * event["n"]}


app.state_machine(
    "oversized",
    {
        "StartAt": "Big",
        "States": {
            "Big": {
                "Type": "Task",
                "Resource": "headrace:function:big",
                "ResultSelector": {"n.$": "$.n"},  # trims it, but the raw result counts
                "End": True,
            }
        },
    },
)


# an activity task: a worker process takes it (get-activity-task) and answers it; the catch turns
# a silent worker (HeartbeatSeconds) or no worker at all (TimeoutSeconds) into an output
app.state_machine(
    "resize",
    {
        "StartAt": "Resize",
        "States": {
            "Resize": {
                "Type": "Task",
                "Resource": "arn:aws:states:us-east-1:123456789012:activity:resize",
                "Parameters": {"image.$": "$.image", "width": 640},
                "TimeoutSeconds": 60,
                "HeartbeatSeconds": 15,  # room for a CLI call on a loaded machine
                "ResultPath": "$.resized",
                "Catch": [
                    {
                        "ErrorEquals": ["States.HeartbeatTimeout", "States.Timeout"],
                        "ResultPath": "$.error",
                        "Next": "Gave up",
                    }
                ],
                "End": True,
            },
            "Gave up": {"Type": "Pass", "End": True},
        },
    },
)

app.state_machine(
    "resize_soon",
    {
        "StartAt": "Resize",
        "States": {
            "Resize": {
                "Type": "Task",
                "Resource": "arn:aws:states:us-east-1:123456789012:activity:resize",
                "TimeoutSeconds": 2,
                "End": True,
            }
        },
    },
)

app.state_machine(
    "unknown_activity",
    {
        "StartAt": "Nobody",
        "States": {
            "Nobody": {
                "Type": "Task",
                "Resource": "arn:aws:states:us-east-1:123456789012:activity:nobody",
                "End": True,
            }
        },
    },
)

app.state_machine(
    "resize_patient",
    {
        "StartAt": "Resize",
        "States": {
            "Resize": {
                "Type": "Task",
                "Resource": "arn:aws:states:us-east-1:123456789012:activity:resize",
                "TimeoutSeconds": 300,
                "End": True,
            }
        },
    },
)
