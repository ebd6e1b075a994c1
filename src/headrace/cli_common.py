"""What every `headrace` command group shares: the project option, settings, ledger, times."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

from headrace.jsontext import JsonInputError, parse_json


def _help_value_names() -> None:
    """typer 0.2x's rich help gives every value its Python type: `--function <str>`,
    `ids <list[str]>`, and flags too (`--json <bool>`) though a flag takes no value. Show a
    text value by its parameter's name, as click's plain help does (`--function FUNCTION`,
    `IDS...`), and a flag with none; other types (`<int>`, `<path>`) say something and stay.
    (Guarded: a typer without this method is left alone.)"""
    from typer.core import TyperArgument, TyperOption

    for cls in (TyperOption, TyperArgument):
        original = getattr(cls, "display_type_rich", None)
        if original is None or getattr(original, "_headrace_names", False):
            continue

        def display_type_rich(
            self: Any, ctx: typer.Context, original: Any = original
        ) -> str | None:
            if getattr(self, "is_flag", False) or getattr(self, "count", False):
                return None
            if self.metavar is not None and self.param_type_name == "argument":
                return None  # the metavar is the argument's name column already
            shown = original(self, ctx)
            if shown in ("<str>", "<list[str]>", "<list[str]>...") and self.name:
                return self.name.upper() + ("..." if "list" in shown else "")
            return shown

        display_type_rich._headrace_names = True  # type: ignore[attr-defined]
        cls.display_type_rich = display_type_rich  # type: ignore[method-assign]


_help_value_names()

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


def settings(*, new_home: bool = False):  # type: ignore[no-untyped-def]
    """The project's settings; a one-line error outside a project, so that a typo in `-C` or a
    command run in the wrong folder does not create a fresh, empty `.headrace` there.
    `new_home`: the command may start a home named by HEADRACE_HOME alone (a job submitted
    outside any project); reading commands refuse one that does not exist."""
    from headrace.config import load_settings

    check_project(new_home=new_home)
    return load_settings(state["project"])


def check_project(*, new_home: bool = False) -> Path:
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
    home = os.environ.get("HEADRACE_HOME")
    only_home = not (folder / CONFIG_FILE).is_file() and not any(
        os.environ.get(v) for v in ("HEADRACE_APP", "HEADRACE_LEDGER")
    )
    if home and only_home and not new_home and not (folder / home).exists():
        # the home alone names the project here: a missing one is a typo, not a project to
        # create (a folder with a headrace.toml, or an app setting, gets its home on first use)
        raise ConfigError(
            f"HEADRACE_HOME {home}",
            f"does not exist, and {folder} has no {CONFIG_FILE}",
            "check the path, or run the command in a project folder (`headrace init` creates one)",
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


def json_input(text: str, option: str) -> Any:
    """An option's JSON given inline or, as the AWS CLI takes it, as `file://PATH` (the file's
    text; a relative PATH is from the current directory)."""
    if not text.startswith("file://"):
        return json_option(text, option)
    path = Path(text.removeprefix("file://")).expanduser()
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise typer.BadParameter(
            f"{option} file://{path}: cannot read it ({reason}); give a UTF-8 JSON file"
        ) from None
    return json_option(content, f"{option} file://{path}")


def when(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def count(n: int, noun: str) -> str:
    """ "1 attempt", "2 attempts", "1,024 rows": a number and its noun, singular for one."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def table(*columns: str, wrap: tuple[str, ...] = (), **options: Any) -> RecordTable:
    """A table for the terminal: see RecordTable. `wrap`: the free-text columns (errors,
    details), the only ones that may wrap; every other cell (ids, keys, statuses, times, URLs)
    is printed whole on one line so that it can be read and copied."""
    return RecordTable(*columns, wrap=wrap, **options)


class RecordTable(Table):
    """A rich table that never cuts or wraps an id, key, status, time or URL, and keeps its
    free-text columns at least READABLE characters wide, wrapped at word boundaries (a word
    longer than the column folds). When the terminal is too narrow for that, each row is
    printed as a block of "column  value" lines instead, so nothing is cut mid-word."""

    READABLE = 30

    def __init__(self, *columns: str, wrap: tuple[str, ...] = (), **options: Any) -> None:
        super().__init__(**options)
        for name in columns:
            if name in wrap:
                self.add_column(name, overflow="fold")
            else:
                self.add_column(name, no_wrap=True, overflow="ignore")
        self._wrap = set(wrap)

    def _fits(self, console: Console, options: ConsoleOptions) -> bool:
        needed = self._extra_width
        for column in self.columns:
            widest = self._measure_column(console, options, column).maximum
            if column.header in self._wrap:
                padding = self._get_padding_width(column._index)
                widest = min(widest, self.READABLE + padding)
            needed += widest
        return needed <= options.max_width

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if not self.columns or self._fits(console, options):
            yield from super().__rich_console__(console, options)
            return
        if self.title:
            yield Text.from_markup(self.title) if isinstance(self.title, str) else self.title
        blocks = Table.grid(padding=(0, 2))
        blocks.add_column(no_wrap=True, style="bold")
        blocks.add_column(overflow="fold")  # only a value wider than the terminal folds
        cells = [list(column.cells) for column in self.columns]
        for index in range(self.row_count):
            if index:
                blocks.add_row("", "")
            for column, column_cells in zip(self.columns, cells, strict=True):
                blocks.add_row(str(column.header), column_cells[index])
        yield blocks


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
