"""The app of the kill -9 campaign: a conversion that leaves a mark when it starts and when it
has written its output, so the campaign can compare what ran with what the ledger says."""

import hashlib
import os
import time
from pathlib import Path
from urllib.parse import unquote_plus

from headrace import App

app = App("kill9")
MARKS = Path(os.environ.get("KILL9_MARKS", "marks"))


def _coordinator_pid() -> int:
    """The worker's parent is the fork server; the fork server's parent is the coordinator."""
    with open(f"/proc/{os.getppid()}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


def _mark(key: str, context, what: str) -> None:
    worker = os.environ.get("HEADRACE_WORKER", "?")
    name = f"{key}--{worker}--{context.attempt}--{_coordinator_pid()}.{what}"
    (MARKS / name).write_text(f"{time.time()}\n")


@app.on_object_created(bucket="landing")
@app.function(timeout=3, retries=2, backoff=0.2)
def convert(event, context):
    """Hash the object into `converted`. One object in 40 takes 2 s, so kills often land
    while a long handler runs; the rest take 20-150 ms."""
    record = event["Records"][0]["s3"]
    key = unquote_plus(record["object"]["key"])
    _mark(key, context, "start")
    data = context.storage.bucket("landing").get(key)
    digest = hashlib.sha256(data).hexdigest()
    n = int(digest[:8], 16)
    time.sleep(2.0 if n % 40 == 0 else 0.02 + (n % 130) / 1000)
    (context.tmp_dir / "work.bin").write_bytes(data)  # scratch, as a real conversion uses
    context.storage.bucket("converted").put(key, digest.encode())
    _mark(key, context, "done")
    return {"key": key, "sha256": digest}
