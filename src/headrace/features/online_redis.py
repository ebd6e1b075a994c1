"""Redis online store: one hash per entity, `{prefix}:{group}:{key}`, holding the features and
the event time (`__event_time`, µs since the epoch).

The newer-only upsert runs as a Lua script per entity, so the compare and the replace are one
atomic step even with several writers. A batch goes out as one pipeline; a batch written with
(writer, sequence) is a MULTI/EXEC transaction that also records the sequence in the hash
`{prefix}:{group}` (field = writer), so it is applied whole or not at all and a retry of an
applied batch is skipped. With a TTL the hash expires at event time + ttl.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from headrace.errors import FeatureStoreError
from headrace.features.group import FeatureGroup
from headrace.features.online import (
    TIME_COLUMN,
    Key,
    Record,
    column_values,
    decode_list,
    event_times_us,
    newest_per_entity,
    scalar_decoder,
)

# KEYS[1] entity hash; ARGV[1] event time (µs); ARGV[2] expire-at (ms, 0 = never);
# ARGV[3..] field, value pairs (null features are left out).
UPSERT_NEWER = """
local current = redis.call('HGET', KEYS[1], '__event_time')
if current and tonumber(current) > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '__event_time', ARGV[1], unpack(ARGV, 3))
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIREAT', KEYS[1], ARGV[2]) end
return 1
"""

# KEYS[1] the group's writer hash; ARGV[1] writer; ARGV[2] sequence: keep the highest.
SET_SEQUENCE = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and tonumber(current) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

PIPELINE_CHUNK = 5_000  # entities per round trip when no transaction is needed


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace(":", "\\:")


def _redis_decoder(t: pa.DataType) -> Callable[[bytes], Any]:
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        decode = decode_list(t.value_type)
        return lambda b: decode(b.decode())
    if pa.types.is_boolean(t):
        return lambda b: b == b"1"
    if pa.types.is_integer(t):
        return int
    if pa.types.is_floating(t):
        return float
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return lambda b: b.decode()
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return bytes
    scalar = scalar_decoder(t)  # timestamps and dates, stored as integers
    assert scalar is not None, t
    return lambda b: scalar(int(b))


def _encode(values: list[Any], t: pa.DataType) -> list[Any]:
    if pa.types.is_boolean(t):
        return [None if v is None else int(v) for v in values]
    return values


class RedisOnlineStore:
    """Online store on a Redis server (`redis://host:port/db`)."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", prefix: str = "headrace:features"):
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - the [redis] extra is missing
            raise FeatureStoreError(
                f"online store {url!r}",
                "the redis package is not installed",
                "pip install 'headrace[redis]'",
            ) from exc
        self.url = url
        self.prefix = prefix
        self._redis = redis.Redis.from_url(url)
        self._upsert = self._redis.register_script(UPSERT_NEWER)
        self._set_sequence = self._redis.register_script(SET_SEQUENCE)
        self._decoders: dict[str, list[Callable[[bytes], Any]]] = {}
        self._fields: dict[str, list[bytes]] = {}
        try:
            self._redis.ping()
        except redis.RedisError as exc:
            raise FeatureStoreError(
                f"online store {url!r}",
                f"cannot reach Redis: {exc}",
                "start Redis or fix the URL",
            ) from exc

    def __repr__(self) -> str:
        return f"RedisOnlineStore({self.url!r})"

    def _entity_key(self, group: str, key: Key) -> str:
        return f"{self.prefix}:{group}:" + ":".join(_escape(v) for v in key)

    def _writers_key(self, group: str) -> str:
        return f"{self.prefix}:{group}"

    def ensure_group(self, group: FeatureGroup) -> None:
        self._decoders[group.name] = [
            _redis_decoder(group.schema.field(f).type) for f in group.feature_names
        ]
        self._fields[group.name] = [f.encode() for f in group.feature_names] + [
            TIME_COLUMN.encode()
        ]

    def write(
        self, group: FeatureGroup, table: pa.Table, *, writer: str | None, sequence: int | None
    ) -> int | None:
        if group.name not in self._decoders:
            self.ensure_group(group)
        if writer is not None:
            applied = self.applied_sequence(group.name, writer)
            if applied is not None and applied >= sequence:
                return None
        newest = newest_per_entity(group, table)
        keys = zip(*(newest.column(k).to_pylist() for k in group.entity_keys), strict=True)
        times = event_times_us(newest, group)
        names = group.feature_names
        values = [
            _encode(column_values(newest.column(f)), group.schema.field(f).type) for f in names
        ]
        ttl_ms = None if group.ttl_us is None else group.ttl_us // 1000
        transactional = writer is not None
        pipe = self._redis.pipeline(transaction=transactional)
        sent = 0
        for key, ts, *row in zip(keys, times, *values, strict=True):
            args: list[Any] = [ts, 0 if ttl_ms is None else ts // 1000 + ttl_ms]
            for name, value in zip(names, row, strict=True):
                if value is not None:
                    args += (name, value)
            self._upsert(keys=[self._entity_key(group.name, key)], args=args, client=pipe)
            sent += 1
            if not transactional and sent % PIPELINE_CHUNK == 0:
                pipe.execute()
        if transactional:
            self._set_sequence(
                keys=[self._writers_key(group.name)], args=[writer, sequence], client=pipe
            )
        pipe.execute()
        return sent

    def read(self, group: FeatureGroup, keys: Sequence[Key]) -> list[Record | None]:
        if group.name not in self._decoders:
            self.ensure_group(group)
        fields = self._fields[group.name]
        decoders = self._decoders[group.name]
        if len(keys) == 1:
            replies = [self._redis.hmget(self._entity_key(group.name, keys[0]), fields)]
        else:
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(self._entity_key(group.name, key), fields)
            replies = pipe.execute()
        out: list[Record | None] = []
        for reply in replies:
            if reply[-1] is None:
                out.append(None)
                continue
            values = [None if v is None else d(v) for d, v in zip(decoders, reply, strict=False)]
            values.append(int(reply[-1]))
            out.append(tuple(values))
        return out

    def applied_sequence(self, group: str, writer: str) -> int | None:
        value = self._redis.hget(self._writers_key(group), writer)
        return None if value is None else int(value)

    def _scan(self, group: str):
        return self._redis.scan_iter(match=f"{self.prefix}:{group}:*", count=1000)

    def count(self, group: str) -> int:
        return sum(1 for _ in self._scan(group))

    def drop(self, group: str) -> None:
        batch = []
        for key in self._scan(group):
            batch.append(key)
            if len(batch) >= 1000:
                self._redis.delete(*batch)
                batch.clear()
        if batch:
            self._redis.delete(*batch)
        self._redis.delete(self._writers_key(group))

    def close(self) -> None:
        self._redis.close()
