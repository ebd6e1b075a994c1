"""Distributed Map state machines (child executions, Map Runs) for the workflow tests."""

import json
import time
from pathlib import Path

from headrace import App

app = App("dmap")


@app.function(retries=0)
def record(event, context):
    """Mark each completion: a second completion of an item would show as a second file."""
    marks = Path(event["marks"])
    marks.mkdir(parents=True, exist_ok=True)
    time.sleep(float(event.get("sleep", 0)))
    gate = event.get("gate")
    if gate and event["item"] % 4 == 3 and not Path(gate, "open").exists():
        raise FileNotFoundError(f"item {event['item']}: the gate is shut")
    with open(marks / f"{event['item']}.{context.aws_request_id}", "w") as fh:
        fh.write(json.dumps(event))
    return {"item": event["item"], "square": event["item"] ** 2}


@app.function(retries=0)
def total(batch, context):
    return {"sum": sum(int(x["Size"]) for x in batch["Items"]), "tag": batch["BatchInput"]["tag"]}


def _fan(execution_type: str, **extra):
    state = {
        "Type": "Map",
        "ItemsPath": "$.items",
        "MaxConcurrency": 6,
        "ItemSelector": {
            "item.$": "$$.Map.Item.Value",
            "sleep.$": "$.sleep",
            "marks.$": "$.marks",
            "gate.$": "$.gate",
        },
        "ItemProcessor": {
            "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": execution_type},
            "StartAt": "Record",
            "States": {
                "Record": {"Type": "Task", "Resource": "headrace:function:record", "Next": "Kept"},
                "Kept": {"Type": "Pass", "End": True},
            },
        },
        "ResultPath": "$.results",
        "End": True,
    }
    state.update(extra)
    return {"StartAt": "Fan", "States": {"Fan": state}}


app.state_machine("standard", _fan("STANDARD"))
app.state_machine("express", _fan("EXPRESS"))
app.state_machine("tolerant", _fan("STANDARD", ToleratedFailurePercentage=30))
app.state_machine("strict", _fan("STANDARD", ToleratedFailureCount=1))

app.state_machine(
    "inventory",
    {
        "StartAt": "Sum",
        "States": {
            "Sum": {
                "Type": "Map",
                "Label": "Sums",
                "ItemReader": {
                    "Resource": "arn:aws:states:::s3:getObject",
                    "ReaderConfig": {"InputType": "MANIFEST", "MaxItemsPath": "$.most"},
                    "Parameters": {"Bucket": "inventory", "Key.$": "$.manifest"},
                },
                "ItemBatcher": {"MaxItemsPerBatch": 2, "BatchInput": {"tag.$": "$.tag"}},
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "EXPRESS"},
                    "StartAt": "Total",
                    "States": {
                        "Total": {
                            "Type": "Task",
                            "Resource": "headrace:function:total",
                            "End": True,
                        }
                    },
                },
                "ResultWriter": {
                    "Resource": "arn:aws:states:::s3:putObject",
                    "Parameters": {"Bucket": "results", "Prefix": "sums"},
                },
                "End": True,
            }
        },
    },
)

app.state_machine(
    "jsonata",
    {
        "QueryLanguage": "JSONata",
        "StartAt": "Fan",
        "States": {
            "Fan": {
                "Type": "Map",
                "Items": "{% $states.input.items %}",
                "ItemSelector": {
                    "item": "{% $states.context.Map.Item.Value %}",
                    "marks": "{% $states.input.marks %}",
                },
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                    "StartAt": "Record",
                    "States": {
                        "Record": {
                            "Type": "Task",
                            "Resource": "headrace:function:record",
                            "Output": "{% $states.result.square %}",
                            "End": True,
                        }
                    },
                },
                "Output": "{% $sum($states.result) %}",
                "End": True,
            }
        },
    },
)


def _keyed(execution_type: str):
    """A Distributed Map over a JSON object's key-value pairs, each child told its key, the
    negative scores failing (one tolerated), the results written as JSON Lines entries."""
    return {
        "StartAt": "Score",
        "States": {
            "Score": {
                "Type": "Map",
                "ItemsPath": "$.scores",
                "ToleratedFailureCount": 1,
                "ItemSelector": {
                    "name.$": "$$.Map.Item.Key",
                    "score.$": "$$.Map.Item.Value",
                    "source.$": "$$.Map.Item.Source",
                },
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": execution_type},
                    "StartAt": "Check",
                    "States": {
                        "Check": {
                            "Type": "Choice",
                            "Choices": [
                                {"Variable": "$.score", "NumericLessThan": 0, "Next": "Negative"}
                            ],
                            "Default": "Kept",
                        },
                        "Negative": {"Type": "Fail", "Error": "Negative", "Cause": "below 0"},
                        "Kept": {"Type": "Pass", "End": True},
                    },
                },
                "ResultWriter": {
                    "Resource": "arn:aws:states:::s3:putObject",
                    "Parameters": {"Bucket": "results", "Prefix": "scores"},
                    "WriterConfig": {"Transformation": "NONE", "OutputType": "JSONL"},
                },
                "End": True,
            }
        },
    }


app.state_machine("keyed", _keyed("STANDARD"))
app.state_machine("keyed_express", _keyed("EXPRESS"))
