"""Model artifacts as files: serialising an object, packing a file or folder, their SHA-256, and
turning a verified local copy back into the model.

A folder is stored as one tar archive written canonically (entries sorted, times, owners and
modes normalised), so its SHA-256 depends only on the names, contents and executable bits of
its files: re-packing an extracted copy gives the same digest, which is how a cached copy is
checked before each load.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import shutil
import stat
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from headrace.models.errors import ChecksumMismatch, InvalidModel

CHUNK = 1 << 20
# File names whose content is a pickle (joblib's or the standard library's): a load unpickles
# them; any other file is handed back as a path.
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
SERIALIZERS = ("joblib", "cloudpickle")


@dataclass(frozen=True)
class Packed:
    """An artifact ready to upload: one local file, its format, and the name a load gives
    back. Its SHA-256 and size are taken from the bytes as they are uploaded
    (`HashingReader`), so a file changed meanwhile cannot be recorded with another's digest."""

    path: Path
    format: str
    filename: str


class HashingReader:
    """A binary reader that hashes and counts what passes through it."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.source.read(n)
        self.digest.update(data)
        self.size += len(data)
        return data

    @property
    def sha256(self) -> str:
        return self.digest.hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def serialise(model: Any, serializer: str, work: Path) -> Packed:
    """Write `model` into the folder `work` with joblib or cloudpickle."""
    if serializer not in SERIALIZERS:
        raise InvalidModel(
            f"serializer {serializer!r}",
            "is not one headrace knows",
            f"use one of {', '.join(SERIALIZERS)}",
        )
    filename = "model.joblib" if serializer == "joblib" else "model.pkl"
    target = work / filename
    try:
        if serializer == "joblib":
            _joblib().dump(model, target)
        else:
            cloudpickle = _cloudpickle()
            with open(target, "wb") as f:
                cloudpickle.dump(model, f, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        fix = (
            "pass serializer='cloudpickle' (it pickles lambdas and classes defined in __main__)"
            if serializer == "joblib"
            else "make the object picklable, or push the files it was saved to with path="
        )
        raise InvalidModel(
            f"model object of type {type(model).__qualname__}",
            f"cannot be serialised with {serializer}: {exc}",
            fix,
        ) from None
    return Packed(target, serializer, filename)


def pack_path(source: Path, work: Path) -> Packed:
    """A file as it is, or a folder as a canonical tar in `work`."""
    name = source.name  # a link's own name: what the user called the model file
    try:
        mode = source.stat().st_mode  # through a link: what it points at is the model
    except FileNotFoundError:
        raise InvalidModel(
            f"model file {str(source)!r}", "does not exist", "check the path"
        ) from None
    except OSError as exc:
        raise InvalidModel(
            f"model file {str(source)!r}", f"cannot be read: {exc}", "check its permissions"
        ) from None
    if stat.S_ISDIR(mode):
        target = work / f"{name}.tar"
        try:
            with open(target, "wb") as out:
                write_canonical_tar(source, out)
        except OSError as exc:
            raise InvalidModel(
                f"model folder {str(source)!r}", f"cannot be read: {exc}", "check permissions"
            ) from None
        return Packed(target, "folder", name)
    if not stat.S_ISREG(mode):
        raise InvalidModel(
            f"model file {str(source)!r}",
            "is neither a regular file nor a folder",
            "push the file or folder the model was saved to",
        )
    if not os.access(source, os.R_OK):
        raise InvalidModel(
            f"model file {str(source)!r}", "cannot be read (permission denied)", "check its mode"
        )
    fmt = "joblib" if Path(name).suffix.lower() in PICKLE_SUFFIXES else "file"
    return Packed(source, fmt, name)


# -- canonical folders ------------------------------------------------------------------------


def _entries(root: Path, relative: str = "") -> Iterator[tuple[str, Path, os.stat_result]]:
    """(name in the archive, path, lstat) of everything under `root`: depth first, in name
    order, each folder before its contents."""
    folder = root / relative if relative else root
    for name in sorted(os.listdir(folder)):
        rel = f"{relative}/{name}" if relative else name
        path = folder / name
        st = path.lstat()
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            raise InvalidModel(
                f"model folder {str(root)!r}",
                f"holds {rel!r}, which is a link or a special file",
                "copy the files a link points at into the folder instead of linking them",
            )
        yield rel, path, st
        if stat.S_ISDIR(st.st_mode):
            yield from _entries(root, rel)


def write_canonical_tar(root: Path, out: BinaryIO) -> None:
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path, st in _entries(root):
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
                info.size = st.st_size
                with open(path, "rb") as f:
                    tar.addfile(info, f)


class _HashingSink:
    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.offset = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset


def sha256_folder(root: Path) -> str:
    """The SHA-256 of the canonical tar of `root` (no archive is written)."""
    sink = _HashingSink()
    write_canonical_tar(root, sink)  # type: ignore[arg-type]
    return sink.digest.hexdigest()


# -- local copies -----------------------------------------------------------------------------


def download_verified(source: BinaryIO, sha256: str, target: Path, subject: str) -> None:
    """Copy `source` to `target` atomically, refusing bytes whose SHA-256 is not `sha256`."""
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            raise ChecksumMismatch(
                subject,
                f"its artifact's SHA-256 is {digest.hexdigest()}, not the {sha256} recorded when"
                " it was pushed: the stored bytes changed or are damaged",
                "push the model again as a new version, or delete this version",
            )
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def extract_folder(archive: Path, target: Path) -> None:
    """Unpack a canonical tar into `target` (which must not exist), atomically."""
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # another process finished the same copy first: use it
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_file(path: Path, fmt: str) -> Any:
    """The model in a verified local copy: the object for pickles, else the path itself."""
    if fmt == "joblib":
        return _joblib().load(path)
    if fmt == "cloudpickle":
        _cloudpickle()  # its pickles name its functions
        with open(path, "rb") as f:
            return pickle.load(f)
    return path


def _joblib() -> Any:
    try:
        import joblib
    except ModuleNotFoundError:
        raise _missing("joblib") from None
    return joblib


def _cloudpickle() -> Any:
    try:
        import cloudpickle
    except ModuleNotFoundError:
        raise _missing("cloudpickle") from None
    return cloudpickle


def _missing(module: str) -> InvalidModel:
    return InvalidModel(
        f"the {module} package",
        "is not installed, and this model's format needs it",
        "pip install 'headrace[ml]'",
    )
