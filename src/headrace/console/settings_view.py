"""Every setting with its value and where the value came from (the Overview's table)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import fields
from typing import Any

from headrace.config import _ENV, CONFIG_FILE, Settings

_VARIABLE = {name: var for var, name in _ENV.items()}


def settings_with_origins(settings: Settings) -> list[dict[str, Any]]:
    """One row per setting: name, value, its environment variable, and its origin — the
    variable, `headrace.toml`, `arguments` (a command-line option) or `default`.

    Origins follow `load_settings`' precedence; a value that differs from what the variable
    and the file say came from the command line."""
    path = settings.project_dir / CONFIG_FILE
    try:
        data = tomllib.loads(path.read_text()) if path.exists() else {}
    except (OSError, tomllib.TOMLDecodeError):
        data = {}
    in_file = data.get("headrace", data) if isinstance(data, dict) else {}
    defaults = Settings(project_dir=settings.project_dir)
    rows = []
    for f in fields(Settings):
        if f.name == "project_dir":
            continue
        value = getattr(settings, f.name)
        var = _VARIABLE.get(f.name)
        if var and var in os.environ:
            origin = f"${var}"
        elif f.name in in_file:
            origin = str(path)
        elif value != getattr(defaults, f.name) and f.name != "home":
            origin = "arguments"
        else:
            origin = "default"
        rows.append(
            {
                "name": f.name,
                "value": str(value) if value is not None else None,
                "variable": var,
                "origin": origin,
            }
        )
    return rows
