"""What the registry records about a model besides its bytes: the framework and library versions
it was saved with, its input signature, metrics and tags."""

from __future__ import annotations

import math
import platform
import sys
import warnings
from collections.abc import Mapping
from functools import cache
from importlib import metadata as importlib_metadata
from typing import Any

from headrace.models.errors import InvalidModel

# Modules whose objects say nothing about a framework.
_NO_FRAMEWORK = {"builtins", "__main__", "collections", "functools", "types"}


class LibraryMismatch(UserWarning):
    """A model is loaded next to another version of a library than it was saved with."""


@cache
def _distributions() -> Mapping[str, list[str]]:
    return importlib_metadata.packages_distributions()


def _version_of(distribution: str) -> str | None:
    try:
        return importlib_metadata.version(distribution)
    except importlib_metadata.PackageNotFoundError:
        return None


def framework_of(model: Any) -> str | None:
    """The top-level package of the model's class (`sklearn`, `xgboost`, `torch`, ...)."""
    top = type(model).__module__.split(".")[0]
    return None if top in _NO_FRAMEWORK else top


def library_versions(framework: str | None, serializer: str | None) -> dict[str, str]:
    """Versions of Python, the framework's distributions, the serializer and numpy."""
    found = {"python": platform.python_version()}
    names: list[str] = []
    if framework:
        names += _distributions().get(framework, [])
    if serializer in ("joblib", "cloudpickle"):
        names.append(serializer)
    if "numpy" in sys.modules:
        names.append("numpy")
    for name in names:
        version = _version_of(name)
        if version is not None:
            found[name] = version
    return found


def warn_on_mismatch(ref: str, recorded: Mapping[str, str]) -> None:
    """Warn, naming each library, when those installed differ from the ones a model was saved
    with: pickles of one scikit-learn version may load in another and predict differently."""
    differ = []
    for name, version in recorded.items():
        if name == "python":
            continue
        installed = _version_of(name)
        if installed is not None and installed != version:
            differ.append(f"{name} {version} (installed: {installed})")
    if differ:
        warnings.warn(
            f"model {ref} was saved with {', '.join(differ)}; its predictions may differ here."
            " Install the recorded versions, or push the model again from this environment",
            LibraryMismatch,
            stacklevel=3,
        )


def signature_of(spec: Any, model: Any = None) -> dict[str, Any] | None:
    """{"inputs": [{"name", "type"}, ...]} from what the user gives: an example batch (pandas
    DataFrame, Arrow table or record batch), an Arrow schema, a {column: type} mapping, a list
    of column names, or a dict that already has "inputs". Without one, the feature names a
    scikit-learn estimator fitted on a DataFrame remembers."""
    if spec is None:
        names = getattr(model, "feature_names_in_", None) if model is not None else None
        if names is None:
            return None
        return {"inputs": [{"name": str(n), "type": None} for n in names]}
    if isinstance(spec, Mapping):
        if "inputs" in spec:
            inputs = spec["inputs"]
            if not isinstance(inputs, list) or not all(
                isinstance(c, Mapping) and isinstance(c.get("name"), str) for c in inputs
            ):
                raise InvalidModel(
                    "signature",
                    "its 'inputs' is not a list of {'name': ..., 'type': ...}",
                    "give inputs as [{'name': 'col', 'type': 'double'}, ...]",
                )
            return dict(spec)
        return {"inputs": [{"name": str(k), "type": str(v)} for k, v in spec.items()]}
    if isinstance(spec, (list, tuple)) and all(isinstance(n, str) for n in spec):
        return {"inputs": [{"name": n, "type": None} for n in spec]}
    schema = _arrow_schema(spec)
    if schema is None:
        raise InvalidModel(
            f"signature of type {type(spec).__qualname__}",
            "is not a batch, schema, mapping or list of column names",
            "pass an example DataFrame or Arrow table, a pyarrow schema, {column: type} or"
            " [column, ...]",
        )
    return {"inputs": [{"name": f.name, "type": str(f.type)} for f in schema]}


def _arrow_schema(spec: Any) -> Any:
    import pyarrow as pa

    if isinstance(spec, pa.Schema):
        return spec
    if isinstance(spec, (pa.Table, pa.RecordBatch)):
        return spec.schema
    if type(spec).__module__.startswith("pandas") and type(spec).__name__ == "DataFrame":
        return pa.Schema.from_pandas(spec, preserve_index=False)
    return None


def check_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in (metrics or {}).items():
        number: float | None = None
        if not isinstance(value, (bool, str)):
            try:
                number = float(value)  # ints, floats and numpy scalars
            except (TypeError, ValueError):
                number = None
        if number is None or not math.isfinite(number):
            raise InvalidModel(
                f"metric {name!r}", f"is {value!r}, not a finite number", "give {'name': number}"
            )
        out[str(name)] = number
    return out


def check_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in (tags or {}).items():
        if not isinstance(value, str):
            raise InvalidModel(
                f"tag {name!r}", f"is a {type(value).__name__}, not text", "give tags as text"
            )
        out[str(name)] = value
    return out
