"""`ModelRegistry`: versions and aliases of model artifacts in the object store, recorded in the
ledger.

A push uploads the artifact first, under a key no other push uses (`NAME/<uuid>/FILE`,
written atomically by the store), then records the version in one ledger transaction that also
takes the next number from the model's counter: two pushes at once, from any processes or
machines sharing the ledger, get distinct versions, and a version is visible only once its
bytes are whole. Numbers are never given twice, even after a delete. Every change to one
model's versions or aliases locks that model's row first, so an alias can never be set on a
version being deleted. A load fetches the artifact into a local cache named by its SHA-256
and checks the digest before every load.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from headrace.config import Settings, load_settings
from headrace.errors import ObjectNotFound
from headrace.ledger import Ledger
from headrace.ledger.db import create_tables, to_json
from headrace.models import artifacts
from headrace.models.errors import ChecksumMismatch, InvalidModel, ModelInUse, ModelNotFound
from headrace.models.metadata import (
    check_metrics,
    check_tags,
    framework_of,
    library_versions,
    signature_of,
    warn_on_mismatch,
)
from headrace.models.records import (
    AliasMove,
    ModelRef,
    ModelVersion,
    check_alias,
    check_name,
    check_version,
    parse_ref,
)
from headrace.models.schema import alias_moves, metadata, model_aliases, model_versions, models
from headrace.storage import Bucket, ObjectStore

__all__ = ["ModelRegistry", "ModelSummary", "default_registry"]

logger = logging.getLogger("headrace.models")

DEFAULT_BUCKET = "models"


@dataclass(frozen=True)
class ModelSummary:
    name: str
    versions: int
    latest: int | None
    aliases: dict[str, int]
    created_at: float
    updated_at: float | None


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


class ModelRegistry:
    """Models in the bucket `bucket` of `store`, recorded in `ledger`; verified local copies in
    `cache_dir`."""

    def __init__(
        self,
        ledger: Ledger,
        store: ObjectStore,
        *,
        cache_dir: str | os.PathLike[str],
        bucket: str = DEFAULT_BUCKET,
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.bucket_name = bucket
        self.cache_dir = Path(cache_dir)
        create_tables(metadata, ledger.engine)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> ModelRegistry:
        """The project's registry: its ledger, its object store, a cache in its home."""
        settings = settings or load_settings()
        return cls(
            Ledger(settings.ledger_url, sync=settings.ledger_sync),
            ObjectStore(settings.storage_url),
            cache_dir=settings.home / "cache" / "models",
        )

    def close(self) -> None:
        self.ledger.close()

    @property
    def bucket(self) -> Bucket:
        return self.store.bucket(self.bucket_name, create=True)

    # -- pushing ----------------------------------------------------------------------------

    def push(
        self,
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
        """Store a new version of `name` and return it.

        Give the model object (serialised with `serializer`: joblib, or cloudpickle for lambdas
        and classes defined in `__main__`), or `path=` a file or folder it was saved to (a
        `.joblib`/`.pkl` file loads back as the object, any other file or a folder as a local
        path). `alias` moves that alias to the new version in the same transaction.
        """
        check_name(name)
        if alias is not None:
            check_alias(alias)
        if isinstance(model, (os.PathLike)) and path is None:
            model, path = None, model
        if (model is None) == (path is None):
            raise InvalidModel(
                f"push of model {name!r}",
                "needs exactly one of a model object or path=",
                "pass the fitted model, or path='model.joblib' (a file or folder)",
            )
        metric_values = check_metrics(metrics)
        tag_values = check_tags(tags)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache_dir, prefix=".push-") as work:
            if model is not None:
                packed = artifacts.serialise(model, serializer, Path(work))
                framework = framework or framework_of(model)
            else:
                packed = artifacts.pack_path(Path(os.fspath(path)), Path(work))  # type: ignore[arg-type]
                if packed.format == "joblib" and framework is None:
                    # a pickle is loaded once here: an unreadable file fails the push, not a
                    # later load, and the framework is recorded from the object itself
                    loaded = _load_pushed(packed.path, name)
                    framework = framework_of(loaded)
                    signature = signature if signature is not None else signature_of(None, loaded)
                    del loaded
            sig = signature_of(signature, model)
            libraries = library_versions(
                framework, packed.format if packed.format in ("joblib", "cloudpickle") else None
            )
            key = f"{name}/{uuid.uuid4().hex}/{packed.filename}"
            if packed.format == "folder":
                key += ".tar"
            bucket = self.bucket
            with open(packed.path, "rb") as source:
                reader = artifacts.HashingReader(source)
                bucket.put(key, reader)  # type: ignore[arg-type]
        row = {
            "name": name,
            "format": packed.format,
            "artifact": key,
            "filename": packed.filename,
            "sha256": reader.sha256,
            "size": reader.size,
            "framework": framework,
            "libraries": to_json(libraries),
            "signature": to_json(sig) if sig is not None else None,
            "metrics": to_json(metric_values),
            "tags": to_json(tag_values),
            "description": description,
            "created_at": time.time(),
            "created_by": _who(),
        }
        try:
            with self.ledger.begin() as conn:
                row["version"] = self._next_version(conn, name, row["created_at"])
                conn.execute(insert(model_versions).values(**row))
                if alias is not None:
                    self._move_alias(conn, name, alias, row["version"])
        except BaseException:
            # recorded nowhere: the artifact would be an orphan
            with contextlib.suppress(Exception):
                bucket.delete(key)
            raise
        return self.get(name, row["version"])

    def _next_version(self, conn: Connection, name: str, now: float) -> int:
        """Take the model's next number; its row stays locked until the transaction ends."""
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(models).values(name=name, last_version=1, created_at=now)
        stmt = stmt.on_conflict_do_update(
            index_elements=[models.c.name],
            set_={"last_version": models.c.last_version + 1},
        ).returning(models.c.last_version)
        return int(conn.execute(stmt).scalar_one())

    # -- reading ----------------------------------------------------------------------------

    def get(
        self, name: str, version: int | None = None, *, alias: str | None = None
    ) -> ModelVersion:
        """A version by number, by alias, or (neither given) the latest."""
        check_name(name)
        with self.ledger.reader.connect() as conn:
            number = self._resolve(conn, name, version, alias)
            row = (
                conn.execute(
                    select(model_versions).where(
                        model_versions.c.name == name, model_versions.c.version == number
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                raise self._no_version(conn, name, number)
            return self._version(conn, row)

    def resolve(self, ref: str | ModelRef) -> ModelVersion:
        """`NAME`, `NAME:VERSION` or `NAME@ALIAS` as one version."""
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        return self.get(parsed.name, parsed.version, alias=parsed.alias)

    def _resolve(self, conn: Connection, name: str, version: int | None, alias: str | None) -> int:
        if version is not None and alias is not None:
            raise InvalidModel(
                f"model {name!r}", "was asked for by version and alias at once", "give one"
            )
        if version is not None:
            return check_version(version, name)
        if alias is not None:
            check_alias(alias)
            number = conn.execute(
                select(model_aliases.c.version).where(
                    model_aliases.c.name == name, model_aliases.c.alias == alias
                )
            ).scalar()
            if number is None:
                self._require_model(conn, name)
                known = self._aliases(conn, name)
                raise ModelNotFound(
                    f"alias {alias!r} of model {name!r}",
                    "is not set" + (f" (aliases: {', '.join(sorted(known))})" if known else ""),
                    f"set it with `headrace models alias {name} {alias} VERSION`",
                )
            return int(number)
        latest = conn.execute(
            select(func.max(model_versions.c.version)).where(model_versions.c.name == name)
        ).scalar()
        if latest is None:
            self._require_model(conn, name)
            raise ModelNotFound(
                f"model {name!r}", "has no versions left", "push one with `headrace models push`"
            )
        return int(latest)

    def _require_model(self, conn: Connection, name: str) -> None:
        exists = conn.execute(select(models.c.name).where(models.c.name == name)).first()
        if exists is None:
            known = [r[0] for r in conn.execute(select(models.c.name).order_by(models.c.name))]
            raise ModelNotFound(
                f"model {name!r}",
                "is not in the registry"
                + (f" (models: {', '.join(known[:20])})" if known else " (it is empty)"),
                "push it first: headrace.models.push(name, model) or `headrace models push`",
            )

    def _no_version(self, conn: Connection, name: str, version: int) -> ModelNotFound:
        self._require_model(conn, name)
        numbers = [
            r[0]
            for r in conn.execute(
                select(model_versions.c.version)
                .where(model_versions.c.name == name)
                .order_by(model_versions.c.version)
            )
        ]
        have = ", ".join(map(str, numbers)) if numbers else "none"
        return ModelNotFound(
            f"version {version} of model {name!r}",
            f"does not exist (versions: {have})",
            f"list them with `headrace models list {name}`",
        )

    def _aliases(self, conn: Connection, name: str) -> dict[str, int]:
        rows = conn.execute(
            select(model_aliases.c.alias, model_aliases.c.version).where(
                model_aliases.c.name == name
            )
        )
        return {r.alias: r.version for r in rows}

    def _version(self, conn: Connection, row: Any) -> ModelVersion:
        aliases = tuple(
            sorted(a for a, v in self._aliases(conn, row["name"]).items() if v == row["version"])
        )
        return ModelVersion.from_row(row, aliases, self.bucket_url(row["artifact"]))

    def bucket_url(self, key: str) -> str:
        return f"{self.store.url.rstrip('/')}/{self.bucket_name}/{key}"

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of `name`, oldest first."""
        check_name(name)
        with self.ledger.reader.connect() as conn:
            self._require_model(conn, name)
            aliases = self._aliases(conn, name)
            rows = conn.execute(
                select(model_versions)
                .where(model_versions.c.name == name)
                .order_by(model_versions.c.version)
            ).mappings()
            return [
                ModelVersion.from_row(
                    r,
                    tuple(sorted(a for a, v in aliases.items() if v == r["version"])),
                    self.bucket_url(r["artifact"]),
                )
                for r in rows
            ]

    def models(self) -> list[ModelSummary]:
        """Every model name, with its version count, latest version and aliases."""
        with self.ledger.reader.connect() as conn:
            stats = {
                r.name: r
                for r in conn.execute(
                    select(
                        model_versions.c.name,
                        func.count().label("n"),
                        func.max(model_versions.c.version).label("latest"),
                        func.max(model_versions.c.created_at).label("updated"),
                    ).group_by(model_versions.c.name)
                )
            }
            aliases: dict[str, dict[str, int]] = {}
            for r in conn.execute(select(model_aliases)):
                aliases.setdefault(r.name, {})[r.alias] = r.version
            out = []
            for r in conn.execute(select(models).order_by(models.c.name)):
                s = stats.get(r.name)
                out.append(
                    ModelSummary(
                        name=r.name,
                        versions=s.n if s else 0,
                        latest=s.latest if s else None,
                        aliases=dict(sorted(aliases.get(r.name, {}).items())),
                        created_at=r.created_at,
                        updated_at=s.updated if s else None,
                    )
                )
            return out

    # -- aliases ----------------------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: int) -> AliasMove | None:
        """Point `alias` at `version` (recorded as a move); None if it already pointed there."""
        check_name(name)
        check_alias(alias)
        check_version(version, name)
        with self.ledger.begin() as conn:
            self._lock(conn, name)
            exists = conn.execute(
                select(model_versions.c.version).where(
                    model_versions.c.name == name, model_versions.c.version == version
                )
            ).first()
            if exists is None:
                raise self._no_version(conn, name, version)
            return self._move_alias(conn, name, alias, version)

    def remove_alias(self, name: str, alias: str) -> AliasMove:
        check_name(name)
        check_alias(alias)
        with self.ledger.begin() as conn:
            self._lock(conn, name)
            return self._move_alias(conn, name, alias, None)

    def rollback(self, name: str, alias: str) -> AliasMove:
        """Move `alias` back to the version it pointed at before its last move."""
        check_name(name)
        check_alias(alias)
        with self.ledger.begin() as conn:
            self._lock(conn, name)
            return self._roll_back(conn, name, alias)

    def rollback_from(self, name: str, alias: str, version: int) -> AliasMove | None:
        """Roll `alias` back only if it still points at `version`, in one transaction under the
        model's lock; None (nothing moved) if someone moved it meanwhile. A server giving up on a
        version uses this so that it never undoes a move a user made after the failure."""
        check_name(name)
        check_alias(alias)
        with self.ledger.begin() as conn:
            self._lock(conn, name)
            current = conn.execute(
                select(model_aliases.c.version).where(
                    model_aliases.c.name == name, model_aliases.c.alias == alias
                )
            ).scalar()
            if current != version:
                return None
            return self._roll_back(conn, name, alias)

    def _roll_back(self, conn: Connection, name: str, alias: str) -> AliasMove:
        last = conn.execute(
            select(alias_moves)
            .where(alias_moves.c.name == name, alias_moves.c.alias == alias)
            .order_by(alias_moves.c.id.desc())
            .limit(1)
        ).first()
        if last is None or last.previous is None:
            raise ModelNotFound(
                f"alias {alias!r} of model {name!r}",
                "has no earlier version to go back to"
                if last is not None
                else "has never been set",
                f"point it at a version with `headrace models alias {name} {alias} VERSION`",
            )
        exists = conn.execute(
            select(model_versions.c.version).where(
                model_versions.c.name == name, model_versions.c.version == last.previous
            )
        ).first()
        if exists is None:
            raise ModelNotFound(
                f"version {last.previous} of model {name!r}",
                f"was deleted, so alias {alias!r} cannot go back to it",
                f"point it at a version with `headrace models alias {name} {alias} VERSION`",
            )
        move = self._move_alias(conn, name, alias, last.previous)
        assert move is not None  # the last move changed it, so it is not there now
        return move

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasMove]:
        """The moves of one alias (or of all the model's aliases), oldest first."""
        check_name(name)
        query = select(alias_moves).where(alias_moves.c.name == name)
        if alias is not None:
            query = query.where(alias_moves.c.alias == check_alias(alias))
        with self.ledger.reader.connect() as conn:
            self._require_model(conn, name)
            return [
                AliasMove(r.name, r.alias, r.version, r.previous, r.moved_at, r.moved_by)
                for r in conn.execute(query.order_by(alias_moves.c.id))
            ]

    def _lock(self, conn: Connection, name: str) -> None:
        """Lock the model's row (Postgres; SQLite's writer transaction is exclusive already)."""
        row = conn.execute(
            select(models.c.name).where(models.c.name == name).with_for_update()
        ).first()
        if row is None:
            self._require_model(conn, name)

    def _move_alias(
        self, conn: Connection, name: str, alias: str, version: int | None
    ) -> AliasMove | None:
        previous = conn.execute(
            select(model_aliases.c.version).where(
                model_aliases.c.name == name, model_aliases.c.alias == alias
            )
        ).scalar()
        if previous == version:
            return None
        now = time.time()
        where = (model_aliases.c.name == name, model_aliases.c.alias == alias)
        if version is None:
            if previous is None:
                raise ModelNotFound(
                    f"alias {alias!r} of model {name!r}",
                    "is not set, so there is nothing to remove",
                    f"see the aliases with `headrace models list {name}`",
                )
            conn.execute(delete(model_aliases).where(*where))
        elif previous is None:
            conn.execute(
                insert(model_aliases).values(
                    name=name, alias=alias, version=version, updated_at=now
                )
            )
        else:
            conn.execute(
                update(model_aliases).where(*where).values(version=version, updated_at=now)
            )
        move = AliasMove(name, alias, version, previous, now, _who())
        conn.execute(
            insert(alias_moves).values(
                name=name,
                alias=alias,
                version=version,
                previous=previous,
                moved_at=now,
                moved_by=move.moved_by,
            )
        )
        return move

    # -- deleting ---------------------------------------------------------------------------

    def delete_version(self, name: str, version: int) -> ModelVersion:
        """Delete one version and its artifact; refused while an alias points at it."""
        check_name(name)
        check_version(version, name)
        with self.ledger.begin() as conn:
            self._lock(conn, name)
            row = (
                conn.execute(
                    select(model_versions).where(
                        model_versions.c.name == name, model_versions.c.version == version
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                raise self._no_version(conn, name, version)
            gone = self._version(conn, row)
            if gone.aliases:
                raise ModelInUse(
                    f"version {version} of model {name!r}",
                    f"is what alias {', '.join(map(repr, gone.aliases))} points at",
                    f"move the alias first (`headrace models alias {name} ALIAS VERSION`) or"
                    f" remove it (`headrace models alias {name} ALIAS --remove`)",
                )
            conn.execute(
                delete(model_versions).where(
                    model_versions.c.name == name, model_versions.c.version == version
                )
            )
        try:
            self.bucket.delete(gone.artifact)
        except ObjectNotFound:
            pass
        except Exception:  # recorded as gone already: a leftover object is only wasted space
            logger.warning("could not delete %s", gone.uri, exc_info=True)
        return gone

    # -- loading ----------------------------------------------------------------------------

    def fetch(
        self, name: str, version: int | None = None, *, alias: str | None = None
    ) -> tuple[ModelVersion, Path]:
        """The version and a verified local copy of its artifact (a file, or a folder)."""
        found = self.get(name, version, alias=alias)
        return found, self._local_copy(found)

    def load(self, name: str, version: int | None = None, *, alias: str | None = None) -> Any:
        """The model: the object for joblib and cloudpickle artifacts, a local path for other
        files and folders. Its SHA-256 is checked first; a library version other than the one
        it was saved with is warned about (`LibraryMismatch`)."""
        found, local = self.fetch(name, version, alias=alias)
        warn_on_mismatch(found.ref, found.libraries)
        return artifacts.load_file(local, found.format)

    def _local_copy(self, found: ModelVersion) -> Path:
        entry = self.cache_dir / found.sha256
        target = entry / found.filename
        subject = f"model {found.ref}"
        if target.exists():
            digest = (
                artifacts.sha256_folder(target)
                if found.format == "folder"
                else artifacts.sha256_file(target)
            )
            if digest == found.sha256:
                return target
            logger.warning("cached copy of %s was changed; fetching it again", found.ref)
            _remove(target)
        entry.mkdir(parents=True, exist_ok=True)
        download = target if found.format != "folder" else entry / f".{uuid.uuid4().hex}.tar"
        try:
            with self.bucket.open(found.artifact, "rb") as source:
                artifacts.download_verified(source, found.sha256, download, subject)
            if found.format == "folder":
                artifacts.extract_folder(download, target)
                if artifacts.sha256_folder(target) != found.sha256:
                    _remove(target)
                    raise ChecksumMismatch(
                        subject,
                        "its folder does not unpack to the files it was pushed with",
                        "push the model again as a new version",
                    )
        except ObjectNotFound:
            raise ModelNotFound(
                subject,
                f"is recorded but its artifact {found.uri} is missing from the object store",
                "push the model again, and delete this version",
            ) from None
        finally:
            if found.format == "folder":
                with contextlib.suppress(FileNotFoundError):
                    download.unlink()
        return target


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _load_pushed(path: Path, name: str) -> Any:
    try:
        return artifacts.load_file(path, "joblib")
    except InvalidModel:
        raise
    except Exception as exc:
        raise InvalidModel(
            f"model file {str(path)!r} (for model {name!r})",
            f"cannot be loaded as a pickle: {type(exc).__name__}: {exc}",
            "give the file joblib.dump wrote, or push it under a name without .joblib/.pkl"
            " to store it as a plain file",
        ) from None


_registries: dict[tuple[str, str, str], ModelRegistry] = {}
_registries_lock = threading.Lock()


def default_registry() -> ModelRegistry:
    """The registry of the project in the current folder (or `$HEADRACE_PROJECT`), opened once
    per process for each ledger, store and home."""
    settings = load_settings()
    key = (settings.ledger_url, settings.storage_url, os.fspath(settings.home))
    with _registries_lock:
        found = _registries.get(key)
        if found is None:
            found = _registries[key] = ModelRegistry.from_settings(settings)
        return found
