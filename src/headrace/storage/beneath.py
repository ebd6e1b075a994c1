"""Files beneath a local bucket folder, reached without following any symbolic link.

The rule: **a bucket holds regular files and folders; symbolic links inside it are not objects
and are never followed**, whether they point out of the bucket or back into it. S3 has no links,
so a key means one file at one place, and nothing written to or read from a bucket can land
outside it. The bucket folder itself may be a link (an operator's way to put a bucket on another
disk): it is set by configuration, not by whoever can write into the bucket.

Checking a path and then using it races with anyone who swaps a folder for a link in between.
So every step here opens the next path component relative to the folder opened before it,
with O_NOFOLLOW (and O_DIRECTORY for folders): the kernel refuses a link at the moment of the
open, and there is no path string left to swap under us.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as _stat
from collections.abc import Callable, Iterator
from typing import Any

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC


class SymlinkInBucket(OSError):
    """A component of a key is a symbolic link; `link` is the key prefix that is the link."""

    def __init__(self, link: str) -> None:
        super().__init__(errno.ELOOP, "symbolic link inside a bucket", link)
        self.link = link


def open_folder(root: str) -> int:
    """A descriptor of the bucket folder (which may itself be a link, see the module doc)."""
    return os.open(root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)


def open_parent(root: str, key: str, *, create: bool = False) -> tuple[int, str]:
    """(descriptor of the folder that holds `key`, final name), walking from `root` without
    following links; with `create`, missing folders are made on the way.

    Raises SymlinkInBucket if a folder on the way is a link, FileNotFoundError if one is
    missing, NotADirectoryError if one is a file. The caller closes the descriptor.
    """
    parts = key.split("/")
    fd = open_folder(root)
    try:
        for i, part in enumerate(parts[:-1]):
            try:
                child = _open_child(fd, part, create)
            except OSError as exc:
                _raise_if_link(exc, fd, part, "/".join(parts[: i + 1]))
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd, parts[-1]


def _open_child(parent: int, name: str, create: bool) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
    with contextlib.suppress(FileExistsError):  # a concurrent writer made it first
        os.mkdir(name, 0o777, dir_fd=parent)
    return os.open(name, _DIR_FLAGS, dir_fd=parent)


def open_file(root: str, key: str, flags: int, mode: int = 0o666) -> int:
    """os.open of the object `key` under `root`, no link followed anywhere on the way."""
    parent, name = open_parent(root, key)
    try:
        return open_at(parent, name, flags, mode, key)
    finally:
        os.close(parent)


def open_at(parent: int, name: str, flags: int, mode: int = 0o666, key: str = "") -> int:
    """os.open of `name` in the folder `parent`, refusing a link (SymlinkInBucket(key))."""
    try:
        return os.open(name, flags | os.O_NOFOLLOW | _CLOEXEC, mode, dir_fd=parent)
    except OSError as exc:
        _raise_if_link(exc, parent, name, key or name)
        raise


def open_dir(root: str, rel: str) -> int:
    """A descriptor of the folder `rel` under `root` ("" for `root`), no link followed."""
    if not rel:
        return open_folder(root)
    parent, name = open_parent(root, rel)
    try:
        return open_at(parent, name, os.O_RDONLY | os.O_DIRECTORY, key=rel)
    finally:
        os.close(parent)


def lstat_at(parent: int, name: str) -> os.stat_result:
    return os.stat(name, dir_fd=parent, follow_symlinks=False)


def _raise_if_link(exc: OSError, parent: int, name: str, key: str) -> None:
    # O_NOFOLLOW reports a link as ELOOP (Linux, macOS; EMLINK on FreeBSD); with O_DIRECTORY
    # some systems say ENOTDIR instead, so look at what the name is.
    if exc.errno not in (errno.ELOOP, errno.EMLINK, errno.ENOTDIR):
        return
    try:
        is_link = _stat.S_ISLNK(lstat_at(parent, name).st_mode)
    except OSError:
        return
    if is_link:
        raise SymlinkInBucket(key) from None


def walk(
    root: str,
    base: str = "",
    *,
    skip_name: Callable[[str], bool],
    on_error: Callable[[str, OSError], None] | None = None,
    on_skipped: Callable[[int, str], None] | None = None,
) -> Iterator[tuple[str, os.stat_result, int]]:
    """(key, lstat, folder descriptor) of every non-folder entry under `root`/`base`: regular
    files, links and anything else (the caller decides); folders are descended, links to
    folders are not. The descriptor is of the folder holding the entry, for `open_at`; it
    stays open only until the next entry is asked for.

    Names for which `skip_name` is true are left out with everything below them; each is given
    to `on_skipped(folder descriptor, name)` if set (sweeping dead writers' temps). A folder
    that vanishes while walked is skipped; any other error opening or reading one goes to
    `on_error(folder key, error)` (default: skipped too).
    """

    def failed(rel: str, exc: OSError) -> None:
        if on_error is not None:
            on_error(rel, exc)

    # Depth first, each folder opened from its parent's descriptor: one open per folder, and
    # only as many descriptors held as the tree is deep.
    stack: list[tuple[str, int, Any]] = []

    def enter(rel: str, fd: int) -> None:
        try:
            entries = os.scandir(fd)
        except OSError as exc:
            os.close(fd)
            failed(rel, exc)
            return
        stack.append((rel, fd, entries))

    try:
        enter(base, open_dir(root, base))
    except (FileNotFoundError, NotADirectoryError, SymlinkInBucket):
        return
    except OSError as exc:
        failed(base, exc)
        return
    try:
        while stack:
            rel, fd, entries = stack[-1]
            try:
                entry = next(entries, None)
            except OSError as exc:
                failed(rel, exc)
                entry = None
            if entry is None:
                stack.pop()
                entries.close()
                os.close(fd)
                continue
            if skip_name(entry.name):
                if on_skipped is not None:
                    on_skipped(fd, entry.name)
                continue
            key = f"{rel}/{entry.name}" if rel else entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    enter(key, open_at(fd, entry.name, os.O_RDONLY | os.O_DIRECTORY, key=key))
                    continue
                st = entry.stat(follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError, SymlinkInBucket):
                continue  # gone, or swapped for a file or a link since it was listed
            except OSError as exc:
                failed(key, exc)
                continue
            yield key, st, fd
    finally:
        for _, fd, entries in stack:
            entries.close()
            os.close(fd)
