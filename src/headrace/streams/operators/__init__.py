"""Stream operators over Arrow micro-batches: dedup, event-time windows, map and filter.

Every operator follows `Operator` (base.py): `process(batch) -> Emit`, `flush()`, `snapshot()`
/ `restore()` of its whole state as Arrow tables, and `watermark`. Aggregations for windows
live in `aggregations` (`from headrace.streams.operators import aggregations as agg`).
"""

from headrace.streams.operators import aggregations
from headrace.streams.operators.aggregations import Agg
from headrace.streams.operators.base import Emit, Operator
from headrace.streams.operators.dedup import Dedup
from headrace.streams.operators.hll import HyperLogLog
from headrace.streams.operators.sessions import SessionWindow
from headrace.streams.operators.transform import Filter, Map
from headrace.streams.operators.windows import (
    LATE_END,
    LATE_REASON,
    LATE_START,
    HoppingWindow,
    TumblingWindow,
)

__all__ = [
    "LATE_END",
    "LATE_REASON",
    "LATE_START",
    "Agg",
    "Dedup",
    "Emit",
    "Filter",
    "HoppingWindow",
    "HyperLogLog",
    "Map",
    "Operator",
    "SessionWindow",
    "TumblingWindow",
    "aggregations",
]
