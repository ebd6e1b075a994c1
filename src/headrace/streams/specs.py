"""What an app declares about streams: the logs, the sources that feed the bus, schedules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from headrace.errors import StreamError
from headrace.streams.dead_letters import RETENTION_SECONDS as ERRORS_RETENTION_SECONDS
from headrace.streams.dead_letters import error_stream_name


@dataclass(frozen=True)
class StreamSpec:
    name: str
    partitions: int = 1
    key: str | None = None  # column that routes records to partitions
    retention_seconds: float | None = 7 * 86400
    retention_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise StreamError(f"stream {self.name!r}", "needs at least one partition", "pass 1")
        if self.partitions > 1 and not self.key:
            raise StreamError(
                f"stream {self.name!r}",
                f"has {self.partitions} partitions but no key to route records by",
                "pass key= (a record field), or use one partition",
            )

    def open(self, streams_url: str) -> Any:
        """The declared stream's log at `streams_url` (a folder, redis:// or nats://)."""
        from headrace.streams.log import open_log

        return open_log(
            streams_url,
            self.name,
            partitions=self.partitions,
            retention_seconds=self.retention_seconds,
            retention_bytes=self.retention_bytes,
        )


@dataclass
class SourceSpec:
    """A source whose records are published to the bus as envelopes.

    `event_source` and `detail_type` fill the envelope; `time_field` (epoch seconds, ISO text or
    a timestamp) gives its `time`, `id_field` its `id`.
    """

    name: str
    source: Any  # headrace.streams.sources.Source
    event_source: str
    detail_type: str
    time_field: str | None = None
    id_field: str | None = None

    @property
    def errors_stream(self) -> str:
        """The stream of records this source could not deliver (headrace.streams.dead_letters)."""
        return error_stream_name(self.name)

    def errors_stream_spec(self) -> StreamSpec:
        return StreamSpec(self.errors_stream, retention_seconds=ERRORS_RETENTION_SECONDS)


@dataclass(frozen=True)
class ScheduleSpec:
    """Invoke `function` with `payload` every `every` seconds (once per period, across restarts)."""

    name: str
    every: float
    function: str
    payload: dict[str, Any] = field(default_factory=dict)
