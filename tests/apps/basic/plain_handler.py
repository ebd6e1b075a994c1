from urllib.parse import unquote_plus


def handler(event, context):
    record = event["Records"][0]
    key = unquote_plus(record["s3"]["object"]["key"])
    return {"key": key, "request": context.aws_request_id, "event": record["eventName"]}
