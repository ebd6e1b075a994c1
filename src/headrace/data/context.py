"""Settings of dataset execution (Ray's `DataContext`), and the engine that runs plans."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from headrace.data.engine import Engine
from headrace.data.engine_local import LocalEngine
from headrace.data.errors import DatasetError


def _default_memory() -> int:
    import psutil

    return psutil.virtual_memory().total


@dataclass
class DataContext:
    engine: str = "local"
    num_cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    """Worker processes of the shared task pool."""
    target_block_rows: int = 1 << 20
    """Rows per block that sort, shuffle and in-memory sources cut their output into."""
    sort_memory_bytes: int = field(default_factory=lambda: _default_memory() // 4)
    """A sort, shuffle or repartition whose input is larger than this spills to disk."""
    spill_dir: str = ""
    """Where spilled data goes; default a folder in the system temp folder."""
    enable_progress_bars: bool = True
    """Progress bars on stderr when it is a terminal."""

    _current = None

    @classmethod
    def get_current(cls) -> DataContext:
        if cls._current is None:
            cls._current = cls()
        return cls._current


def get_engine(context: DataContext | None = None) -> Engine:
    context = context or DataContext.get_current()
    if context.engine == "local":
        return LocalEngine(context)
    raise DatasetError(
        f"engine {context.engine!r}",
        "is not available",
        "use engine='local' (DataContext.get_current().engine)",
    )
