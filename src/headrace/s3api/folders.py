"""S3 folder markers (a zero-byte object whose key ends in `/`, what the AWS console's
"Create folder" and pyarrow's `create_dir` make) on headrace's folder storage.

rclone 1.75.2 drops the slash: `newdir/` became a file `newdir`, which then refused every
upload under `newdir/`. The front answers these keys itself. A marker is its folder holding
an empty hidden file, `<key>.headrace-folder` (`newdir/.headrace-folder`):

- the folder exists, so uploads under it work, and is never empty, so rclone's clean-up of
  empty folders after a delete does not take the marker with it;
- the hidden name is skipped by the change watcher and `Bucket.list`, so a marker triggers
  no function (it holds no data) and is no object of the storage layer;
- rclone lists the file with the empty object's size and MD5; the front renames it to the
  marker's key in listings (`newdir/` sorts just before it, so pages stay in order).

A `/`-terminated key with data cannot be a folder and a file at once: refused with 400."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

MARKER = ".headrace-folder"
ETAG = '"' + hashlib.md5(b"").hexdigest() + '"'


class FolderError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def is_marker_key(key: str) -> bool:
    return key.endswith("/")


def listed_key(key: str) -> str:
    """The key a listing shows for a file rclone lists: a marker file is its folder's key."""
    if key == MARKER or key.endswith("/" + MARKER):
        return key[: -len(MARKER)]
    return key


def _folder(root: Path, bucket: str, key: str) -> Path:
    parts = key[:-1].split("/")
    if not bucket or bucket.startswith(".") or any(p in ("", ".", "..") for p in parts):
        raise FolderError(
            400,
            "InvalidArgument",
            f"key {key!r}: a folder marker's segments must be non-empty names "
            "(no '//', '.' or '..')",
        )
    if any(p.startswith(".") for p in parts):
        raise FolderError(
            400, "InvalidArgument", f"key {key!r}: names starting with '.' are hidden here"
        )
    return root.joinpath(bucket, *parts)


def _bucket(root: Path, bucket: str) -> None:
    if not (root / bucket).is_dir():
        raise FolderError(404, "NoSuchBucket", f"the bucket {bucket!r} does not exist")


def create(root: Path, bucket: str, key: str) -> None:
    _bucket(root, bucket)
    folder = _folder(root, bucket, key)
    parts = key[:-1].split("/")
    for i in range(1, len(parts) + 1):
        if root.joinpath(bucket, *parts[:i]).is_file():
            raise FolderError(
                409,
                "InvalidArgument",
                f"key {key!r}: the object {'/'.join(parts[:i])!r} exists, and a folder "
                "cannot share a file's name here; delete or rename the object first",
            )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).touch()


def stat(root: Path, bucket: str, key: str) -> float:
    """The marker's modification time; FolderError 404 when there is none."""
    _bucket(root, bucket)
    try:
        return (_folder(root, bucket, key) / MARKER).stat().st_mtime
    except (OSError, FolderError):
        raise FolderError(404, "NoSuchKey", "The specified key does not exist.") from None


def delete(root: Path, bucket: str, key: str) -> None:
    """Remove the marker, and its folder when that leaves it empty (as S3 forgets a prefix
    with no objects). Deleting a marker that is not there succeeds, as on S3."""
    _bucket(root, bucket)
    with contextlib.suppress(FolderError):
        folder = _folder(root, bucket, key)
        with contextlib.suppress(FileNotFoundError):
            (folder / MARKER).unlink()
        with contextlib.suppress(OSError):
            folder.rmdir()
