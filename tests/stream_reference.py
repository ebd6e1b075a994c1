"""The stream operators' rules, one record at a time, written straight from docs/streams.md.

Deliberately simple (dicts and lists, no batching) so that it can be read against the docs; the
property tests compare the operators with it at random batch cuts and crash points.

A record is a dict with an event time `t` (int microseconds, or None), a key `k` and a value
`x`; its identity is its position in the list. Every function returns what the operator would
emit over the whole stream, the stream ended by a flush.
"""

from __future__ import annotations

from collections.abc import Iterator


def watermarks(times: list[int | None], delay: int) -> Iterator[int | None]:
    """The watermark each record is judged against: the largest time of the records before
    it, minus `delay`; None before the first record with a time."""
    newest = None
    for t in times:
        yield None if newest is None else newest - delay
        if t is not None:
            newest = t if newest is None else max(newest, t)


def aggregate(records: list[dict], members: list[int]) -> dict:
    """count, count(x), sum, mean, min, max, first and last of x (by time, then arrival)."""
    xs = [records[i]["x"] for i in members if records[i]["x"] is not None]
    ordered = sorted(members, key=lambda i: (records[i]["t"], i))
    return {
        "n": len(members),
        "nx": len(xs),
        "total": sum(xs) if xs else None,
        "avg": sum(xs) / len(xs) if xs else None,
        "lo": min(xs) if xs else None,
        "hi": max(xs) if xs else None,
        "first": records[ordered[0]]["x"],
        "last": records[ordered[-1]]["x"],
    }


def fixed_windows(
    records: list[dict], *, size: int, hop: int, grace: int, delay: int
) -> tuple[dict, set]:
    """Tumbling (hop == size) and hopping windows aligned on the epoch.

    Returns ({(key, start): (end, aggregates)}, {(record, start, end, reason)}): a record is
    late for a window when the window's end + grace <= the record's watermark."""
    open_: dict[tuple, list[int]] = {}
    emitted: dict[tuple, list[int]] = {}
    late: set[tuple] = set()
    marks = watermarks([r["t"] for r in records], delay)
    for i, (r, mark) in enumerate(zip(records, marks, strict=True)):
        if mark is not None:  # windows the watermark has passed are emitted
            for window in [w for w in open_ if w[1] + size + grace <= mark]:
                emitted[window] = open_.pop(window)
        t = r["t"]
        if t is None:
            late.add((i, None, None, "null_time"))
            continue
        start = (t // hop) * hop
        while start + size > t:  # every window that covers t
            if mark is not None and start + size + grace <= mark:
                late.add((i, start, start + size, "window_closed"))
            else:
                open_.setdefault((r["k"], start), []).append(i)
            start -= hop
    emitted.update(open_)  # flush
    return {w: (w[1] + size, aggregate(records, m)) for w, m in emitted.items()}, late


def sessions(records: list[dict], *, gap: int, grace: int, delay: int) -> tuple[dict, set]:
    """Session windows per key, same return shape as `fixed_windows`.

    Before each record, the sessions whose last + gap + grace <= its watermark are emitted.
    The record is late when it is before the end of its key's latest emitted session (missed
    window: that session, or [t, t + gap) when it is before that session's start), or when it
    touches no open session of its key and its own session [t, t + gap) would close at once.
    Otherwise it merges with every open session of its key less than `gap` away."""
    open_: dict[object, list[list]] = {}  # key -> [start, last, members]
    emitted: dict[tuple, tuple[int, list[int]]] = {}
    latest: dict[object, tuple[int, int]] = {}  # key -> (start, end) of its latest emitted
    late: set[tuple] = set()
    marks = watermarks([r["t"] for r in records], delay)

    def emit(key, session) -> None:
        start, last, members = session
        emitted[(key, start)] = (last + gap, members)
        if key not in latest or latest[key][1] < last + gap:
            latest[key] = (start, last + gap)

    for i, (r, mark) in enumerate(zip(records, marks, strict=True)):
        if mark is not None:
            for key, held in open_.items():
                for session in [s for s in held if s[1] + gap + grace <= mark]:
                    held.remove(session)
                    emit(key, session)
        t, key = r["t"], r["k"]
        if t is None:
            late.add((i, None, None, "null_time"))
            continue
        if key in latest and t < latest[key][1]:
            start, end = latest[key]
            missed = (start, end) if t >= start else (t, t + gap)
            late.add((i, *missed, "window_closed"))
            continue
        held = open_.setdefault(key, [])
        touching = [s for s in held if s[0] - gap < t < s[1] + gap]
        if not touching and mark is not None and t + gap + grace <= mark:
            late.add((i, t, t + gap, "window_closed"))
            continue
        merged = [t, t, [i]]
        for s in touching:
            held.remove(s)
            merged = [min(merged[0], s[0]), max(merged[1], s[1]), merged[2] + s[2]]
        held.append(merged)
    for key, held in open_.items():  # flush
        for session in held:
            emit(key, session)
    return {w: (end, aggregate(records, m)) for w, (end, m) in emitted.items()}, late


BEGINNING = -(2**63)  # the clock before any record with a time (microseconds)


def dedup(keys: list, times: list[int | None], ttl: int) -> list[bool]:
    """Which records dedup keeps. A key is held while its expiry is after the clock, the
    newest time of the records before; a record is dropped when its key is held and its time
    is before the expiry, else kept with expiry = time + ttl. A record without a time is
    judged at the clock (at BEGINNING before any time) and does not move it."""
    expiry: dict = {}
    keep = []
    clock = None
    for key, timed in zip(keys, times, strict=True):
        t = timed if timed is not None else BEGINNING if clock is None else clock
        held = key in expiry and (clock is None or expiry[key] > clock)
        if held and t < expiry[key]:
            keep.append(False)
        else:
            expiry[key] = t + ttl
            keep.append(True)
        if timed is not None:
            clock = t if clock is None else max(clock, t)
    return keep
