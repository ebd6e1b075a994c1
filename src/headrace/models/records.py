"""`ModelVersion` as the registry records it, names and aliases, and `NAME:VERSION` /
`NAME@ALIAS` references."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from headrace.models.errors import InvalidModel

# A model name is one segment of an object key and of a URL path (serving routes by it).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# An alias starts with a letter, so "digits:3" and "digits@3" can never be confused.
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")

FORMATS = ("joblib", "cloudpickle", "file", "folder")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise InvalidModel(
            f"model name {name!r}",
            "is not a valid model name",
            "use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS.match(alias):
        raise InvalidModel(
            f"alias {alias!r}",
            "is not a valid alias",
            "use 1-64 letters, digits, '_' or '-', starting with a letter (e.g. 'production')",
        )
    return alias


def check_version(version: Any, name: str) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidModel(
            f"version {version!r} of model {name!r}",
            "is not a version number",
            "versions are whole numbers from 1; see `headrace models list " + name + "`",
        )
    return version


@dataclass(frozen=True)
class ModelRef:
    """`NAME`, `NAME:VERSION` or `NAME@ALIAS`."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


def parse_ref(text: str) -> ModelRef:
    """A reference as the CLI and the serving routes write it."""
    if "@" in text:
        name, _, alias = text.partition("@")
        return ModelRef(check_name(name), alias=check_alias(alias))
    if ":" in text:
        name, _, number = text.partition(":")
        if not number.isdigit() or int(number) < 1:
            raise InvalidModel(
                f"model reference {text!r}",
                f"{number!r} is not a version number",
                "write NAME:VERSION with a version from 1, NAME@ALIAS, or NAME for the latest",
            )
        return ModelRef(check_name(name), version=int(number))
    return ModelRef(check_name(text))


@dataclass(frozen=True)
class ModelVersion:
    """One immutable version of a model: where its artifact is and what it is."""

    name: str
    version: int
    format: str
    artifact: str
    """Object key of the artifact in the registry's bucket."""
    filename: str
    sha256: str
    size: int
    framework: str | None
    libraries: dict[str, str]
    signature: dict[str, Any] | None
    metrics: dict[str, float]
    tags: dict[str, str]
    description: str
    created_at: float
    created_by: str
    aliases: tuple[str, ...] = field(default=())
    uri: str = ""
    """The artifact's URL in the object store."""

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @classmethod
    def from_row(cls, row: Any, aliases: tuple[str, ...] = (), uri: str = "") -> ModelVersion:
        r = dict(row)
        return cls(
            name=r["name"],
            version=r["version"],
            format=r["format"],
            artifact=r["artifact"],
            filename=r["filename"],
            sha256=r["sha256"],
            size=r["size"],
            framework=r["framework"],
            libraries=json.loads(r["libraries"]),
            signature=json.loads(r["signature"]) if r["signature"] else None,
            metrics=json.loads(r["metrics"]),
            tags=json.loads(r["tags"]),
            description=r["description"],
            created_at=r["created_at"],
            created_by=r["created_by"],
            aliases=aliases,
            uri=uri,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "aliases": list(self.aliases),
            "format": self.format,
            "filename": self.filename,
            "sha256": self.sha256,
            "size": self.size,
            "framework": self.framework,
            "libraries": dict(self.libraries),
            "signature": self.signature,
            "metrics": dict(self.metrics),
            "tags": dict(self.tags),
            "description": self.description,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "artifact": self.artifact,
            "uri": self.uri,
        }

    @property
    def features(self) -> list[str] | None:
        """The input column names of the signature, if one was recorded."""
        if not self.signature or not self.signature.get("inputs"):
            return None
        return [column["name"] for column in self.signature["inputs"]]


@dataclass(frozen=True)
class AliasMove:
    """One move of an alias: to `version` (None: removed) from `previous` (None: new)."""

    name: str
    alias: str
    version: int | None
    previous: int | None
    moved_at: float
    moved_by: str
