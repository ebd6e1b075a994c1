"""`headrace ls`, `cat` and `get`: the project's buckets from the command line; and the warning
`put` gives when no trigger listens where an object lands."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from headrace import cli_common
from headrace.errors import ObjectNotFound

console = Console()
err = Console(stderr=True)


def _store():  # type: ignore[no-untyped-def]
    from headrace.storage import ObjectStore

    return ObjectStore(cli_common.settings().storage_url)


def _split(path: str, *, key_required: bool) -> tuple[str, str]:
    bucket, _, key = path.partition("/")
    if not bucket or (key_required and not key):
        raise typer.BadParameter(f"{path!r} is not BUCKET/KEY: write e.g. landing/docs/a.txt")
    return bucket, key


@contextmanager
def _cli_fix_for_missing_objects(name: str, key: str) -> Iterator[None]:
    """The store's "not found" says how to list a bucket from Python; here, name the command."""
    try:
        yield
    except ObjectNotFound as exc:
        folder = f"{name}/{key.rpartition('/')[0]}".rstrip("/")
        raise ObjectNotFound(
            exc.subject,
            exc.reason,
            f"check the key with `headrace ls {folder}`, or write it with `headrace put`",
        ) from None


def _bucket(store: Any, name: str) -> Any:
    try:
        return store.bucket(name, create=False)
    except ObjectNotFound:
        known = ", ".join(store.list_buckets()) or "none"
        raise typer.BadParameter(f"no bucket {name!r} (buckets: {known})") from None


def ls(
    path: Annotated[
        str | None,
        typer.Argument(
            metavar="BUCKET[/PREFIX]",
            help="BUCKET or BUCKET/PREFIX to list (default: the buckets).",
        ),
    ] = None,
    as_json: cli_common.Json = False,
) -> None:
    """List the buckets, or the objects of a bucket under a prefix."""
    import json

    store = _store()
    if path is None:
        names = store.list_buckets()
        if as_json:
            sys.stdout.write(json.dumps(names) + "\n")
        for name in names if not as_json else ():
            console.print(name, markup=False, highlight=False)
        return
    name, prefix = _split(path, key_required=False)
    objects = _bucket(store, name).list(prefix)
    if as_json:
        rows = [
            {"key": o.key, "size": o.size, "etag": o.etag, "last_modified": o.last_modified}
            for o in objects
        ]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    if not objects and prefix:
        err.print(f"no objects under {name}/{prefix}", markup=False)
        raise typer.Exit(1)
    table = cli_common.table("key", "size", "modified", "etag")
    for o in objects:
        table.add_row(escape(o.key), f"{o.size:,}", cli_common.when(o.last_modified), o.etag)
    console.print(table)


def cat(
    path: Annotated[str, typer.Argument(metavar="BUCKET/KEY", help="BUCKET/KEY of the object.")],
) -> None:
    """Write an object's bytes to standard output."""
    name, key = _split(path, key_required=True)
    with _cli_fix_for_missing_objects(name, key), _bucket(_store(), name).open(key) as fh:
        while chunk := fh.read(1 << 20):
            sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()


def get(
    path: Annotated[str, typer.Argument(metavar="BUCKET/KEY", help="BUCKET/KEY of the object.")],
    dest: Annotated[
        Path | None,
        typer.Argument(help="Local file or folder to write (default: the key's file name here)."),
    ] = None,
) -> None:
    """Download an object to a local file."""
    name, key = _split(path, key_required=True)
    target = dest or Path(key.rsplit("/", 1)[-1])
    if target.is_dir():
        target = target / key.rsplit("/", 1)[-1]
    bucket = _bucket(_store(), name)
    try:
        with _cli_fix_for_missing_objects(name, key):
            bucket.get_file(key, target)
    except OSError as exc:  # no such folder, no permission, a file where a folder should be …
        err.print(
            f"[red]error:[/] cannot write {escape(str(target))}: {escape(exc.strerror or str(exc))}"
            f" (fix: give a file or folder in an existing folder you can write to)",
            soft_wrap=True,
        )
        raise typer.Exit(2) from None
    console.print(f"{path} -> {target}", markup=False, highlight=False)


def warn_if_nothing_listens(settings: Any, bucket: str, keys: list[str]) -> None:
    """A put where no trigger listens is most often a typo in the bucket or key: say so."""
    if not keys or not settings.app:
        return
    from headrace.app import load_app
    from headrace.errors import HeadraceError
    from headrace.server.triggers import triggers_for

    try:
        application = load_app(settings)
    except HeadraceError as exc:  # the upload is done; a broken app is `up`'s to report
        err.print(f"warning: could not check the triggers: {exc}", markup=False, soft_wrap=True)
        return
    silent = [k for k in keys if not triggers_for(application, bucket, k)]
    if not silent:
        return
    watched = application.buckets
    why = (
        f"the triggers on bucket {bucket!r} do not match "
        + ("this key" if len(silent) == 1 else f"{len(silent)} of these keys")
        + " (check their prefix and suffix)"
        if bucket in watched
        else f"no trigger watches bucket {bucket!r} (watched: {', '.join(watched) or 'none'})"
    )
    err.print(
        f"warning: nothing runs for {bucket}/{silent[0]}: {why}", markup=False, soft_wrap=True
    )


def register(app: typer.Typer) -> None:
    app.command()(ls)
    app.command()(cat)
    app.command()(get)
