"""The model registry: versions and aliases of model artifacts in the object store, recorded in
the ledger; used by batch inference and serving alike.

    import headrace.models as models
    v = models.push("digits", clf, alias="staging", metrics={"accuracy": 0.97})
    models.set_alias("digits", "production", v.version)
    clf = models.load("digits", alias="production")
    scored = models.predict_batch(clf, table, features=[...])

The functions here use the project's registry (its `headrace.toml` and `HEADRACE_*` settings);
`ModelRegistry` takes a ledger and store of your choosing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from headrace.models.batch import PredictionError, predict_batch
from headrace.models.errors import (
    ChecksumMismatch,
    InvalidModel,
    ModelError,
    ModelInUse,
    ModelNotFound,
)
from headrace.models.metadata import LibraryMismatch
from headrace.models.records import AliasMove, ModelRef, ModelVersion, parse_ref
from headrace.models.registry import ModelRegistry, ModelSummary, default_registry
from headrace.models.scorer import ModelScorer

__all__ = [
    "AliasMove",
    "ChecksumMismatch",
    "InvalidModel",
    "LibraryMismatch",
    "ModelError",
    "ModelInUse",
    "ModelNotFound",
    "ModelRef",
    "ModelRegistry",
    "ModelScorer",
    "ModelSummary",
    "ModelVersion",
    "PredictionError",
    "alias_history",
    "default_registry",
    "delete_version",
    "get",
    "list_models",
    "load",
    "parse_ref",
    "predict_batch",
    "push",
    "remove_alias",
    "rollback",
    "set_alias",
    "versions",
]


def push(
    name: str,
    model: Any = None,
    *,
    path: str | os.PathLike[str] | None = None,
    serializer: str = "joblib",
    alias: str | None = None,
    description: str = "",
    metrics: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    signature: Any = None,
    framework: str | None = None,
) -> ModelVersion:
    """Store a new version of `name` (see `ModelRegistry.push`)."""
    return default_registry().push(
        name,
        model,
        path=path,
        serializer=serializer,
        alias=alias,
        description=description,
        metrics=metrics,
        tags=tags,
        signature=signature,
        framework=framework,
    )


def load(name: str, version: int | None = None, *, alias: str | None = None) -> Any:
    """The model by version, alias or (neither) the latest, its SHA-256 checked."""
    return default_registry().load(name, version, alias=alias)


def get(name: str, version: int | None = None, *, alias: str | None = None) -> ModelVersion:
    """What the registry records of a version."""
    return default_registry().get(name, version, alias=alias)


def versions(name: str) -> list[ModelVersion]:
    return default_registry().versions(name)


def list_models() -> list[ModelSummary]:
    return default_registry().models()


def set_alias(name: str, alias: str, version: int) -> AliasMove | None:
    return default_registry().set_alias(name, alias, version)


def remove_alias(name: str, alias: str) -> AliasMove:
    return default_registry().remove_alias(name, alias)


def rollback(name: str, alias: str) -> AliasMove:
    """Move `alias` back to the version it pointed at before its last move."""
    return default_registry().rollback(name, alias)


def alias_history(name: str, alias: str | None = None) -> list[AliasMove]:
    return default_registry().alias_history(name, alias)


def delete_version(name: str, version: int) -> ModelVersion:
    """Delete a version and its artifact; refused while an alias points at it."""
    return default_registry().delete_version(name, version)
