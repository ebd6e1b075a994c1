"""The stream log on Redis Streams (Redis >= 6.2).

Keys of stream `name` share the prefix `headrace:stream:{name}:` (the braces are literal: they
make the name a Redis Cluster hash tag, so every key of a stream lives in one slot and the Lua
scripts below may touch them together):

- `meta` hash: `partitions`;
- `ends`, `starts`, `bytes` hashes: per partition, end offset, start offset and stored bytes;
- `d{p}` stream: one entry per stored batch, fields `first` and `data` (Arrow IPC bytes);
- `i{p}` stream: the same entries without the data (`first`, `time`, `size`), scanned by retention;
- `producers` hash: `{producer}:{sequence}` → the result of that append;
- `offsets` hash: `{group}:{partition}` → the committed offset.

Entry ids are `{end_offset}-0`, so they increase with offsets and the batch holding offset `o` is
the first entry with id >= `{o + 1}-0`. One Lua script takes the offsets, adds the entries and
records the producer's result, so concurrent producers never share offsets and a retried append
never writes twice. Retention trims both streams with XTRIM MINID in another script.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime

import redis

from headrace.errors import StreamError
from headrace.streams.log import (
    Appended,
    EncodedPart,
    StoredBatch,
    StreamLog,
    check_offset_args,
    parse_appended,
    partition_mismatch,
    retention_cut,
)

PAGE = 256  # entries per XRANGE round trip

# KEYS: ends, bytes, producers, then d{p}, i{p} for each part.
# ARGV: producer field ('' for none), ingest ms, then partition, records, size, data per part.
_APPEND = """
local field = ARGV[1]
if field ~= '' then
  local earlier = redis.call('HGET', KEYS[3], field)
  if earlier then return earlier end
end
local out = {}
local k = 4
for i = 3, #ARGV, 4 do
  local p = ARGV[i]
  local records = tonumber(ARGV[i + 1])
  local last = redis.call('HINCRBY', KEYS[1], p, records)
  local first = last - records
  local id = string.format('%d-0', last)
  local first_text = string.format('%d', first)
  redis.call('XADD', KEYS[k], id, 'first', first_text, 'data', ARGV[i + 3])
  redis.call('XADD', KEYS[k + 1], id, 'first', first_text, 'time', ARGV[2], 'size', ARGV[i + 2])
  redis.call('HINCRBY', KEYS[2], p, ARGV[i + 2])
  out[#out + 1] = p .. ':' .. first_text .. ':' .. string.format('%d', last)
  k = k + 2
end
local result = table.concat(out, ',')
if field ~= '' then redis.call('HSET', KEYS[3], field, result) end
return result
"""

# KEYS: starts, bytes, d{p}, i{p}. ARGV: partition, new start offset.
_TRIM = """
local start = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local new_start = tonumber(ARGV[2])
if new_start <= start then return 0 end
local gone = redis.call('XRANGE', KEYS[4], '-', string.format('%d-0', new_start))
local freed = 0
for _, entry in ipairs(gone) do
  local fields = entry[2]
  for j = 1, #fields, 2 do
    if fields[j] == 'size' then freed = freed + tonumber(fields[j + 1]) end
  end
end
local min_id = string.format('%d-0', new_start + 1)
redis.call('XTRIM', KEYS[3], 'MINID', min_id)
redis.call('XTRIM', KEYS[4], 'MINID', min_id)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[2], ARGV[1], -freed)
return new_start - start
"""


class RedisLog(StreamLog):
    """A stream kept in Redis Streams under `headrace:stream:{name}:`."""

    def __init__(
        self,
        url: str,
        name: str,
        *,
        partitions: int | None = None,
        retention_seconds: float | None = None,
        retention_bytes: int | None = None,
    ) -> None:
        super().__init__(name, retention_seconds=retention_seconds, retention_bytes=retention_bytes)
        self.url = url
        self.prefix = f"headrace:stream:{{{name}}}:"
        self._lock = threading.Lock()
        self._redis = redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=5)
        try:
            self._append_script = self._redis.register_script(_APPEND)
            self._trim_script = self._redis.register_script(_TRIM)
            self.partitions = self._create_or_open(partitions)
        except redis.RedisError as exc:
            self._redis.close()
            raise self._unavailable(exc) from exc

    def _key(self, suffix: str) -> str:
        return self.prefix + suffix

    def _unavailable(self, exc: Exception) -> StreamError:
        return StreamError(
            f"stream {self.name!r} at {self.url}",
            f"Redis did not answer: {exc}",
            "start redis-server (6.2 or newer) or fix the URL",
        )

    def _create_or_open(self, partitions: int | None) -> int:
        meta = self._key("meta")
        self._redis.hsetnx(meta, "partitions", partitions or 1)
        stored = int(self._redis.hget(meta, "partitions"))
        if partitions is not None and partitions != stored:
            raise partition_mismatch(self.name, self.url, stored, partitions)
        return stored

    # -- writing -------------------------------------------------------------------------------

    def _write(
        self, parts: list[EncodedPart], producer: str | None, sequence: int | None, now_ms: int
    ) -> list[Appended]:
        keys = [self._key("ends"), self._key("bytes"), self._key("producers")]
        args: list[str | int | bytes] = ["" if producer is None else f"{producer}:{sequence}"]
        args.append(now_ms)
        for part in parts:
            keys += [self._key(f"d{part.partition}"), self._key(f"i{part.partition}")]
            args += [part.partition, part.records, len(part.data), part.data]
        with self._lock:
            try:
                result = self._append_script(keys=keys, args=args)
            except redis.ConnectionError as exc:
                raise self._unavailable(exc) from exc
        return parse_appended(result.decode())

    # -- reading -------------------------------------------------------------------------------

    def _fetch(self, partition: int, offset: int, stop: int) -> list[tuple[int, bytes]]:
        key = self._key(f"d{partition}")
        found: list[tuple[int, bytes]] = []
        low = offset + 1
        with self._lock:
            # Every batch whose end offset (its id) lies in [offset + 1, stop - 1] overlaps ...
            if low < stop:
                for _, fields in self._xrange(key, f"{low}-0", f"{stop - 1}-0"):
                    found.append((int(fields[b"first"]), fields[b"data"]))
            # ... and so does the next one if it starts before `stop`.
            for _, fields in self._redis.xrange(key, f"{stop}-0", "+", count=1):
                first = int(fields[b"first"])
                if first < stop:
                    found.append((first, fields[b"data"]))
        return found

    def start_offset(self, partition: int) -> int:
        self._check_partition(partition)
        with self._lock:
            return int(self._redis.hget(self._key("starts"), partition) or 0)

    def end_offset(self, partition: int) -> int:
        self._check_partition(partition)
        with self._lock:
            return int(self._redis.hget(self._key("ends"), partition) or 0)

    # -- consumer offsets ------------------------------------------------------------------------

    def commit(self, group: str, partition: int, offset: int) -> None:
        check_offset_args(self, group, partition, offset)
        with self._lock:
            self._redis.hset(self._key("offsets"), f"{group}:{partition}", offset)

    def committed(self, group: str, partition: int) -> int | None:
        check_offset_args(self, group, partition, None)
        with self._lock:
            value = self._redis.hget(self._key("offsets"), f"{group}:{partition}")
        return None if value is None else int(value)

    # -- retention -------------------------------------------------------------------------------

    def enforce_retention(self, *, now: datetime | None = None) -> int:
        cutoff_ms = self._retention_cutoff_ms(now)
        if cutoff_ms is None and self.retention_bytes is None:
            return 0
        removed = 0
        with self._lock:
            for partition in range(self.partitions):
                start = int(self._redis.hget(self._key("starts"), partition) or 0)
                stored = int(self._redis.hget(self._key("bytes"), partition) or 0)
                new_start = retention_cut(
                    self._stored_batches(partition),
                    start=start,
                    total_bytes=stored,
                    cutoff_ms=cutoff_ms,
                    max_bytes=self.retention_bytes,
                )
                if new_start > start:
                    keys = [self._key("starts"), self._key("bytes")]
                    keys += [self._key(f"d{partition}"), self._key(f"i{partition}")]
                    removed += int(self._trim_script(keys=keys, args=[partition, new_start]))
            if removed:
                self._forget_trimmed_producers()
        return removed

    def _stored_batches(self, partition: int) -> Iterator[StoredBatch]:
        for end, fields in self._xrange(self._key(f"i{partition}"), "-", "+"):
            yield StoredBatch(
                int(fields[b"first"]), end, int(fields[b"time"]), int(fields[b"size"])
            )

    def _xrange(self, key: str, low: str, high: str) -> Iterator[tuple[int, dict[bytes, bytes]]]:
        """(end offset, fields) of the entries from id `low` to `high`, `PAGE` per round trip
        (an entry's id is its batch's end offset)."""
        while True:
            entries = self._redis.xrange(key, low, high, count=PAGE)
            for entry_id, fields in entries:
                yield int(entry_id.split(b"-")[0]), fields
            if len(entries) < PAGE:
                return
            low = f"{int(entries[-1][0].split(b'-')[0]) + 1}-0"

    def _forget_trimmed_producers(self) -> None:
        """Drop idempotency records whose batches retention removed entirely."""
        starts = {int(p): int(s) for p, s in self._redis.hgetall(self._key("starts")).items()}
        key = self._key("producers")
        stale = [
            field
            for field, value in self._redis.hscan_iter(key, count=1000)
            if all(
                a.end_offset <= starts.get(a.partition, 0) for a in parse_appended(value.decode())
            )
        ]
        for chunk in range(0, len(stale), 1000):
            self._redis.hdel(key, *stale[chunk : chunk + 1000])

    # -- lifetime --------------------------------------------------------------------------------

    def close(self) -> None:
        self._redis.close()

    def drop(self) -> None:
        names = ["meta", "ends", "starts", "bytes", "producers", "offsets"]
        for partition in range(self.partitions):
            names += [f"d{partition}", f"i{partition}"]
        with self._lock:
            self._redis.delete(*(self._key(n) for n in names))
        self.close()
