"""`headrace serve`, `headrace generate-event` and `headrace invoke --event`: HTTP routes to
functions, and running one event here as `sam local invoke` does."""

from __future__ import annotations

import json
import mimetypes
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from headrace import cli_common
from headrace.addresses import is_loopback

console = Console()
err = Console(stderr=True)

generate_app = typer.Typer(
    help="Write sample events (API Gateway requests, S3 notifications) as JSON.",
    no_args_is_help=True,
)


def register(root: typer.Typer) -> None:
    root.add_typer(generate_app, name="generate-event")
    root.command("serve")(serve)


def _read_event(path: Path) -> Any:
    text = sys.stdin.read() if str(path) == "-" else None
    if text is None:
        if not path.is_file():
            raise typer.BadParameter(f"--event {path}: no such file")
        text = path.read_text(encoding="utf-8")
    return cli_common.json_option(text, f"--event {path}")


def invoke_here(spec: Any, event_file: Path, settings: Any, *, routes: Any = ()) -> None:
    """Run `spec`'s handler once in this process; print its result, or Lambda's error JSON
    (errorMessage, errorType, stackTrace) and exit 1. When a route binds the function to a
    model, the handler sees the model's environment as a replica of `headrace serve` would."""
    from headrace.serving.local_invoke import invoke_locally, route_shape
    from headrace.serving.server import ModelBinding

    event = _read_event(event_file)
    route = route_shape(spec.name, routes)

    def registry():  # type: ignore[no-untyped-def]
        from headrace.models import ModelRegistry

        return ModelRegistry.from_settings(settings)

    binding = ModelBinding([r for r in routes if r.function == spec.name], registry)
    if binding.ref:
        environment = binding.generation(binding.target())
        os.environ.update(environment)  # before the handler's module is imported
        err.print(f"model {environment['HEADRACE_MODEL']}", markup=False)
    try:
        result = invoke_locally(
            spec,
            event,
            storage_url=settings.storage_url,
            sys_path=[str(settings.project_dir)],
            route=route,
        )
    except Exception as exc:
        frames = traceback.format_tb(exc.__traceback__)
        sys.stdout.write(
            json.dumps(
                {
                    "errorMessage": str(exc),
                    "errorType": type(exc).__name__,
                    "stackTrace": [f.rstrip() for f in frames[1:]],
                }
            )
            + "\n"
        )
        raise typer.Exit(1) from None
    sys.stdout.write(json.dumps(result) + "\n")


# -- generate-event ------------------------------------------------------------------------------


def _write(event: Any, output: Path | None) -> None:
    text = json.dumps(event, indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(output)
    err.print(f"wrote {output}", markup=False)


Output = Annotated[Path | None, typer.Option("--output", "-o", help="Write here, not stdout.")]


_HTTP_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token: a method


def _file_type(path: Path, data: bytes) -> str:
    """The Content-Type of a body file: from its name, else JSON or text if it decodes as
    UTF-8, else application/octet-stream (a binary body is base64-encoded in the event)."""
    guessed, _ = mimetypes.guess_type(path.name)
    if guessed:
        return guessed
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return "application/octet-stream"
    try:
        json.loads(text)
    except ValueError:
        return "text/plain; charset=utf-8"
    return "application/json"


@generate_app.command("apigateway")
def generate_apigateway(
    method: Annotated[str, typer.Option(help="HTTP method.")] = "POST",
    path: Annotated[str, typer.Option(help="Request path, with a query string if any.")] = "/",
    body: Annotated[str | None, typer.Option(help="The body, as text.")] = None,
    body_file: Annotated[
        Path | None,
        typer.Option(
            help="The body from a file; Content-Type from its name or content (a binary body "
            "is base64-encoded)."
        ),
    ] = None,
    content_type: Annotated[str | None, typer.Option(help="Content-Type header.")] = None,
    header: Annotated[list[str] | None, typer.Option(help="NAME:VALUE, repeatable.")] = None,
    resource: Annotated[
        str | None, typer.Option(help="The route's path, e.g. /items/{id}.")
    ] = None,
    http_api: Annotated[
        bool, typer.Option("--http-api", help="An HTTP API payload 2.0 event, not REST v1.")
    ] = False,
    output: Output = None,
) -> None:
    """An API Gateway proxy event, like `sam local generate-event apigateway aws-proxy`."""
    from headrace.serving.routes import RouteSpec
    from headrace.serving.sample_events import apigateway_event

    if not _HTTP_TOKEN.fullmatch(method):
        raise typer.BadParameter(
            f"--method {method!r}: not an HTTP method (letters, digits and !#$%&'*+-.^_`|~, "
            "no spaces); e.g. GET or POST"
        )
    if not path.startswith("/"):
        raise typer.BadParameter(f"--path {path!r}: a request path starts with '/', e.g. /{path}")
    if body is not None and body_file is not None:
        raise typer.BadParameter("give --body or --body-file, not both")
    data = body.encode() if body is not None else b""
    if body_file is not None:
        if not body_file.is_file():
            raise typer.BadParameter(f"--body-file {body_file}: no such file")
        data = body_file.read_bytes()
        if content_type is None:
            content_type = _file_type(body_file, data)
    if content_type is None and data:
        content_type = "application/json"
    headers = []
    for item in header or []:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise typer.BadParameter(f"--header {item!r}: write NAME:VALUE")
        headers.append((name.strip(), value.strip()))
    params: dict[str, str] = {}
    if resource:
        route = RouteSpec(method.upper(), resource, "-")
        found = route.match(method.upper(), [p for p in path.split("?")[0].split("/") if p])
        if found is None:
            raise typer.BadParameter(f"--path {path} does not fit --resource {resource}")
        params = found
    event = apigateway_event(
        method=method,
        path=path,
        body=data,
        content_type=content_type,
        headers=headers,
        resource=resource,
        params=params,
        http_api=http_api,
    )
    _write(event, output)


@generate_app.command("s3")
def generate_s3(
    bucket: Annotated[str, typer.Option(help="Bucket name.")] = "example-bucket",
    key: Annotated[str, typer.Option(help="Object key.")] = "test/key",
    output: Output = None,
) -> None:
    """An S3 ObjectCreated:Put notification, like `sam local generate-event s3 put`."""
    from headrace.serving.sample_events import s3_put_event

    _write(s3_put_event(bucket, key), output)


# -- serve --------------------------------------------------------------------------------------


def serve(
    host: Annotated[
        str, typer.Option(help="Address to listen on; any but loopback needs HEADRACE_TOKEN.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free one).")] = 8000,
    replicas: Annotated[int, typer.Option(min=1, help="Replica processes.")] = 2,
    min_replicas: Annotated[
        int | None,
        typer.Option(
            min=1, help="Fewest replica processes when autoscaling (default: no autoscaling)."
        ),
    ] = None,
    max_replicas: Annotated[
        int | None, typer.Option(min=1, help="Most replica processes when autoscaling.")
    ] = None,
    spare_replicas: Annotated[
        int,
        typer.Option(
            min=0,
            help="Warm replicas kept started but not serving: one takes a crashed replica's "
            "place at once.",
        ),
    ] = 0,
    scale_up_at: Annotated[
        float, typer.Option(min=1, help="In-flight requests per replica that add one.")
    ] = 8.0,
    scale_down_after: Annotated[
        float,
        typer.Option(
            min=0.1, help="Seconds under one in-flight request per replica that remove one."
        ),
    ] = 30.0,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds per request (default: the function's timeout).")
    ] = None,
    max_body: Annotated[int, typer.Option(min=1, help="Largest request body, bytes.")] = 6
    * 1024
    * 1024,
    max_header: Annotated[
        int, typer.Option(min=1024, help="Largest request line + headers, bytes; more get 431.")
    ] = 64 * 1024,
    read_timeout: Annotated[
        float,
        typer.Option(help="Seconds for a request to arrive whole once begun; then 408, closed."),
    ] = 30.0,
    max_concurrency: Annotated[
        int, typer.Option(min=1, help="Requests in flight; more get 503 with Retry-After.")
    ] = 256,
    start_timeout: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Seconds a replica may take to import its handlers and load its model; a "
            "new model version slower than that is rolled back.",
        ),
    ] = 120.0,
    drain_timeout: Annotated[
        float, typer.Option(help="Seconds to finish requests on SIGTERM.")
    ] = 30.0,
    access_log: Annotated[bool, typer.Option(help="One line per request on stderr.")] = True,
    serving: Annotated[
        str | None,
        typer.Option(
            help='Replicas: "local" processes, or a Ray Serve deployment: "ray" (a local Ray), '
            '"auto" or "ray://HOST:10001" (default: the serving setting).'
        ),
    ] = None,
) -> None:
    """Serve the app's HTTP routes (app.http) from replica processes; SIGTERM drains."""
    import logging

    from headrace.app import load_app
    from headrace.errors import HeadraceError
    from headrace.server.metrics import check_token
    from headrace.serving.pool import PoolOptions
    from headrace.serving.server import ModelBinding, ServeOptions, replica_config, run

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    settings = cli_common.settings()
    application = load_app(settings)
    if not application.routes:
        raise typer.BadParameter(
            "the app declares no HTTP routes: add one, e.g. "
            'app.http("POST /classify_digit", "inference")'
        )
    try:
        token = check_token(os.environ.get("HEADRACE_TOKEN", ""), required=not is_loopback(host))
    except HeadraceError as exc:
        raise typer.BadParameter(
            f"--host {host} listens beyond this machine and HEADRACE_TOKEN {exc.reason}: "
            f"{exc.fix}, or serve on 127.0.0.1"
        ) from None
    functions = application.functions
    per_request = timeout or max(functions[r.function].timeout for r in application.routes)
    pool = PoolOptions(
        replicas=replicas,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        scale_up_at=scale_up_at,
        spares=spare_replicas,
        scale_down_after=scale_down_after,
        timeout=per_request,
        start_timeout=start_timeout,
    )
    options = ServeOptions(
        host=host,
        timeout=timeout,
        port=port,
        token=token,
        max_body=max_body,
        max_header=max_header,
        read_timeout=read_timeout,
        max_concurrency=max_concurrency,
        drain_timeout=drain_timeout,
        access_log=sys.stderr if access_log else None,
        pool=pool,
        serving=serving or settings.serving,
    )
    config = replica_config(
        application.routes, functions, [str(settings.project_dir)], settings.storage_url
    )

    def registry():  # type: ignore[no-untyped-def]
        from headrace.models import ModelRegistry

        return ModelRegistry.from_settings(settings)

    binding = ModelBinding(application.routes, registry)
    # soft_wrap: a log line stays one line (a long URL or route list is not cut at 80 columns)
    announce = lambda t: err.print(t, markup=False, soft_wrap=True)  # noqa: E731
    run(application.routes, config, binding, options, announce=announce)
