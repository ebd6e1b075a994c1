"""Where GRIB comes from and where Parquet goes: local paths or fsspec URLs.

ecCodes reads through a C ``FILE*``, so a remote source is first copied to a local temporary
file. Output is written to a hidden temporary name next to the destination and renamed only
after the write succeeded, so readers never see a partial Parquet file; on failure the
temporary is removed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

PathLike = str | os.PathLike[str]


def _is_url(location: PathLike) -> bool:
    return "://" in str(location)


def _url_to_fs(location: str) -> tuple[Any, str]:
    import fsspec  # only paid for when a URL is used

    return fsspec.core.url_to_fs(location)


def _is_local(fs: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


@contextmanager
def local_source(src: PathLike) -> Iterator[str]:
    """Yield a local path holding the bytes of ``src`` (downloaded to a temp file if remote)."""
    if not _is_url(src):
        yield os.fspath(src)
        return
    fs, path = _url_to_fs(str(src))
    if _is_local(fs):
        yield path
        return
    handle, local = tempfile.mkstemp(prefix="headrace-grib-", suffix=".grib")
    try:
        with os.fdopen(handle, "wb") as out, fs.open(path, "rb") as remote:
            shutil.copyfileobj(remote, out, 4 << 20)
        yield local
    finally:
        with suppress(FileNotFoundError):
            os.unlink(local)


def write_atomically(dst: PathLike, write: Callable[[IO[bytes] | str], None]) -> tuple[str, int]:
    """Run ``write`` on a temporary file next to ``dst``, then rename; return (dst, bytes).

    ``write`` gets the temporary's local path (writers with native file I/O, such as pyarrow,
    skip Python's file layer that way) or, for remote destinations, an open binary file.
    """
    if _is_url(dst):
        fs, path = _url_to_fs(str(dst))
        if not _is_local(fs):
            return _write_remote(fs, path, str(dst), write)
        dst = path
    return _write_local(Path(dst), write)


def _temporary_name(name: str) -> str:
    return f".{name}.{uuid.uuid4().hex[:12]}.tmp"  # hidden and not *.parquet: globs skip it


def _write_local(dst: Path, write: Callable[[IO[bytes] | str], None]) -> tuple[str, int]:
    dst.parent.mkdir(parents=True, exist_ok=True)
    temporary = dst.with_name(_temporary_name(dst.name))
    try:
        write(str(temporary))
        os.replace(temporary, dst)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return str(dst), dst.stat().st_size


def _write_remote(
    fs: Any, path: str, url: str, write: Callable[[IO[bytes] | str], None]
) -> tuple[str, int]:
    parent, _, name = path.rpartition("/")
    temporary = f"{parent}/{_temporary_name(name)}" if parent else _temporary_name(name)
    try:
        with fs.open(temporary, "wb") as out:
            write(out)
        fs.mv(temporary, path)
    except BaseException:
        with suppress(Exception):
            if fs.exists(temporary):
                fs.rm(temporary)
        raise
    return url, int(fs.size(path))
