"""Keyset paging of the console's lists: `limit`, and `cursor` from the previous page's `next`
(the sort time and id of its last row)."""

from __future__ import annotations

import math
from typing import Any

from headrace.console.http import HttpError, Request
from headrace.ledger import browse


def cursor(request: Request) -> tuple[float, str] | None:
    raw = request.arg("cursor")
    if raw is None:
        return None
    at, _, ident = raw.partition(":")
    try:
        when = float(at)
    except ValueError:
        when = math.nan
    if not math.isfinite(when):
        raise HttpError(400, f"cursor {raw!r} is not one this API returned")
    return when, ident


def page(rows: list[dict[str, Any]], limit: int, time_key: str) -> dict[str, Any]:
    last = rows[-1] if len(rows) == limit else None
    return {"items": rows, "next": f"{last[time_key]!r}:{last['id']}" if last else None}


def limit(request: Request, default: int = 50) -> int:
    value = request.integer("limit", default, low=1, high=browse.MAX_PAGE)
    assert value is not None
    return value
