"""State machines that never end (legal ASL) beside a file trigger, for the robustness tests."""

from urllib.parse import unquote_plus

from headrace import App

app = App("loops")


@app.on_object_created(bucket="inbox")
@app.function(retries=0)
def convert(event, context):
    """Upper-case the object into `outbox`: the work that must keep flowing."""
    rec = event["Records"][0]["s3"]
    key = unquote_plus(rec["object"]["key"])
    data = context.storage.bucket("inbox").get(key)
    context.storage.bucket("outbox").put(key, data.upper())
    return {"key": key}


@app.function(retries=0)
def double(event, context):
    return {"value": event["value"] * 2}


PASS = {"Type": "Pass"}

app.state_machine("pass_self", {"StartAt": "A", "States": {"A": {**PASS, "Next": "A"}}})
app.state_machine(
    "ping_pong",
    {
        "StartAt": "Ping",
        "States": {"Ping": {**PASS, "Next": "Pong"}, "Pong": {**PASS, "Next": "Ping"}},
    },
)
app.state_machine(
    "choice_self",
    {
        "StartAt": "Again",
        "States": {
            "Again": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.go", "BooleanEquals": True, "Next": "Again"}],
                "Default": "Done",
            },
            "Done": {"Type": "Succeed"},
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
app.state_machine(
    "write_results",
    {
        "StartAt": "Fan",
        "States": {
            "Fan": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "ItemProcessor": {"StartAt": "P", "States": {"P": {**PASS, "End": True}}},
                "ResultWriter": {
                    "Resource": "arn:aws:states:::s3:putObject",
                    "Parameters": {"Bucket": "results", "Prefix.$": "$.prefix"},
                },
                "End": True,
            }
        },
    },
)
app.state_machine(
    "dynamic_function",
    {
        "StartAt": "Call",
        "States": {
            "Call": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName.$": "$.fn", "Payload": {"value": 1}},
                "End": True,
            }
        },
    },
)
