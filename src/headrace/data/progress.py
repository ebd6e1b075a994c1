"""Progress bars of dataset stages on stderr, when it is a terminal (rich)."""

from __future__ import annotations

import sys
from typing import Any


class _Quiet:
    def advance(self, rows: int) -> None:
        pass


class _Bar:
    def __init__(self, owner: Progress, task: Any) -> None:
        self.owner = owner
        self.task = task

    def advance(self, rows: int) -> None:
        self.owner.bars.update(self.task, advance=1, rows=f"{rows:,} rows")


class Progress:
    """One bar per stage of one execution; nothing at all when stderr is not a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.bars: Any = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self.bars = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rows]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.bars.start()

    def stage(self, name: str, total: int | None) -> _Bar | _Quiet:
        if self.bars is None:
            return _Quiet()
        return _Bar(self, self.bars.add_task(name[:60], total=total, rows="0 rows"))

    def close(self) -> None:
        if self.bars is not None:
            self.bars.stop()
            self.bars = None
