"""Running a handler once in this process with an event, as `sam local invoke` does."""

from __future__ import annotations

import base64
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from headrace.errors import AppError
from headrace.executors.calls import resolve_target
from headrace.functions.context import Context
from headrace.functions.spec import FunctionSpec
from headrace.serving.routes import RouteSpec


def route_shape(name: str, routes: Any) -> RouteSpec | None:
    """The route whose way of calling function `name` an invoke imitates (payload and
    batching); None when no route binds it. Routes that call it in different ways are refused:
    the event could mean either."""
    bound = [r for r in routes if r.function == name]
    shapes = {(r.payload, r.max_batch_size > 1) for r in bound}
    if len(shapes) > 1:
        raise AppError(
            f"function {name!r}",
            f"its routes call it in different ways ({', '.join(r.key for r in bound)})",
            "bind it to routes of one payload format and batching, or invoke a copy of it",
        )
    return bound[0] if bound else None


def _json_body(event: Any) -> Any:
    """What a payload="json" route hands its handler: an API Gateway event's body, parsed; any
    other event is taken as that body already."""
    if not (isinstance(event, dict) and "body" in event and "requestContext" in event):
        return event
    body = event["body"]
    if body is None:
        return None
    if event.get("isBase64Encoded"):
        body = base64.b64decode(body)
    return json.loads(body)


def invoke_locally(
    spec: FunctionSpec,
    event: Any,
    *,
    storage_url: str,
    sys_path: list[str] | None = None,
    route: RouteSpec | None = None,
) -> Any:
    """`spec`'s handler called with `event` and a Lambda context; what it returns, checked to
    be JSON. Exceptions propagate: the caller shows them. With the `route` that binds it, the
    handler is called as that route calls it: a payload="json" route's handler gets the
    event's body, a batched one (max_batch_size > 1) a list of one, its one answer unwrapped."""
    handler = resolve_target(spec.handler, sys_path)
    if route is not None and route.payload == "json":
        event = _json_body(event)
    batched = route is not None and route.max_batch_size > 1
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
            result = handler([event] if batched else event, context)
        finally:
            context.cleanup()
    if batched:
        if not isinstance(result, list | tuple) or len(result) != 1:
            raise ValueError(
                f"the batched handler of {spec.name!r} returned {result!r:.60} for a batch of "
                "1; it must return a list with one answer per event"
            )
        result = result[0]
    json.dumps(result)  # a value a Lambda could not return fails here, as it would there
    return result
