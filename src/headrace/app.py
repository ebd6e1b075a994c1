"""`App`: the registry a user builds with decorators, loaded from `headrace.toml`."""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from headrace.config import Settings
from headrace.errors import AppError, ConfigError, HeadraceError
from headrace.events.bus import Rule, object_created_rule
from headrace.functions.spec import FunctionSpec
from headrace.serving.routes import RouteSpec, parse_route
from headrace.storage.keys import validate_bucket_name

if TYPE_CHECKING:  # the registry's types only: importing streams or features costs seconds
    from headrace.features.group import FeatureGroup
    from headrace.jobs.definition import JobDefinition
    from headrace.streams.pipeline import Pipeline
    from headrace.streams.specs import ScheduleSpec, SourceSpec, StreamSpec

F = TypeVar("F", bound=Callable[..., Any])
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")


class App:
    """The registry: what a project declares, by name. Nothing below it imports it; the
    coordinator hands each part what it needs (the workflow driver gets `functions`)."""

    def __init__(self, name: str = "headrace") -> None:
        self.name = name
        self.functions: dict[str, FunctionSpec] = {}
        self.state_machines: dict[str, dict[str, Any]] = {}  # name -> ASL definition
        self.topics: dict[str, list[dict[str, Any]]] = {}  # name -> subscription dicts
        self.job_definitions: dict[str, JobDefinition] = {}
        self.streams: dict[str, StreamSpec] = {}
        self._derived_streams: set[str] = set()  # added by check_streams, not declared
        self.rules: list[Rule] = []  # bus rules; object triggers are rules too
        self.sources: dict[str, SourceSpec] = {}
        self.pipelines: dict[str, Pipeline] = {}
        self.feature_groups: dict[str, FeatureGroup] = {}
        self.schedules: dict[str, ScheduleSpec] = {}
        self.routes: list[RouteSpec] = []  # HTTP routes `headrace serve` answers
        self.outputs: dict[str, set[str]] = {}  # function -> buckets its triggers say it writes
        self._names: dict[int, str] = {}

    # -- functions ----------------------------------------------------------------------------

    @overload
    def function(self, handler: F, /) -> F: ...
    @overload
    def function(self, handler: str, /, **options: Any) -> FunctionSpec: ...
    @overload
    def function(self, handler: None = None, /, **options: Any) -> Callable[[F], F]: ...

    def function(self, handler: Any = None, /, **options: Any) -> Any:
        """Register a function.

        As a decorator (`@app.function` or `@app.function(timeout=30, retries=3)`), or by
        reference to a Lambda-style handler that need not import headrace:
        `app.function("pkg.module.handler", name="convert")`.
        Options: name, timeout, memory, tmp_size, retries, backoff, max_backoff, concurrency,
        environment (variables set for the handler, as Lambda's), requirements (pip
        specifiers installed for this function when the coordinator starts, as a layer).
        """
        if isinstance(handler, str):
            name = options.pop("name", None) or handler.replace(":", ".").rsplit(".", 1)[-1]
            return self._add(FunctionSpec(name=name, handler=handler, **options))
        if handler is None:
            return lambda fn: self.function(fn, **options)
        fn = handler
        if fn.__module__ == "__main__":
            raise AppError(
                f"function {fn.__qualname__!r}",
                "is defined in the __main__ script, which workers cannot import",
                "move it into a module and point headrace.toml's app at that module",
            )
        name = options.pop("name", None) or fn.__name__
        self._add(FunctionSpec(name=name, handler=f"{fn.__module__}:{fn.__qualname__}", **options))
        self._names[id(fn)] = name
        return fn

    def _add(self, spec: FunctionSpec) -> FunctionSpec:
        if spec.name in self.functions and self.functions[spec.name].handler != spec.handler:
            raise AppError(
                f"function {spec.name!r}",
                f"is registered twice ({self.functions[spec.name].handler} and {spec.handler})",
                "give one of them another name=",
            )
        self.functions[spec.name] = spec
        return spec

    def spec(self, name: str) -> FunctionSpec:
        try:
            return self.functions[name]
        except KeyError:
            known = ", ".join(sorted(self.functions)) or "none"
            raise AppError(
                f"function {name!r}", f"is not registered (known: {known})", "check the name"
            ) from None

    # -- triggers -----------------------------------------------------------------------------

    def on_object_created(
        self,
        function: str | Callable[..., Any] | None = None,
        *,
        bucket: str,
        prefix: str = "",
        suffix: str | tuple[str, ...] | list[str] = (),
        output_bucket: str | None = None,
    ) -> Any:
        """Run a function for every object created in `bucket` (optionally filtered by key).

        Use as a decorator above `@app.function`, or call with a registered function's name.
        Files copied into the bucket folder by any tool count, not only headrace's own puts.
        `output_bucket`: where the function writes; `headrace invocations --check-outputs`
        then flags invocations that succeeded without writing there.
        """
        validate_bucket_name(bucket)
        if output_bucket is not None:
            validate_bucket_name(output_bucket)
        suffixes = (suffix,) if isinstance(suffix, str) else tuple(suffix)
        suffixes = tuple(s.lower() for s in suffixes if s)

        def bind(target: Any) -> Any:
            if isinstance(target, str):
                name = self.spec(target).name
            else:
                if id(target) not in self._names:
                    self.function(target)
                name = self._names[id(target)]
            rule = object_created_rule(name, bucket=bucket, prefix=prefix, suffixes=suffixes)
            rule.name = f"{rule.name[:75]}-{len(self.rules) + 1}"
            self.rules.append(rule)
            if output_bucket is not None:
                self.outputs.setdefault(name, set()).add(output_bucket)
            return target

        if function is None:
            return bind
        return bind(function)

    # -- HTTP routes ----------------------------------------------------------------------------

    def http(
        self, route: str, function: str | Callable[..., Any] | None = None, /, **options: Any
    ) -> Any:
        """Answer `route` ("POST /classify_digit", "GET /items/{id}", "ANY /{proxy+}") with a
        function, as an API Gateway Lambda proxy integration does.

        `app.http("POST /classify_digit", "inference")` binds a registered function (or a
        handler reference such as "app.lambda_handler"); as a decorator, `@app.http("POST /x")`
        registers the function below it too. Options: payload ("v1" REST proxy events, the
        default; "v2" HTTP API events; "json" the body alone), max_batch_size and max_wait_ms
        (the handler takes a list and returns a list), model ("NAME@ALIAS": replicas load that
        version and roll over when the alias moves), model_env, api_key, and replicas,
        min_replicas, max_replicas: the route gets replicas of its own, that many (scaled
        between the two bounds), instead of sharing the server's.
        """
        method, path = parse_route(route)

        def bind(target: Any) -> Any:
            if isinstance(target, str):
                if target in self.functions:
                    name = target
                elif "." in target or ":" in target:
                    name = self.function(target).name
                else:
                    name = self.spec(target).name  # raises, naming the known functions
            else:
                if id(target) not in self._names:
                    self.function(target)
                name = self._names[id(target)]
            spec = RouteSpec(method, path, name, **options)
            for other in self.routes:
                if other.method == spec.method and other.segments == spec.segments:
                    raise AppError(
                        f"route {spec.key}",
                        f"is bound twice (to {other.function!r} and {name!r})",
                        "remove one of them",
                    )
                if other.method == spec.method and other.shape == spec.shape:
                    raise AppError(
                        f"route {spec.key}",
                        f"matches the same requests as {other.key} (bound to "
                        f"{other.function!r}), so it could never be reached",
                        "use one parameter name for both, or tell them apart by a literal",
                    )
            self.routes.append(spec)
            return target

        if function is None:
            return bind
        return bind(function)

    # -- state machines -----------------------------------------------------------------------

    def state_machine(self, name: str, definition: Any) -> dict[str, Any]:
        """Register an Amazon States Language definition (JSON text, dict, or a file path).

        It is validated now, every problem reported at once; its Task resources are checked
        against the registered functions when the coordinator starts (`check_state_machines`).
        """
        from headrace.workflows.asl import load_definition, parse

        if not _NAME.match(name):
            raise AppError(
                f"state machine {name!r}",
                "names may hold only letters, digits, '-' and '_' (at most 80)",
                "rename it",
            )
        raw = load_definition(definition)
        parse(raw)
        self.state_machines[name] = raw
        return raw

    def topic(self, name: str, *subscriptions: dict[str, Any]) -> None:
        """A notification topic: `sns:publish` tasks and `headrace.notify` deliver to its
        subscriptions, e.g. `{"kind": "webhook", "url": …}`, `{"kind": "email", "host": …,
        "to": [...]}`, `{"kind": "file", "path": …}`."""
        from headrace.notify.subscriptions import subscription_from_dict

        for spec in subscriptions:
            subscription_from_dict(spec)  # fail now, not at the first message
        self.topics[name] = [dict(s) for s in subscriptions]

    def job_definition(self, name: str, command: list[str], **options: Any) -> JobDefinition:
        """A batch job definition (AWS Batch style): `command`, `environment`, `vcpus`,
        `memory` (MiB), `timeout` (s), `retry_attempts`, `working_dir`, `parameters`, and its
        runtime: the project's environment by default, `venv=` another virtualenv's folder, or
        `image=` a container image (docker or podman). State machines run it with
        `arn:aws:states:::batch:submitJob.sync`; `headrace jobs submit` runs it from the
        command line."""
        from headrace.jobs import JobDefinition

        definition = JobDefinition(name=name, command=list(command), **options)
        self.job_definitions[name] = definition
        return definition

    # -- streams, the bus and features ----------------------------------------------------------

    def stream(
        self,
        name: str,
        *,
        partitions: int = 1,
        key: str | None = None,
        retention_seconds: float | None = 7 * 86400,
        retention_bytes: int | None = None,
    ) -> StreamSpec:
        """Declare a stream log (embedded, Redis Streams or NATS JetStream per `streams`)."""
        from headrace.streams.log import check_stream_name
        from headrace.streams.specs import StreamSpec

        spec = StreamSpec(
            check_stream_name(name), partitions, key, retention_seconds, retention_bytes
        )
        self.streams[name] = spec
        return spec

    def rule(self, pattern: dict[str, Any] | str, *, target: str, name: str | None = None) -> Rule:
        """Route bus events matching an EventBridge `pattern` to `target`: "stream:NAME",
        "function:NAME" or "states:NAME"."""
        rule = Rule.create(name or f"rule-{len(self.rules) + 1}", pattern, target)
        if any(r.name == rule.name for r in self.rules):
            raise AppError(f"rule {rule.name!r}", "is defined twice", "give it another name")
        self.rules.append(rule)
        return rule

    def source(
        self,
        source: Any,
        *,
        event_source: str,
        detail_type: str,
        time_field: str | None = None,
        id_field: str | None = None,
    ) -> SourceSpec:
        """Poll `source` (see headrace.streams.sources) and publish each record to the bus."""
        from headrace.streams.specs import SourceSpec

        name = getattr(source, "name", None)
        if not name or not hasattr(source, "poll"):
            raise AppError(
                f"source {source!r}",
                "is not a source (needs a name and poll())",
                "use HttpPoller or ObjectSource from headrace.streams",
            )
        if name in self.sources:
            raise AppError(f"source {name!r}", "is registered twice", "give it another name")
        spec = SourceSpec(name, source, event_source, detail_type, time_field, id_field)
        self.sources[name] = spec
        return spec

    def pipeline(self, name: str, *, stream: str, **options: Any) -> Pipeline:
        """A stream pipeline reading `stream`: chain operators and sinks on what it returns."""
        from headrace.streams.pipeline import Pipeline

        if name in self.pipelines:
            raise AppError(f"pipeline {name!r}", "is defined twice", "give it another name")
        pipe = Pipeline(name, stream, **options)
        self.pipelines[name] = pipe
        return pipe

    def feature_group(self, group: FeatureGroup) -> FeatureGroup:
        """Register a headrace.features.FeatureGroup (pipelines write it with to_features)."""
        if group.name in self.feature_groups:
            raise AppError(f"feature group {group.name!r}", "is registered twice", "rename it")
        self.feature_groups[group.name] = group
        return group

    def schedule(
        self, name: str, *, every: float, function: str, payload: dict[str, Any] | None = None
    ) -> ScheduleSpec:
        """Invoke `function` every `every` seconds, once per period even across restarts."""
        from headrace.streams.specs import ScheduleSpec

        if not _NAME.match(name) or every <= 0:
            raise AppError(
                f"schedule {name!r}", "needs a valid name and every > 0", "e.g. every=3600"
            )
        spec = ScheduleSpec(name, float(every), function, dict(payload or {}))
        self.schedules[name] = spec
        return spec

    def compaction(self, group: str, *, every: float = 3600, **options: Any) -> ScheduleSpec:
        """Compact (and vacuum) a feature group's offline table on a schedule."""
        from headrace.features.jobs import COMPACT_FUNCTION

        return self.schedule(
            f"compact-{group}",
            every=every,
            function=COMPACT_FUNCTION,
            payload={"group": group, **options},
        )

    def _derive(self, stream: str, owner: str, what: str) -> None:
        """`owner` puts `what` in `stream`, a name made from its own: one the user declared
        too would mix two kinds of records in one stream."""
        if stream in self.streams and stream not in self._derived_streams:
            raise AppError(
                f"stream {stream!r}",
                f"is declared, but {owner} writes {what} to a stream of that name",
                f"rename the stream you declared, or rename the {owner.split()[0]}",
            )
        self._derived_streams.add(stream)

    def check_streams(self) -> None:
        """Every name a rule, pipeline or sink uses must be declared; late streams and the
        sources' error streams are added."""
        from headrace.streams.sinks import FeatureSink, FunctionSink, StreamSink

        self.register_services()  # schedules may target the built-in compaction function
        for pipe in self.pipelines.values():
            for late in pipe.late_streams:
                if late in pipe.derived_streams:
                    self._derive(late, f"pipeline {pipe.name!r}", "its late records")
                self.streams.setdefault(late, _late_stream(late))
        for source in self.sources.values():  # records a source could not deliver
            self._derive(
                source.errors_stream, f"source {source.name!r}", "the records it cannot deliver"
            )
            self.streams.setdefault(source.errors_stream, source.errors_stream_spec())
        for rule in self.rules:
            kind, target = rule.target.kind, rule.target.name
            known = {
                "stream": self.streams,
                "function": self.functions,
                "state_machine": self.state_machines,
            }[kind]
            if target not in known:
                raise AppError(
                    f"rule {rule.name!r}",
                    f"targets {kind} {target!r}, which is not registered",
                    f"register it (app.{'state_machine' if kind == 'state_machine' else kind})",
                )
        for pipe in self.pipelines.values():
            if pipe.stream not in self.streams:
                raise AppError(
                    f"pipeline {pipe.name!r}",
                    f"reads stream {pipe.stream!r}, which is not declared",
                    f"add app.stream({pipe.stream!r})",
                )
            for stage in pipe.stages:
                sink = stage.template
                if isinstance(sink, FeatureSink) and sink.group not in self.feature_groups:
                    raise AppError(
                        f"pipeline {pipe.name!r}",
                        f"writes feature group {sink.group!r}, which is not registered",
                        "add app.feature_group(FeatureGroup(...))",
                    )
                if isinstance(sink, FunctionSink) and sink.function not in self.functions:
                    raise AppError(
                        f"pipeline {pipe.name!r}",
                        f"invokes function {sink.function!r}, which is not registered",
                        "register it with @app.function",
                    )
                if isinstance(sink, StreamSink) and sink.stream not in self.streams:
                    raise AppError(
                        f"pipeline {pipe.name!r}",
                        f"writes stream {sink.stream!r}, which is not declared",
                        f"add app.stream({sink.stream!r})",
                    )
        for schedule in self.schedules.values():
            if schedule.function not in self.functions:
                raise AppError(
                    f"schedule {schedule.name!r}",
                    f"invokes function {schedule.function!r}, which is not registered",
                    "register it with @app.function",
                )

    def register_services(self) -> None:
        """The built-in functions that run DynamoDB, SNS and Batch tasks of state machines."""
        from headrace.workflows.services import HANDLERS

        handlers = dict(HANDLERS)
        if self.feature_groups:
            from headrace.features.jobs import COMPACT_FUNCTION, compact_handler

            handlers[COMPACT_FUNCTION] = compact_handler
        for name, handler in handlers.items():
            if name not in self.functions:
                self.functions[name] = FunctionSpec(
                    name=name, handler=handler, timeout=24 * 3600, retries=0, memory=4096
                )

    def check_state_machines(self) -> None:
        from headrace.workflows.asl import DefinitionError, Problem
        from headrace.workflows.integrations import unknown_resources

        for name, raw in self.state_machines.items():
            problems = unknown_resources(
                raw["States"], set(self.functions), known_topics=set(self.topics)
            )
            if problems:
                raise DefinitionError([Problem("$.States", None, f"{name}: {p}") for p in problems])

    @property
    def buckets(self) -> list[str]:
        """The buckets object triggers watch."""
        return sorted({bucket for rule in self.rules for bucket in rule.buckets})


def _late_stream(name: str) -> StreamSpec:
    from headrace.streams.specs import StreamSpec

    return StreamSpec(name, retention_seconds=30 * 86400)


def _where(exc: Exception, project: str) -> str:
    """'file:line: ' of the project's line that raised `exc` (for a SyntaxError, the line it
    is on), else of the innermost line."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}: "
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f.filename.startswith(project)] or frames
    return f"{ours[-1].filename}:{ours[-1].lineno}: " if ours else ""


def _forget_other_projects_module(module_name: str, project: str) -> None:
    """Drop a module of this name imported from another project in this process (tests, a
    notebook opening two projects): `pipeline` must be this project's `pipeline.py`."""
    top = module_name.split(".")[0]
    cached = sys.modules.get(top)
    where = getattr(cached, "__file__", None)
    if cached is None or where is None:
        return
    root = os.path.realpath(project)
    if os.path.realpath(where).startswith(root + os.sep):
        return
    ours = os.path.join(root, top)
    if not (os.path.exists(ours + ".py") or os.path.exists(os.path.join(ours, "__init__.py"))):
        return  # not this project's module (installed, say): the cached one is the one
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[name]


def load_app(settings: Settings) -> App:
    """Import the App named by the `app` setting ("module:attr"), with the project on sys.path."""
    ref = settings.app
    if not ref:
        return App()
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ConfigError(
            f"app setting {ref!r}",
            "is not of the form 'module:attr'",
            "write e.g. app = 'pipeline:app'",
        )
    project = str(settings.project_dir)
    _forget_other_projects_module(module_name, project)
    if sys.path[:1] != [project]:
        with contextlib.suppress(ValueError):
            sys.path.remove(project)
        sys.path.insert(0, project)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"app module {module_name!r}",
            f"cannot be imported from {project}: {exc}",
            "check the app setting in headrace.toml and that the module exists",
        ) from exc
    except HeadraceError:
        raise  # already names what is wrong and the fix
    except Exception as exc:  # a SyntaxError, or any exception the module raised at import
        raise ConfigError(
            f"app module {module_name!r}",
            f"failed to import: {_where(exc, project)}{type(exc).__name__}: {exc}",
            "fix that error in the module (or what it imports) and run the command again",
        ) from exc
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise ConfigError(
            f"app {ref!r}",
            f"{module_name}.{attr} is {type(app).__name__}, not a headrace App",
            "point app at the App instance",
        )
    return app
