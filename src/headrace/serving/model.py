"""The model version a replica serves: chosen by the front from the route's alias, handed to
the replica in its environment before the handler module is imported."""

from __future__ import annotations

import os
from typing import Any

from headrace.errors import ConfigError
from headrace.models import artifacts

_loaded: dict[str, Any] = {}


def current_model() -> Any:
    """The model this replica serves (the object for joblib and cloudpickle artifacts, a local
    path otherwise), loaded once. Handlers bound with `model="NAME@ALIAS"` call it at import."""
    path = os.environ.get("HEADRACE_MODEL_PATH")
    if not path:
        raise ConfigError(
            "current_model()",
            "this process serves no model (HEADRACE_MODEL_PATH is not set)",
            'bind the route to one: app.http("POST /x", "fn", model="NAME@ALIAS")',
        )
    if path not in _loaded:
        from pathlib import Path

        _loaded[path] = artifacts.load_file(Path(path), os.environ["HEADRACE_MODEL_FORMAT"])
    return _loaded[path]


def current_version() -> str | None:
    """ "NAME:VERSION" of the model this replica serves."""
    return os.environ.get("HEADRACE_MODEL")
