"""Streams: durable partitioned logs of Arrow batches, sources, operators, sinks and pipelines.

- the log: `open_log(url, name, partitions=...)` (embedded, Redis Streams, NATS JetStream);
- sources: `HttpPoller`, `ObjectSource` (and a local `Simulator` of a transactions API);
- operators: `headrace.streams.operators` (dedup, tumbling/hopping/session windows, map, filter);
- sinks: `ArchiveSink`, `FeatureSink`, `StreamSink`, `FunctionSink`, `MemorySink`;
- `Pipeline` (built with `app.pipeline(...)`), run per partition by `PartitionRunner`.
"""

from headrace.streams.log import Appended, StreamLog, key_partitions, open_log
from headrace.streams.pipeline import Pipeline
from headrace.streams.runner import PartitionRunner
from headrace.streams.sinks import (
    ArchiveSink,
    FeatureSink,
    FunctionSink,
    MemorySink,
    StreamSink,
)
from headrace.streams.source_files import ObjectSource
from headrace.streams.source_http import HttpPoller

__all__ = [
    "Appended",
    "ArchiveSink",
    "FeatureSink",
    "FunctionSink",
    "HttpPoller",
    "MemorySink",
    "ObjectSource",
    "PartitionRunner",
    "Pipeline",
    "StreamLog",
    "StreamSink",
    "key_partitions",
    "open_log",
]
