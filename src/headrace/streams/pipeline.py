"""A stream pipeline: a log read in micro-batches through a chain of operators and sinks.

    pipe = app.pipeline("tx", stream="transactions")
    pipe.dedup("hash", ttl=600).to_archive("archive", "tx/", time_column="time")
    pipe.tumbling(60, time_column="time", aggs={"n": count()}).to_features("tx_minute")

Stages run in order on each micro-batch; a sink is a tap (records pass through it unchanged).
A window's late records go to the stream ``{pipeline}-late`` unless `late=` names another sink.
The definition is inert: `headrace.streams.runner` runs it, one runner per log partition, each
with its own copy of every operator and sink.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from headrace.errors import StreamError
from headrace.streams.log import INGEST_TIME, check_stream_name
from headrace.streams.sinks import ArchiveSink, FeatureSink, FunctionSink, Sink, StreamSink

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")


@dataclass
class Stage:
    name: str
    kind: str  # "operator" | "sink"
    template: Any  # an operator or sink, copied per partition
    late: Any = None  # a sink for a window's late records

    def build(self) -> tuple[Any, Any]:
        return copy.deepcopy(self.template), copy.deepcopy(self.late)


def _as_stream_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise StreamError(
            f"{kind} {name!r}",
            "is not a valid name",
            "use 1-80 letters, digits, '_', '-' or '.', starting with a letter or digit",
        )
    return name


class Pipeline:
    def __init__(
        self,
        name: str,
        stream: str,
        *,
        batch_size: int = 100_000,
        start: str = "earliest",
    ) -> None:
        self.name = check_name("pipeline", name)
        self.stream = check_stream_name(stream)
        if batch_size < 1:
            raise StreamError(f"pipeline {name!r}", "batch_size must be at least 1", "pass 100000")
        if start not in ("earliest", "latest"):
            raise StreamError(
                f"pipeline {name!r}", f"start={start!r} is unknown", "use 'earliest' or 'latest'"
            )
        self.batch_size = batch_size
        self.start = start
        self.stages: list[Stage] = []
        #: Streams named after the pipeline rather than by the user: `NAME-late`.
        self.derived_streams: set[str] = set()

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, stream={self.stream!r}, stages={self.stage_names})"

    @property
    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]

    @property
    def late_streams(self) -> list[str]:
        return [s.late.stream for s in self.stages if isinstance(s.late, StreamSink)]

    def _unique(self, name: str) -> str:
        base, n = name, 1
        while name in self.stage_names:
            n += 1
            name = f"{base}-{n}"
        return name

    # -- operators ----------------------------------------------------------------------------

    def apply(self, operator: Any, *, name: str | None = None, late: Sink | str | None = None):
        """Add any operator (see headrace.streams.operators.base.Operator)."""
        if not all(hasattr(operator, m) for m in ("process", "flush", "snapshot", "restore")):
            raise StreamError(
                f"pipeline {self.name!r}",
                f"{operator!r} is not an operator (needs process, flush, snapshot, restore)",
                "use one from headrace.streams.operators",
            )
        stage = self._unique(name or getattr(operator, "name", None) or type(operator).__name__)
        late_sink = self._late_sink(stage, late) if _is_window(operator) else None
        self.stages.append(Stage(stage, "operator", operator, late_sink))
        return self

    def _late_sink(self, stage: str, late: Sink | str | None) -> Sink:
        if late is None:
            derived = f"{self.name}-late"
            try:
                check_stream_name(derived)
            except StreamError:
                raise StreamError(
                    f"pipeline {self.name!r}",
                    f"the late records of its {stage} window go to stream {derived!r}, named "
                    "after the pipeline, and stream names hold only letters, digits, '_' and '-'",
                    f"rename the pipeline (e.g. {_as_stream_name(self.name)!r}), or name the late "
                    "stream yourself with late='STREAM'",
                ) from None
            self.derived_streams.add(derived)
            return StreamSink(derived, name=f"late:{stage}")
        if isinstance(late, str):
            return StreamSink(check_stream_name(late), name=f"late:{stage}")
        return late

    def dedup(self, key: str | Sequence[str], ttl: float | timedelta, *, time_column=INGEST_TIME):
        from headrace.streams.operators import Dedup

        return self.apply(Dedup(key, ttl, time_column=time_column), name="dedup")

    def map(self, fn: Callable[..., Any], *, name: str | None = None):
        from headrace.streams.operators import Map

        return self.apply(Map(fn), name=name or f"map:{getattr(fn, '__name__', 'fn')}")

    def filter(self, fn: Callable[..., Any], *, name: str | None = None):
        from headrace.streams.operators import Filter

        return self.apply(Filter(fn), name=name or f"filter:{getattr(fn, '__name__', 'fn')}")

    def tumbling(self, size: float | timedelta, *, late: Sink | str | None = None, **options):
        from headrace.streams.operators import TumblingWindow

        return self.apply(TumblingWindow(size, **options), name="tumbling", late=late)

    def hopping(
        self,
        size: float | timedelta,
        hop: float | timedelta,
        *,
        late: Sink | str | None = None,
        **options,
    ):
        from headrace.streams.operators import HoppingWindow

        return self.apply(HoppingWindow(size, hop, **options), name="hopping", late=late)

    def session(self, gap: float | timedelta, *, late: Sink | str | None = None, **options):
        from headrace.streams.operators import SessionWindow

        return self.apply(SessionWindow(gap, **options), name="session", late=late)

    # -- sinks ----------------------------------------------------------------------------------

    def sink(self, sink: Sink):
        if not all(hasattr(sink, m) for m in ("bind", "write", "commit", "flush")):
            raise StreamError(
                f"pipeline {self.name!r}",
                f"{sink!r} is not a sink (needs bind, write, commit, flush)",
                "use one from headrace.streams.sinks",
            )
        self.stages.append(Stage(self._unique(sink.name), "sink", sink))
        return self

    def to_archive(self, bucket: str, prefix: str = "", **options):
        return self.sink(ArchiveSink(bucket, prefix, **options))

    def to_features(self, group: str):
        return self.sink(FeatureSink(group))

    def to_function(self, function: str):
        return self.sink(FunctionSink(function))

    def archives(self) -> list[ArchiveSink]:
        """The archive sinks among the stages, in order."""
        return [stage.template for stage in self.stages if isinstance(stage.template, ArchiveSink)]

    def to_stream(self, stream: str):
        return self.sink(StreamSink(check_stream_name(stream)))


def _is_window(operator: Any) -> bool:
    return hasattr(operator, "watermark") and hasattr(operator, "late_count")
