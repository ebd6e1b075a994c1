"""DynamoDB and SNS Task states, in process and through the coordinator."""

import json
import threading

from headrace.app import load_app
from headrace.config import load_settings
from headrace.ledger import Ledger
from headrace.server.coordinator import Coordinator
from headrace.tables import Tables
from headrace.workflows import api, execute
from tests.test_workflows_durable import APP_DIR

DDB = "arn:aws:states:::dynamodb:"


def task_log_machine(topic_arn: str) -> dict:
    return {
        "StartAt": "Create",
        "States": {
            "Create": {
                "Type": "Task",
                "Resource": DDB + "createTable",
                "Parameters": {
                    "TableName": "tasklog",
                    "KeySchema": [{"AttributeName": "cell", "KeyType": "HASH"}],
                    "AttributeDefinitions": [{"AttributeName": "cell", "AttributeType": "S"}],
                },
                "Catch": [
                    {
                        "ErrorEquals": ["DynamoDB.ResourceInUseException"],
                        "ResultPath": None,
                        "Next": "Put",
                    }
                ],
                "ResultPath": None,
                "Next": "Put",
            },
            "Put": {
                "Type": "Task",
                "Resource": DDB + "putItem",
                "Parameters": {
                    "TableName": "tasklog",
                    "Item": {"cell": {"S.$": "$.cell"}, "n": {"N": "1"}},
                    "ConditionExpression": "attribute_not_exists(cell)",
                },
                "Catch": [
                    {
                        "ErrorEquals": ["DynamoDB.ConditionalCheckFailedException"],
                        "ResultPath": "$.duplicate",
                        "Next": "Get",
                    }
                ],
                "ResultPath": None,
                "Next": "Get",
            },
            "Get": {
                "Type": "Task",
                "Resource": DDB + "getItem",
                "Parameters": {"TableName": "tasklog", "Key": {"cell": {"S.$": "$.cell"}}},
                "ResultSelector": {"n.$": "$.Item.n.N"},
                "ResultPath": "$.got",
                "Next": "Notify",
            },
            "Notify": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sns:publish",
                "Parameters": {
                    "TopicArn": topic_arn,
                    "Subject": "cell done",
                    "Message.$": "States.Format('cell {} logged', $.cell)",
                },
                "ResultPath": "$.sns",
                "End": True,
            },
        },
    }


def test_dynamodb_and_sns_tasks_in_process(tmp_path):
    ledger = f"sqlite:///{tmp_path / 'l.db'}"
    topics = {"done": [{"kind": "file", "path": str(tmp_path / "done.jsonl")}]}
    arn = "arn:aws:sns:us-east-1:123456789012:done"  # the ARN the envelope must carry
    machine = task_log_machine(arn)
    first = execute(machine, {"cell": "c1"}, ledger=ledger, topics=topics)
    assert first.status == "SUCCEEDED", (first.error, first.cause)
    assert first.output["got"] == {"n": "1"} and "MessageId" in first.output["sns"]
    second = execute(machine, {"cell": "c1"}, ledger=ledger, topics=topics)
    assert second.status == "SUCCEEDED"
    assert second.output["duplicate"]["Error"] == "DynamoDB.ConditionalCheckFailedException"
    lines = [json.loads(x) for x in (tmp_path / "done.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and "cell c1 logged" in json.dumps(lines[0])
    assert [line["TopicArn"] for line in lines] == [arn, arn]
    item = Tables(Ledger(ledger)).get_item("tasklog", {"cell": "c1"})
    assert item["n"] == 1


def test_dynamodb_and_sns_tasks_through_the_coordinator(tmp_path):
    settings = load_settings(APP_DIR, home=str(tmp_path / "home"), poll_interval=0.2, workers=2)
    app = load_app(settings)
    app.topic("done", {"kind": "file", "path": str(tmp_path / "done.jsonl")})
    arn = "arn:aws:sns:eu-west-1:210987654321:done"
    app.state_machine("tasklog", task_log_machine(arn))
    coordinator = Coordinator(settings, app)
    thread = threading.Thread(target=coordinator.run, kwargs={"drain_timeout": 5})
    thread.start()
    try:
        assert coordinator.ready.wait(30)
        ledger = Ledger(settings.ledger_url)
        arns = [api.start_execution(ledger, app, "tasklog", {"cell": c}) for c in ("a", "b", "a")]
        rows = [api.wait_for(ledger, arn, timeout=60) for arn in arns]
        assert [r["status"] for r in rows] == ["SUCCEEDED"] * 3, rows
        duplicates = [r for r in rows if "duplicate" in r["output"]]
        assert len(duplicates) == 1
        lines = (tmp_path / "done.jsonl").read_text().splitlines()
        assert [json.loads(line)["TopicArn"] for line in lines] == [arn] * 3
        scan = Tables(ledger).scan("tasklog")
        assert sorted(i["cell"] for i in scan["Items"]) == ["a", "b"]
        ledger.close()
    finally:
        coordinator.stop()
        thread.join(30)
        app.state_machines.pop("tasklog", None)
        app.topics.pop("done", None)
