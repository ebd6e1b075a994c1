"""System 3: a state machine fans out band-composite batch jobs over cells, logs each cell in a
task-log table, and notifies on failure and at the end."""

import os
from pathlib import Path

from headrace import App

HERE = Path(__file__).resolve().parent
HOME = Path(os.environ.get("HEADRACE_HOME") or HERE / ".headrace")
NOTICES = Path(os.environ.get("COMPOSITE_NOTICES") or HOME / "notices")

app = App("composites")

app.job_definition(
    "band-composite",
    # "python" is the job's runtime's interpreter: here the project's environment (the
    # default); venv="/path/to/env" or image="..." would run it elsewhere
    command=["python", str(HERE / "composite_cell.py")],
    vcpus=1,
    memory=2048,
    timeout=600,
)

# Notifications land in files here; add {"kind": "webhook", "url": ...} or
# {"kind": "email", "host": ..., "to": [...]} subscriptions for real recipients.
app.topic("composite-failures", {"kind": "file", "path": str(NOTICES / "failures.jsonl")})
app.topic("composite-done", {"kind": "file", "path": str(NOTICES / "done.jsonl")})

app.state_machine("band-composite", HERE / "band_composite.asl.json")
