"""`App`: the registry a user builds with decorators, loaded from `headrace.toml`."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from headrace.config import Settings
from headrace.errors import AppError, ConfigError
from headrace.functions.spec import FunctionSpec
from headrace.storage.keys import validate_bucket_name

F = TypeVar("F", bound=Callable[..., Any])
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")


@dataclass(frozen=True)
class ObjectTrigger:
    """Fire `function` for every object created in `bucket` whose key matches."""

    function: str
    bucket: str
    prefix: str = ""
    suffix: tuple[str, ...] = ()

    def matches(self, bucket: str, key: str) -> bool:
        if bucket != self.bucket or not key.startswith(self.prefix):
            return False
        return not self.suffix or key.lower().endswith(self.suffix)


class App:
    def __init__(self, name: str = "headrace") -> None:
        self.name = name
        self.functions: dict[str, FunctionSpec] = {}
        self.triggers: list[ObjectTrigger] = []
        self.state_machines: dict[str, dict[str, Any]] = {}
        self.topics: dict[str, list[dict[str, Any]]] = {}
        self.job_definitions: dict[str, Any] = {}  # name -> headrace.jobs.JobDefinition
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
        Options: name, timeout, memory, tmp_size, retries, backoff, max_backoff, concurrency.
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
    ) -> Any:
        """Run a function for every object created in `bucket` (optionally filtered by key).

        Use as a decorator above `@app.function`, or call with a registered function's name.
        Files copied into the bucket folder by any tool count, not only headrace's own puts.
        """
        validate_bucket_name(bucket)
        suffixes = (suffix,) if isinstance(suffix, str) else tuple(suffix)
        suffixes = tuple(s.lower() for s in suffixes if s)

        def bind(target: Any) -> Any:
            if isinstance(target, str):
                name = self.spec(target).name
            else:
                if id(target) not in self._names:
                    self.function(target)
                name = self._names[id(target)]
            self.triggers.append(ObjectTrigger(name, bucket, prefix, suffixes))
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

    def job_definition(self, name: str, command: list[str], **options: Any) -> Any:
        """A batch job definition (AWS Batch style): `command`, `environment`, `vcpus`,
        `memory` (MiB), `timeout` (s), `retry_attempts`, `working_dir`, `parameters`. State
        machines run it with `arn:aws:states:::batch:submitJob.sync`; `headrace jobs submit`
        runs it from the command line."""
        from headrace.jobs import JobDefinition

        definition = JobDefinition(name=name, command=list(command), **options)
        self.job_definitions[name] = definition
        return definition

    def register_services(self) -> None:
        """The built-in functions that run DynamoDB, SNS and Batch tasks of state machines."""
        from headrace.workflows.services import HANDLERS

        for name, handler in HANDLERS.items():
            if name not in self.functions:
                self.functions[name] = FunctionSpec(
                    name=name, handler=handler, timeout=24 * 3600, retries=0, memory=4096
                )

    def check_state_machines(self) -> None:
        from headrace.workflows.asl import DefinitionError, Problem
        from headrace.workflows.integrations import unknown_resources

        for name, raw in self.state_machines.items():
            problems = unknown_resources(raw["States"], set(self.functions))
            if problems:
                raise DefinitionError([Problem("$.States", None, f"{name}: {p}") for p in problems])

    def routes(self, bucket: str, key: str) -> list[str]:
        """Names of the functions an object-created event in bucket/key triggers."""
        seen: list[str] = []
        for trigger in self.triggers:
            if trigger.matches(bucket, key) and trigger.function not in seen:
                seen.append(trigger.function)
        return seen

    @property
    def buckets(self) -> list[str]:
        return sorted({t.bucket for t in self.triggers})


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
    if project not in sys.path:
        sys.path.insert(0, project)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"app module {module_name!r}",
            f"cannot be imported from {project}: {exc}",
            "check the app setting in headrace.toml and that the module exists",
        ) from exc
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise ConfigError(
            f"app {ref!r}",
            f"{module_name}.{attr} is {type(app).__name__}, not a headrace App",
            "point app at the App instance",
        )
    return app
