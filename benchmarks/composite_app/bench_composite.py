"""The band composite fan-out as a state machine: a Map over cells, a function per cell."""

from headrace import App
from headrace.formats.raster import composite

app = App("bench_composite")


@app.function(retries=0, timeout=300, memory=2048)
def composite_cell(event, context):
    report = composite(event["bands"], event["dst"])
    return {"dst": event["dst"], "bytes": report.bytes_out}


app.state_machine(
    "composites",
    {
        "StartAt": "Cells",
        "States": {
            "Cells": {
                "Type": "Map",
                "ItemsPath": "$.cells",
                "MaxConcurrency": 2,
                "ItemProcessor": {
                    "StartAt": "Composite",
                    "States": {
                        "Composite": {
                            "Type": "Task",
                            "Resource": "headrace:function:composite_cell",
                            "End": True,
                        }
                    },
                },
                "End": True,
            }
        },
    },
)
