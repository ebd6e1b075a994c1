"""Running a handler once in this process with an event, as `sam local invoke` does."""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from headrace.executors.calls import resolve_target
from headrace.functions.context import Context
from headrace.functions.spec import FunctionSpec


def invoke_locally(
    spec: FunctionSpec, event: Any, *, storage_url: str, sys_path: list[str] | None = None
) -> Any:
    """`spec`'s handler called with `event` and a Lambda context; what it returns, checked to
    be JSON. Exceptions propagate: the caller shows them."""
    handler = resolve_target(spec.handler, sys_path)
    request_id = str(uuid.uuid4())
    with tempfile.TemporaryDirectory(prefix="headrace-invoke-") as tmp:
        context = Context(
            function_name=spec.name,
            function_version=spec.version,
            invoked_function_arn=spec.arn,
            memory_limit_in_mb=spec.memory,
            aws_request_id=request_id,
            log_stream_name=f"local/{request_id[:8]}",
            deadline=time.time() + spec.timeout,
            tmp_root=Path(tmp),
            tmp_size_mb=spec.tmp_size,
            storage_url=storage_url,
        )
        try:
            result = handler(event, context)
        finally:
            context.cleanup()
    json.dumps(result)  # a value a Lambda could not return fails here, as it would there
    return result
