"""`headrace models`: push, list, show, alias, roll back and delete versions of models."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from headrace import cli_common
from headrace.cli_common import Json, group_project

models_app = typer.Typer(
    help="The model registry: versions and aliases of models in the object store.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)

models_app.callback()(group_project)


def _registry():  # type: ignore[no-untyped-def]
    from headrace.models import ModelRegistry

    return ModelRegistry.from_settings(cli_common.settings())


def _pairs(pairs: list[str] | None, option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{option} {pair!r}: write NAME=VALUE")
        out[name] = value
    return out


def _metrics(pairs: list[str] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in _pairs(pairs, "--metric").items():
        try:
            out[name] = float(value)
        except ValueError:
            raise typer.BadParameter(
                f"--metric {name}={value!r}: the value is not a number"
            ) from None
    return out


def _json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def _show_version(v: Any) -> None:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("model", f"{v.name}:{v.version}"),
        ("aliases", ", ".join(v.aliases) or "-"),
        ("format", v.format),
        ("file", v.filename),
        ("size", cli_common.count(v.size, "byte")),
        ("sha256", v.sha256),
        ("framework", v.framework or "-"),
        ("libraries", ", ".join(f"{k} {val}" for k, val in v.libraries.items())),
        ("metrics", ", ".join(f"{k}={val:g}" for k, val in v.metrics.items()) or "-"),
        ("tags", ", ".join(f"{k}={val}" for k, val in v.tags.items()) or "-"),
        ("inputs", _inputs(v.signature)),
        ("description", v.description or "-"),
        ("created", f"{cli_common.when(v.created_at)} by {v.created_by}"),
        ("artifact", v.uri),
    ]
    for key, value in rows:
        table.add_row(key, escape(value))
    console.print(table)


def _inputs(signature: dict[str, Any] | None) -> str:
    if not signature or not signature.get("inputs"):
        return "-"
    columns = signature["inputs"]
    shown = ", ".join(c["name"] + (f" {c['type']}" if c.get("type") else "") for c in columns[:8])
    return shown + (f" ... ({len(columns)} columns)" if len(columns) > 8 else "")


@models_app.command()
def push(
    name: Annotated[str, typer.Argument(help="Model name.")],
    file: Annotated[
        Path,
        typer.Argument(
            help="The saved model: a .joblib/.pkl file (loads as the object), another file or"
            " a folder (loads as a local path)."
        ),
    ],
    alias: Annotated[str | None, typer.Option(help="Point this alias at the new version.")] = None,
    description: Annotated[str, typer.Option(help="What this version is.")] = "",
    metric: Annotated[
        list[str] | None, typer.Option("--metric", "-m", help="NAME=NUMBER, e.g. accuracy=0.97.")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="NAME=TEXT.")] = None,
    framework: Annotated[
        str | None, typer.Option(help="Framework to record (default: found from the model).")
    ] = None,
    as_json: Json = False,
) -> None:
    """Store a new version of a model from a file or folder; prints NAME:VERSION."""
    metrics = _metrics(metric)
    tags = _pairs(tag, "--tag")
    registry = _registry()
    with err.status(f"pushing {escape(str(file))} as {escape(name)}"):
        version = registry.push(
            name,
            path=file,
            alias=alias,
            description=description,
            metrics=metrics,
            tags=tags,
            framework=framework,
        )
    if as_json:
        _json(version.to_dict())
        return
    console.print(version.ref, markup=False, highlight=False)
    err.print(
        f"{cli_common.count(version.size, 'byte')}, sha256 {version.sha256}"
        + (f", alias {escape(alias)}" if alias else ""),
        soft_wrap=True,
    )


@models_app.command("list")
def list_models(
    name: Annotated[str | None, typer.Argument(help="Only this model's versions.")] = None,
    as_json: Json = False,
) -> None:
    """Models with their latest version and aliases; with NAME, that model's versions."""
    registry = _registry()
    if name is None:
        summaries = registry.models()
        if as_json:
            _json([s.__dict__ for s in summaries])
            return
        table = Table()
        for col in ("model", "versions", "latest", "aliases", "updated"):
            table.add_column(col)
        for s in summaries:
            table.add_row(
                escape(s.name),
                str(s.versions),
                "-" if s.latest is None else str(s.latest),
                escape(", ".join(f"{a}→{v}" for a, v in s.aliases.items()) or "-"),
                cli_common.when(s.updated_at),
            )
        console.print(table)
        return
    found = registry.versions(name)
    if as_json:
        _json([v.to_dict() for v in found])
        return
    table = Table(title=escape(name))
    for col in ("version", "aliases", "format", "size", "framework", "metrics", "created"):
        table.add_column(col)
    for v in found:
        table.add_row(
            str(v.version),
            escape(", ".join(v.aliases) or "-"),
            v.format,
            str(v.size),
            escape(v.framework or "-"),
            escape(", ".join(f"{k}={val:g}" for k, val in v.metrics.items()) or "-"),
            cli_common.when(v.created_at),
        )
    console.print(table)


@models_app.command()
def show(
    ref: Annotated[str, typer.Argument(help="NAME (latest), NAME:VERSION or NAME@ALIAS.")],
    as_json: Json = False,
) -> None:
    """What the registry records of one version."""
    version = _registry().resolve(ref)
    if as_json:
        _json(version.to_dict())
    else:
        _show_version(version)


@models_app.command()
def alias(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="e.g. production.")],
    version: Annotated[int | None, typer.Argument(help="The version it points at.")] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Remove the alias.")] = False,
) -> None:
    """Point ALIAS at VERSION (the move is recorded), or remove it with --remove."""
    registry = _registry()
    if remove == (version is not None):
        raise typer.BadParameter("give a VERSION to point the alias at, or --remove")
    if remove:
        move = registry.remove_alias(name, alias_name)
        err.print(f"{escape(name)}@{escape(alias_name)} removed (was version {move.previous})")
        return
    assert version is not None
    _point(registry, name, alias_name, version)


def _point(registry: Any, name: str, alias_name: str, version: int) -> None:
    move = registry.set_alias(name, alias_name, version)
    if move is None:
        err.print(f"{escape(name)}@{escape(alias_name)} already points at version {version}")
    else:
        was = f" (was {move.previous})" if move.previous is not None else ""
        err.print(f"{escape(name)}@{escape(alias_name)} → version {version}{was}")


@models_app.command()
def promote(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int, typer.Argument(help="The version to serve.")],
    alias_name: Annotated[str, typer.Option("--alias", help="The alias to move.")] = "production",
) -> None:
    """Point ALIAS (production) at VERSION: `headrace serve` rolls its replicas over to it, and
    moves the alias back by itself when the new version fails its health check or answers
    with errors."""
    _point(_registry(), name, alias_name, version)


@models_app.command()
def rollback(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias_name: Annotated[
        str, typer.Argument(metavar="[ALIAS]", help="The alias to move back.")
    ] = "production",
) -> None:
    """Move ALIAS (production) back to the version it pointed at before its last move."""
    move = _registry().rollback(name, alias_name)
    err.print(f"{escape(name)}@{escape(alias_name)} → version {move.version} (was {move.previous})")


@models_app.command()
def history(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias_name: Annotated[
        str | None, typer.Argument(metavar="[ALIAS]", help="Only this alias (default: all).")
    ] = None,
    as_json: Json = False,
) -> None:
    """Every move of the model's aliases, oldest first."""
    moves = _registry().alias_history(name, alias_name)
    if as_json:
        _json([m.__dict__ for m in moves])
        return
    table = Table()
    for col in ("when", "alias", "from", "to", "by"):
        table.add_column(col)
    for m in moves:
        table.add_row(
            cli_common.when(m.moved_at),
            escape(m.alias),
            "-" if m.previous is None else str(m.previous),
            "(removed)" if m.version is None else str(m.version),
            escape(m.moved_by),
        )
    console.print(table)


@models_app.command()
def delete(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION")],
) -> None:
    """Delete one version and its artifact (refused while an alias points at it)."""
    from headrace.models import parse_ref

    parsed = parse_ref(ref)
    if parsed.version is None:
        raise typer.BadParameter(f"{ref!r}: name the version to delete, as NAME:VERSION")
    gone = _registry().delete_version(parsed.name, parsed.version)
    err.print(f"deleted {escape(gone.ref)} ({gone.size} bytes)")
