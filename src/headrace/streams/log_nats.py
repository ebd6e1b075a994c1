"""The stream log on NATS JetStream.

Stream `name` is the JetStream stream `headrace-{name}` with one subject per partition,
`headrace.{name}.p{n}`, and one message per stored batch: the Arrow IPC bytes as payload, the
batch's offsets and ingest time in headers (`Headrace-First`, `Headrace-End`, `Headrace-Time`).
The partition count is kept in the stream's description. The key-value bucket `headrace-{name}`
holds consumer offsets (`offset.{hex(group)}.p{n}`) and the results of idempotent appends
(`producer.{hex(producer)}.{sequence}`).

Every publish carries `Nats-Expected-Last-Subject-Sequence`, so a producer that lost a race to
another one is refused and retries on top of the new last batch: two producers never take the same
offsets. A retried idempotent append finds its stored result, or, if the first try died between
publishing and storing that result, is deduplicated by `Nats-Msg-Id` within the stream's
duplicate window (2 minutes). A batch bigger than the server's max_payload is stored as several
messages (each a whole batch with its own offsets).

Retention purges a partition's subject up to the first batch kept. Offsets continue from the last
message of the subject, so when retention removes every batch it first publishes an empty marker
message carrying the end offset (`Headrace-First` = `Headrace-End`) and purges up to it. Readers
skip markers.

nats-py is asyncio; each `NatsLog` runs its own event loop in a background thread and the
synchronous methods wait on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.js import api
from nats.nuid import NUID

from headrace.errors import StreamError
from headrace.streams.log import (
    Appended,
    EncodedPart,
    StoredBatch,
    StreamLog,
    check_offset_args,
    decode_batch,
    encode_batch,
    format_appended,
    merge_adjacent,
    parse_appended,
    partition_mismatch,
    retention_cut,
    to_millis,
)

FIRST = "Headrace-First"
END = "Headrace-End"
TIME = "Headrace-Time"
WRONG_LAST_SEQUENCE = 10071
STREAM_NAME_IN_USE = 10058
HEADER_ROOM = 1024  # bytes of max_payload left for headers
CALL_TIMEOUT_S = 120.0
FETCH_TIMEOUT_S = 5.0
PAGE_BYTES = 8 << 20  # payload bytes asked for per fetch
DIRECT_GETS = 4  # reads of up to this many messages get them by sequence, not by a consumer
MAX_CONFLICTS = 1000  # lost publish races in a row before giving up
T = TypeVar("T")
_log = logging.getLogger(__name__)


@dataclass
class _Index:
    """Offsets, ingest time, size and stream sequence of a partition's messages, in order."""

    firsts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)

    def add(self, first: int, end: int, time_ms: int, size: int, seq: int) -> None:
        self.firsts.append(first)
        self.ends.append(end)
        self.times.append(time_ms)
        self.sizes.append(size)
        self.seqs.append(seq)

    def drop_before(self, seq: int) -> None:
        cut = bisect_left(self.seqs, seq)
        for column in (self.firsts, self.ends, self.times, self.sizes, self.seqs):
            del column[:cut]

    def batches(self):
        for first, end, time_ms, size in zip(
            self.firsts, self.ends, self.times, self.sizes, strict=True
        ):
            yield StoredBatch(first, end, time_ms, size)


async def _log_connection_error(exc: Exception) -> None:
    # nats-py prints a traceback per failed attempt by default; the caller gets a StreamError.
    _log.debug("NATS connection error: %r", exc)


class _LoopThread:
    """An asyncio event loop running in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT_S) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()  # do not leave it running against the next call
            raise

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class NatsLog(StreamLog):
    """A stream kept in NATS JetStream."""

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
        self.stream = f"headrace-{name}"
        self.bucket = f"headrace-{name}"
        self._lock = threading.RLock()
        self._tails: dict[int, tuple[int, int]] = {}  # partition → (end offset, last sequence)
        self._index: dict[int, _Index] = {}
        self._loop = _LoopThread(f"headrace-nats-{name}")
        self._nc: nats.NATS | None = None
        self._nuid = NUID()  # consumer names, as nats-py makes its own
        try:
            self.partitions = self._run(self._open(partitions))
        except BaseException:
            self.close()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._lock:
            try:
                return self._loop.run(coro)
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                raise StreamError(
                    f"stream {self.name!r} at {self.url}",
                    f"NATS JetStream failed: {exc!r}",
                    "check that nats-server runs with JetStream (-js) and is reachable",
                ) from exc

    def _subject(self, partition: int) -> str:
        return f"headrace.{self.name}.p{partition}"

    async def _open(self, partitions: int | None) -> int:
        try:
            self._nc = await nats.connect(
                self.url,
                connect_timeout=5,
                max_reconnect_attempts=3,
                reconnect_time_wait=1,
                error_cb=_log_connection_error,
            )
        except (nats.errors.NoServersError, OSError, TimeoutError) as exc:
            raise StreamError(
                f"stream {self.name!r} at {self.url}",
                f"cannot connect to NATS: {exc!r}",
                "start nats-server with JetStream (nats-server -js) or fix the URL",
            ) from exc
        self._js = self._nc.jetstream()
        info = await self._stream_info_or_create(partitions or 1)
        try:
            stored = int(json.loads(info.config.description or "{}")["partitions"])
        except (ValueError, KeyError) as exc:
            raise StreamError(
                f"JetStream stream {self.stream!r}",
                "it exists but was not created by headrace (no partition count)",
                "delete it or use another stream name",
            ) from exc
        if partitions is not None and partitions != stored:
            raise partition_mismatch(self.name, self.url, stored, partitions)
        self._direct = bool(info.config.allow_direct)
        try:
            self._kv = await self._js.key_value(self.bucket)
        except nats.js.errors.BucketNotFoundError:
            self._kv = await self._js.create_key_value(bucket=self.bucket, history=1)
        return stored

    async def _stream_info_or_create(self, partitions: int) -> api.StreamInfo:
        try:
            return await self._js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            pass
        config = api.StreamConfig(
            name=self.stream,
            description=json.dumps({"headrace": "stream", "partitions": partitions}),
            subjects=[f"headrace.{self.name}.*"],
            storage=api.StorageType.FILE,
            duplicate_window=120,
            allow_direct=True,
        )
        try:
            return await self._js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:  # else another process created it first
                raise
            return await self._js.stream_info(self.stream)

    # -- writing -------------------------------------------------------------------------------

    def _write(
        self, parts: list[EncodedPart], producer: str | None, sequence: int | None, now_ms: int
    ) -> list[Appended]:
        return self._run(self._write_async(parts, producer, sequence, now_ms))

    async def _write_async(
        self, parts: list[EncodedPart], producer: str | None, sequence: int | None, now_ms: int
    ) -> list[Appended]:
        record_key = None
        if producer is not None:
            record_key = f"producer.{producer.encode().hex()}.{sequence}"
            try:
                entry = await self._kv.get(record_key)
                return parse_appended(entry.value.decode())
            except nats.js.errors.KeyNotFoundError:
                pass
        appended = []
        for part in parts:
            for chunk, (records, data) in enumerate(self._chunks(part)):
                msg_id = None if record_key is None else f"{record_key}.p{part.partition}.c{chunk}"
                appended.append(await self._publish(part.partition, records, data, now_ms, msg_id))
        appended = merge_adjacent(appended)
        if record_key is not None:
            await self._kv.put(record_key, format_appended(appended).encode())
        return appended

    def _chunks(self, part: EncodedPart) -> list[tuple[int, bytes]]:
        limit = self._nc.max_payload - HEADER_ROOM
        if len(part.data) <= limit:
            return [(part.records, part.data)]
        table = decode_batch(part.data)
        chunks, position = [], 0
        rows = max(1, int(part.records * limit / len(part.data) * 0.9))
        while position < table.num_rows:
            data = encode_batch(table.slice(position, rows))
            if len(data) > limit:
                if rows == 1:
                    raise StreamError(
                        f"append to stream {self.name!r}",
                        f"one record is {len(data)} bytes, over NATS max_payload ({limit})",
                        "raise max_payload in the nats-server config or store big values "
                        "in object storage and append their keys",
                    )
                rows = max(1, rows // 2)
                continue
            taken = min(rows, table.num_rows - position)
            chunks.append((taken, data))
            position += taken
        return chunks

    async def _publish(
        self,
        partition: int,
        records: int,
        data: bytes,
        now_ms: int,
        msg_id: str | None,
    ) -> Appended:
        """Publish one batch after the partition's last message."""
        subject = self._subject(partition)
        for _ in range(MAX_CONFLICTS):
            end, last_seq = self._tails.get(partition) or await self._tail(partition)
            headers = {
                FIRST: str(end),
                END: str(end + records),
                TIME: str(now_ms),
                "Nats-Expected-Last-Subject-Sequence": str(last_seq),
            }
            if msg_id is not None:
                headers["Nats-Msg-Id"] = msg_id
            try:
                ack = await self._js.publish(subject, data, headers=headers)
            except nats.js.errors.APIError as exc:
                self._tails.pop(partition, None)
                if exc.err_code == WRONG_LAST_SEQUENCE:
                    continue  # another producer appended first: go again on top of it
                raise
            if ack.duplicate:
                self._tails.pop(partition, None)
                earlier = await self._js.get_msg(self.stream, seq=ack.seq)
                return Appended(partition, int(earlier.headers[FIRST]), int(earlier.headers[END]))
            self._tails[partition] = (end + records, ack.seq)
            return Appended(partition, end, end + records)
        raise StreamError(
            f"append to stream {self.name!r} partition {partition}",
            f"lost the race for the partition's end to other producers {MAX_CONFLICTS} times",
            "spread producers over more partitions or retry later",
        )

    async def _tail(self, partition: int) -> tuple[int, int]:
        try:
            last = await self._js.get_last_msg(self.stream, self._subject(partition))
        except nats.js.errors.NotFoundError:
            return 0, 0
        tail = int(last.headers[END]), last.seq
        self._tails[partition] = tail
        return tail

    # -- reading -------------------------------------------------------------------------------

    def _fetch(self, partition: int, offset: int, stop: int) -> list[tuple[int, bytes]]:
        return self._run(self._fetch_async(partition, offset, stop))

    async def _fetch_async(self, partition: int, offset: int, stop: int) -> list[tuple[int, bytes]]:
        index = self._index.setdefault(partition, _Index())
        if not index.ends or index.ends[-1] < stop:
            await self._extend_index(partition)
        low = bisect_right(index.ends, offset)
        high = bisect_left(index.firsts, stop)
        if low >= high:
            return []
        wanted = index.seqs[low:high]
        messages = await self._get_by_sequence(wanted) if len(wanted) <= DIRECT_GETS else None
        if messages is None:
            # Pages of about PAGE_BYTES: big batches a few at a time, small ones by the thousand.
            page = max(1, min(1000, PAGE_BYTES * len(wanted) // (sum(index.sizes[low:high]) + 1)))
            consumed = await self._consume(
                self._subject(partition), wanted[0], len(wanted), page=page
            )
            messages = [(m.metadata.sequence.stream, m.headers, m.data) for m in consumed]
        if messages and messages[0][0] != wanted[0]:
            index.drop_before(messages[0][0])  # purged by someone else
        found = []
        for _seq, headers, data in messages:
            first, end = int(headers[FIRST]), int(headers[END])
            if first >= stop:
                break
            if end > first:  # not a retention marker
                found.append((first, data))
        return found

    async def _get_by_sequence(self, seqs: list[int]) -> list[tuple[int, dict, bytes]] | None:
        """The messages at `seqs` by direct get (one round trip each, all at once), or None when
        the stream has no direct get or one of them is gone."""
        if not self._direct:
            return None
        gets = [self._js.get_msg(self.stream, seq=seq, direct=True) for seq in seqs]
        try:
            got = await asyncio.gather(*gets)
        except nats.js.errors.NotFoundError:
            return None
        return [(m.seq, m.headers, m.data or b"") for m in got]

    async def _extend_index(self, partition: int) -> None:
        index = self._index.setdefault(partition, _Index())
        after = index.seqs[-1] + 1 if index.seqs else 1
        for message in await self._consume(self._subject(partition), after, None, True):
            headers = message.headers
            index.add(
                int(headers[FIRST]),
                int(headers[END]),
                int(headers[TIME]),
                int(headers["Nats-Msg-Size"]),
                message.metadata.sequence.stream,
            )

    async def _sync_index(self, partition: int) -> _Index:
        """The index of what the server holds now, including purges by other processes."""
        index = self._index.setdefault(partition, _Index())
        first = await self._first_message(partition)
        if first is not None:
            index.drop_before(first.seq)
        else:
            index.drop_before(index.seqs[-1] + 1 if index.seqs else 0)
        await self._extend_index(partition)
        return index

    async def _consume(
        self,
        subject: str,
        start_seq: int,
        count: int | None,
        headers_only: bool = False,
        page: int = 1000,
    ) -> list[Any]:
        """Up to `count` (None: all) messages of `subject` from stream sequence `start_seq`."""
        stream = self.stream if subject.startswith("headrace.") else f"KV_{self.bucket}"
        name = self._nuid.next().decode()
        config = api.ConsumerConfig(
            name=name,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start_seq,
            ack_policy=api.AckPolicy.NONE,
            filter_subject=subject,
            headers_only=headers_only or None,
            inactive_threshold=60,
            mem_storage=True,
        )
        info = await self._js.add_consumer(stream, config=config)
        wanted = info.num_pending if count is None else min(count, info.num_pending)
        messages: list[Any] = []
        try:
            if wanted:
                sub = await self._js.pull_subscribe_bind(stream=stream, name=name)
                try:
                    while len(messages) < wanted:
                        batch = min(page, wanted - len(messages))
                        messages += await sub.fetch(batch, timeout=FETCH_TIMEOUT_S)
                except (TimeoutError, nats.errors.TimeoutError):
                    pass  # fewer than counted: purged since the consumer was made
                finally:
                    await sub.unsubscribe()
        finally:
            await self._js.delete_consumer(stream, name)
        return messages

    def start_offset(self, partition: int) -> int:
        self._check_partition(partition)
        return self._run(self._start_offset(partition))

    async def _start_offset(self, partition: int) -> int:
        first = await self._first_message(partition)
        return 0 if first is None else int(first.headers[FIRST])

    async def _first_message(self, partition: int) -> api.RawStreamMsg | None:
        """The oldest message the server holds for the partition; None when it holds none."""
        subject = self._subject(partition)
        try:
            return await self._js.get_msg(self.stream, seq=1, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            return None

    def end_offset(self, partition: int) -> int:
        self._check_partition(partition)
        return self._run(self._tail(partition))[0]

    # -- consumer offsets ------------------------------------------------------------------------

    def commit(self, group: str, partition: int, offset: int) -> None:
        check_offset_args(self, group, partition, offset)
        key = f"offset.{group.encode().hex()}.p{partition}"
        self._run(self._kv.put(key, str(offset).encode()))

    def committed(self, group: str, partition: int) -> int | None:
        check_offset_args(self, group, partition, None)
        return self._run(self._committed(f"offset.{group.encode().hex()}.p{partition}"))

    async def _committed(self, key: str) -> int | None:
        try:
            entry = await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        return int(entry.value)

    # -- retention -------------------------------------------------------------------------------

    def enforce_retention(self, *, now: datetime | None = None) -> int:
        cutoff_ms = self._retention_cutoff_ms(now)
        if cutoff_ms is None and self.retention_bytes is None:
            return 0
        return self._run(self._enforce_retention(cutoff_ms, to_millis(now or datetime.now(UTC))))

    async def _enforce_retention(self, cutoff_ms: int | None, now_ms: int) -> int:
        removed = 0
        for partition in range(self.partitions):
            for _ in range(MAX_CONFLICTS):
                try:
                    removed += await self._trim(partition, cutoff_ms, now_ms)
                    break
                except nats.js.errors.APIError as exc:
                    if exc.err_code != WRONG_LAST_SEQUENCE:
                        raise  # else an append raced the marker: look again
        if removed:
            await self._forget_trimmed_producers()
        return removed

    async def _trim(self, partition: int, cutoff_ms: int | None, now_ms: int) -> int:
        index = await self._sync_index(partition)
        if not index.seqs:
            return 0
        start = index.firsts[0]
        new_start = retention_cut(
            index.batches(),
            start=start,
            total_bytes=sum(index.sizes),
            cutoff_ms=cutoff_ms,
            max_bytes=self.retention_bytes,
        )
        if new_start <= start:
            return 0
        keep = bisect_right(index.ends, new_start)
        if keep == len(index.seqs):
            # Everything goes: leave a marker holding the end offset, refused if an append
            # came in since the index was read (that batch would otherwise be purged too).
            end = index.ends[-1]
            headers = {
                FIRST: str(end),
                END: str(end),
                TIME: str(now_ms),
                "Nats-Expected-Last-Subject-Sequence": str(index.seqs[-1]),
            }
            ack = await self._js.publish(self._subject(partition), b"", headers=headers)
            self._tails[partition] = (end, ack.seq)
            index.add(end, end, now_ms, 0, ack.seq)
        keep_seq = index.seqs[keep]
        await self._js.purge_stream(self.stream, subject=self._subject(partition), seq=keep_seq)
        index.drop_before(keep_seq)
        return new_start - start

    async def _forget_trimmed_producers(self) -> None:
        """Drop idempotency records whose batches retention removed entirely."""
        starts = {p: await self._start_offset(p) for p in range(self.partitions)}
        prefix = f"$KV.{self.bucket}."
        for message in await self._consume(f"{prefix}producer.>", 1, None):
            if (message.headers or {}).get("KV-Operation") or not message.data:
                continue  # already deleted
            results = parse_appended(message.data.decode())
            if all(a.end_offset <= starts[a.partition] for a in results):
                await self._kv.purge(message.subject.removeprefix(prefix))

    # -- lifetime --------------------------------------------------------------------------------

    def drop(self) -> None:
        async def delete() -> None:
            for remove, what in (
                (self._js.delete_stream, self.stream),
                (self._js.delete_key_value, self.bucket),
            ):
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await remove(what)

        self._run(delete())
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._nc is not None and not self._loop.loop.is_closed():
                # Closing a broken connection fails; there is nothing left to release then.
                with contextlib.suppress(Exception):
                    self._loop.run(self._nc.close(), timeout=10)
                self._nc = None
            self._loop.stop()
