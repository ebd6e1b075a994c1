"""What every `headrace` command group shares: the project option, settings, ledger, times."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from headrace.jsontext import JsonInputError, parse_json


def _flags_without_a_type() -> None:
    """typer 0.2x's rich help gives every option its value type, flags too (`--help <bool>`,
    `--json <bool>`), though a flag takes no value; click's plain help leaves it out. Do the
    same in the rich help. (Guarded: a typer without this method is left alone.)"""
    from typer.core import TyperOption

    original = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, "_headrace_flags", False):
        return

    def display_type_rich(self: TyperOption, ctx: typer.Context) -> str | None:
        if self.is_flag or self.count:
            return None
        return original(self, ctx)

    display_type_rich._headrace_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_without_a_type()

#: The project folder chosen with `-C` on `headrace` or on a command group.
state: dict[str, Any] = {"project": None}

Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Project = Annotated[
    Path | None,
    typer.Option("--project", "-C", help="Project folder (default: $HEADRACE_PROJECT or here)."),
]


def group_project(project: Project = None) -> None:
    """A command group's own `-C`; without one, `headrace -C dir group …` still applies."""
    if project is not None:
        state["project"] = project


def settings():  # type: ignore[no-untyped-def]
    """The project's settings; a one-line error outside a project, so that a typo in `-C` or a
    command run in the wrong folder does not create a fresh, empty `.headrace` there."""
    from headrace.config import load_settings

    check_project()
    return load_settings(state["project"])


def check_project() -> Path:
    """The project folder, or ConfigError: the folder does not exist, or has no headrace.toml and
    no HEADRACE_APP, HEADRACE_HOME or HEADRACE_LEDGER says where the project's state is."""
    import os

    from headrace.config import CONFIG_FILE, find_project
    from headrace.errors import ConfigError

    given = state["project"] or os.environ.get("HEADRACE_PROJECT") or "."
    folder = Path(given).resolve()
    if not folder.is_dir():
        raise ConfigError(
            f"project folder {given}",
            "does not exist" if not folder.exists() else "is not a folder",
            "give a project folder with -C, or create one with `headrace init FOLDER`",
        )
    if find_project(folder) is None:
        raise ConfigError(
            f"{folder}",
            f"is not a headrace project (no {CONFIG_FILE})",
            "run the command in a project folder or pass -C PROJECT; `headrace init` creates one",
        )
    return folder


def ledger(loaded=None):  # type: ignore[no-untyped-def]
    """The project's ledger; ``loaded``: the settings, when the caller has them already."""
    from headrace.ledger import Ledger

    loaded = loaded or settings()
    return Ledger(loaded.ledger_url, sync=loaded.ledger_sync)


def json_option(text: str, option: str) -> Any:
    """The JSON value of a command-line option, or a usage error naming the option and the
    problem (syntax, or a limit such as nesting depth)."""
    # Python turns bytes of an argument that are not UTF-8 into lone surrogates (\udcff):
    # refuse them here, or they end up in the ledger and in every JSON written from it
    bad = next((i for i, ch in enumerate(text) if "\udc80" <= ch <= "\udcff"), None)
    if bad is not None:
        raise typer.BadParameter(
            f"{option} is not valid UTF-8 (byte 0x{ord(text[bad]) - 0xDC00:02x} at character "
            f"{bad + 1}): pass UTF-8 text"
        )
    try:
        return parse_json(text)
    except JsonInputError as exc:
        raise typer.BadParameter(f"{option} {exc}") from None


def when(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def table(*columns: str, keep: tuple[str, ...] = (), **options: Any):  # type: ignore[no-untyped-def]
    """A rich table whose cells wrap (long words fold) rather than end in "…": an error or a
    path cut at the terminal's width loses the part that says what to do. Columns in `keep`
    (names, ids, statuses: short) are never wrapped, so the narrowing falls on the others."""
    from rich.table import Table

    out = Table(**options)
    for name in columns:
        if name in keep:
            out.add_column(name, no_wrap=True)
        else:
            out.add_column(name, overflow="fold")
    return out


def triggered_by(row: dict[str, Any]) -> str | None:
    """ "bucket/key" of the object whose creation queued an invocation (its S3 notification
    payload), or None for invocations queued another way."""
    import json
    from urllib.parse import unquote_plus

    payload = row.get("payload")
    if isinstance(payload, str):
        if '"aws:s3"' not in payload:
            return None
        try:
            payload = json.loads(payload)
        except ValueError:
            return None
    try:
        s3 = payload["Records"][0]["s3"]  # type: ignore[index]
        # S3 notifications URL-encode the key (spaces as '+'), as Lambda handlers receive it
        return f"{s3['bucket']['name']}/{unquote_plus(s3['object']['key'])}"
    except (KeyError, IndexError, TypeError):
        return None
