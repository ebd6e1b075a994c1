"""Settings of dataset execution (Ray's `DataContext`), and the engine that runs plans."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from headrace.config import load_settings
from headrace.data.engine import Engine
from headrace.data.engine_local import LocalEngine
from headrace.data.engine_ray import RayEngine
from headrace.data.errors import DatasetError


def _default_memory() -> int:
    import psutil

    return psutil.virtual_memory().total


def _default_engine() -> str:
    """HEADRACE_DATA_ENGINE, else `data_engine` in the project's headrace.toml, else local."""
    return load_settings().data_engine


@dataclass
class DataContext:
    engine: str = field(default_factory=lambda: _default_engine())
    """'local', 'ray' or 'ray://head:10001'."""
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
    engine = context.engine
    if engine == "local":
        return LocalEngine(context)
    if engine == "ray":
        return RayEngine(context)
    if isinstance(engine, str) and engine.startswith("ray://"):
        return RayEngine(context, address=engine)
    raise DatasetError(
        f"engine {engine!r}",
        "is not an engine headrace has",
        "use 'local', 'ray' or 'ray://head:10001' (DataContext.get_current().engine, "
        "HEADRACE_DATA_ENGINE or data_engine in headrace.toml)",
    )
