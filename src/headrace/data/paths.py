"""Where a dataset's files are: paths, folders, globs, hive partitions, buckets and URLs.

A path is resolved to a pyarrow file system and a path inside it:

* a plain path or `file://` URL: the local disk;
* `s3://NAME/key`: headrace's bucket NAME when the project's object store has one (the store of
  `headrace.toml`, `.headrace/buckets` by default), so a script written for S3 runs unchanged on
  the laptop; otherwise Amazon S3 itself, with the credentials pyarrow finds (environment, AWS
  config files, instance role);
* `headrace://NAME/key`: always headrace's bucket NAME (created when written to);
* any other `scheme://`: the fsspec file system of that scheme (`memory://`, `gs://`, ...).

Folders are listed recursively; files and folders whose names start with `.` or `_`
(`_SUCCESS`, temporary objects) are skipped, as Ray and Spark do. Folder names `key=value`
between the path given and a file are hive partitions: each becomes a string column.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from headrace.data.errors import DatasetError

_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class Location:
    """One path as the user wrote it, resolved to a file system."""

    filesystem: pafs.FileSystem
    path: str
    display: str


@dataclass(frozen=True)
class InputFile:
    path: str
    display: str
    partitions: dict[str, str] = field(default_factory=dict)
    size: int = -1


def _store_root() -> tuple[str, bool] | None:
    """The project's object store root and whether it is a local folder."""
    from headrace.config import load_settings

    url = load_settings().storage_url
    if url.startswith("file://"):
        url = url[len("file://") :]
    return url, "://" not in url


def _fsspec(url: str, storage_options: dict[str, Any] | None) -> tuple[pafs.FileSystem, str]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def _bucket_location(
    name: str, key: str, display: str, *, must_exist: bool, storage_options: dict | None
) -> Location | None:
    root = _store_root()
    if root is None:
        return None
    url, local = root
    if local:
        folder = os.path.join(url, name)
        if must_exist and not os.path.isdir(folder):
            return None
        return Location(pafs.LocalFileSystem(), os.path.join(folder, key).rstrip("/"), display)
    fs, base = _fsspec(f"{url.rstrip('/')}/{name}", storage_options)
    if must_exist and fs.get_file_info(base).type != pafs.FileType.Directory:
        return None
    return Location(fs, f"{base}/{key}".rstrip("/"), display)


def resolve(
    path: str | os.PathLike[str],
    *,
    filesystem: pafs.FileSystem | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Location:
    """The file system and inner path of one user path (see the module docstring)."""
    text = os.fspath(path)
    if filesystem is not None:
        return Location(filesystem, text.split("://", 1)[-1] if "://" in text else text, text)
    if "://" not in text or text.startswith("file://"):
        local = text[len("file://") :] if text.startswith("file://") else text
        return Location(pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(local)), text)
    scheme, rest = text.split("://", 1)
    name, _, key = rest.partition("/")
    if scheme in ("s3", "s3a", "headrace"):
        found = _bucket_location(
            name, key, text, must_exist=scheme != "headrace", storage_options=storage_options
        )
        if found is not None:
            return found
        if scheme == "headrace":
            raise DatasetError(text, "no headrace object store is configured", "set storage")
        try:
            fs, inner = pafs.FileSystem.from_uri(f"s3://{rest}")
        except Exception as exc:
            raise DatasetError(
                text,
                f"{name!r} is not a bucket of the project's object store, and S3 is not "
                f"reachable: {exc}",
                f"create the bucket folder {name} in the object store, or configure AWS "
                "credentials",
            ) from None
        return Location(fs, inner, text)
    try:
        fs, inner = _fsspec(text, storage_options)
    except (ImportError, ValueError) as exc:
        raise DatasetError(
            text,
            f"no file system for {scheme}:// ({exc})",
            f"install the fsspec package for {scheme}://, or use a local path",
        ) from None
    return Location(fs, inner, text)


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def _partitions(base: str, path: str) -> dict[str, str]:
    relative = posixpath.relpath(path, base) if base else path
    values = {}
    for part in relative.split("/")[:-1]:
        key, eq, value = part.partition("=")
        if eq and key:
            values[key] = value
    return values


def list_files(
    paths: str | os.PathLike[str] | list,
    *,
    extensions: tuple[str, ...] | None,
    filesystem: pafs.FileSystem | None = None,
    storage_options: dict[str, Any] | None = None,
    partitioning: str | None = "hive",
) -> tuple[pafs.FileSystem, list[InputFile]]:
    """Every data file under `paths`, in a stable order (sorted within each path given)."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    if not paths:
        raise DatasetError("read", "no paths were given", "pass a file, folder or glob")
    found: list[InputFile] = []
    fs_used: pafs.FileSystem | None = None
    for item in paths:
        loc = resolve(item, filesystem=filesystem, storage_options=storage_options)
        fs_used = fs_used or loc.filesystem
        glob_at = min((i for i, c in enumerate(loc.path) if c in _GLOB_CHARS), default=-1)
        if glob_at >= 0:
            base = loc.path[:glob_at].rsplit("/", 1)[0]
            infos = _walk(loc.filesystem, base, loc.display)
            pattern = loc.path
            infos = [i for i in infos if fnmatch.fnmatchcase(i.path, pattern)]
            if not infos:
                raise DatasetError(
                    loc.display, "the glob matches no file", "check the pattern and the folder"
                )
        else:
            info = loc.filesystem.get_file_info(loc.path)
            if info.type == pafs.FileType.NotFound:
                raise DatasetError(
                    loc.display, "no such file or folder", "check the path (and the bucket name)"
                )
            base = loc.path
            infos = [info] if info.type == pafs.FileType.File else _walk(loc.filesystem, base)
            if info.type == pafs.FileType.File:
                base = posixpath.dirname(loc.path)
        before = len(found)
        for info in infos:
            name = info.path.rsplit("/", 1)[-1]
            if info.path != loc.path and extensions and not name.lower().endswith(extensions):
                continue
            rel = posixpath.relpath(info.path, base) if info.path != loc.path else name
            display = loc.display.rstrip("/") + "/" + rel if info.path != loc.path else loc.display
            if glob_at >= 0:
                display = info.path
            parts = _partitions(base, info.path) if partitioning == "hive" else {}
            found.append(InputFile(info.path, display, parts, info.size or 0))
        if len(found) == before:
            raise DatasetError(
                loc.display,
                f"holds no {'/'.join(extensions) if extensions else ''} file",
                "check the folder, or pass file_extensions=",
            )
    assert fs_used is not None
    return fs_used, found


def _walk(fs: pafs.FileSystem, base: str, display: str | None = None) -> list[pafs.FileInfo]:
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    except (FileNotFoundError, OSError) as exc:
        raise DatasetError(display or base, f"cannot be listed: {exc}", "check the path") from None
    kept = []
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        relative = posixpath.relpath(info.path, base) if base else info.path
        if any(_hidden(part) for part in relative.split("/")):
            continue
        kept.append(info)
    return sorted(kept, key=lambda i: i.path)
