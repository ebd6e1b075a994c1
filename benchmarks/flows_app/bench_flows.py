"""State machines for the workflow benchmarks."""

from headrace import App

app = App("bench_flows")


@app.function(retries=0)
def inc(event, context):
    return event + 1


def pass_chain(n: int) -> dict:
    states = {
        f"S{i}": {"Type": "Pass", "Result": i, "ResultPath": "$.last", "Next": f"S{i + 1}"}
        for i in range(n - 1)
    }
    states[f"S{n - 1}"] = {"Type": "Pass", "End": True}
    return {"StartAt": "S0", "States": states}


def fan_out(inner: dict) -> dict:
    return {
        "StartAt": "Fan",
        "States": {
            "Fan": {
                "Type": "Map",
                "ItemsPath": "$.items",
                # 10,000 iterations write 40,000 events: past an execution's history quota
                # (25,000) inline; DISTRIBUTED iterations have histories of their own, as on AWS
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                    "StartAt": "Inner",
                    "States": {"Inner": inner},
                },
                "End": True,
            }
        },
    }


app.state_machine("chain", pass_chain(100))
app.state_machine("map_pass", fan_out({"Type": "Pass", "End": True}))
app.state_machine(
    "map_task", fan_out({"Type": "Task", "Resource": "headrace:function:inc", "End": True})
)


def jsonata_chain(n: int) -> dict:
    """The JSONata counterpart of pass_chain: Pass states with Output, every other state a
    Choice with a Condition."""
    states: dict = {}
    for i in range(n - 1):
        if i % 2:
            states[f"S{i}"] = {
                "Type": "Choice",
                "Choices": [{"Condition": "{% $states.input.last >= 0 %}", "Next": f"S{i + 1}"}],
                "Default": f"S{i + 1}",
            }
        else:
            states[f"S{i}"] = {
                "Type": "Pass",
                "Output": {"last": i, "keys": "{% $count($keys($states.input)) %}"},
                "Next": f"S{i + 1}",
            }
    states[f"S{n - 1}"] = {"Type": "Pass", "End": True}
    return {"QueryLanguage": "JSONata", "StartAt": "S0", "States": states}


app.state_machine("chain_jsonata", jsonata_chain(100))
