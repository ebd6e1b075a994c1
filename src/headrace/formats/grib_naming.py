"""Stable, unique column names for the fields of one GRIB file.

A parameter name alone is not unique (the same parameter at several levels, steps or members),
and names that always carry every key are long and change between files of one model run (the
step of every field). So a key joins a name only when it varies among the file's fields that
have the same parameter:

    {param}[_{typeOfLevel}_{level}][_step_{step}][_number_{number}]

* ``param`` is ecCodes' shortName; an unknown parameter is ``unknown_{discipline}_{category}_
  {number}`` (GRIB2) or ``unknown_{table2Version}_{indicatorOfParameter}`` (GRIB1).
* ``level`` is ecCodes' level, or ``top-bottom`` for layers (``t_depthBelowLandLayer_0.1-0.4``).
* ``step`` is the end step in hours, with ``m``/``s`` suffixes when not whole hours and
  ``start-end`` for ranges (``tp_step_0-6``, ``2t_step_90m``).
* ``number`` (ensemble member) counts as varying only with 2+ members; fields without one get no
  ``_number`` part.

Names still shared by several fields get, in this order and each only if it differs within that
group: ``_{stepType}``, ``_ref_{YYYYmmddTHHMM}`` (reference time), ``_valid_{YYYYmmddTHHMM}``,
``_param_{paramId}``, ``_edition_{edition}``; then ``_2``, ``_3``... in file order for the
fields after the first. ``lat`` and ``lon`` are reserved. Nothing is ever overwritten.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from .grib_read import GribField

RESERVED = frozenset({"lat", "lon"})


def level_label(meta: dict[str, Any]) -> str:
    top, bottom = meta["topLevel"], meta["bottomLevel"]
    if top != bottom:
        return f"{meta['level']}-{bottom}"
    return str(meta["level"])


def _level_part(field: GribField) -> str:
    return f"_{field.meta['typeOfLevel']}_{level_label(field.meta)}"


def _step_part(field: GribField) -> str:
    return f"_step_{field.meta['step']}"


def _number_part(field: GribField) -> str:
    number = field.meta["number"]
    return "" if number is None else f"_number_{number}"


def _compact_time(iso: str) -> str:
    return iso[:16].replace("-", "").replace(":", "")  # 2017-01-01T12:00:00Z -> 20170101T1200


_PARAMETER_PARTS: tuple[Callable[[GribField], str], ...] = (_level_part, _step_part, _number_part)

_TIE_BREAKERS: tuple[Callable[[GribField], str], ...] = (
    lambda f: f"_{f.meta['stepType']}",
    lambda f: f"_ref_{_compact_time(f.meta['referenceTime'])}",
    lambda f: f"_valid_{_compact_time(f.meta['validTime'])}",
    lambda f: f"_param_{f.meta['paramId']}",
    lambda f: f"_edition_{f.meta['edition']}",
)


def column_names(fields: Sequence[GribField]) -> list[str]:
    """One unique name per field, in field order; deterministic for a given file."""
    names = [field.base_name for field in fields]
    for part in _PARAMETER_PARTS:
        names = _extend_shared(names, fields, part, by=[f.base_name for f in fields])
    for part in _TIE_BREAKERS:
        names = _extend_shared(names, fields, part, by=names)
    return _number_duplicates(names)


def _extend_shared(
    names: list[str],
    fields: Sequence[GribField],
    part: Callable[[GribField], str],
    by: Sequence[str],
) -> list[str]:
    """Append ``part`` to the names of each group (same ``by``) in which it takes 2+ values."""
    groups: dict[str, list[int]] = defaultdict(list)
    for position, key in enumerate(by):
        groups[key].append(position)
    result = list(names)
    for positions in groups.values():
        if len(positions) < 2:
            continue
        labels = [part(fields[p]) for p in positions]
        if len(set(labels) - {""}) > 1:
            for position, label in zip(positions, labels, strict=True):
                result[position] += label
    return result


def _number_duplicates(names: list[str]) -> list[str]:
    taken = set(RESERVED)
    seen_count: dict[str, int] = defaultdict(int)
    result = []
    for name in names:
        candidate = name
        while candidate in taken:
            seen_count[name] += 1
            candidate = f"{name}_{seen_count[name] + 1}"
        taken.add(candidate)
        result.append(candidate)
    return result
