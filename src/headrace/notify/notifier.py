"""Topics and the notifier: SNS-style publish, with every delivery recorded in the ledger.

`publish` first writes the message and one delivery row per subscription in one transaction,
so once it returns the message cannot be lost; then (by default) it delivers right away,
retrying with exponential backoff. Whatever fails is recorded, never raised to the publisher.
`deliver_pending` retries what is still pending: rows deferred by `synchronous=False`, rows
waiting for their next backoff, and rows whose notifier died mid-delivery (lease expired).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, insert, inspect, or_, select, text, update
from sqlalchemy.exc import SQLAlchemyError

from headrace.ledger.db import create_tables
from headrace.notify.errors import DeliveryFailed, NotifyError, UnknownTopic
from headrace.notify.schema import metadata, notify_deliveries, notify_messages
from headrace.notify.subscriptions import Subscription, subscription_from_dict
from headrace.retry import exponential

if TYPE_CHECKING:
    from headrace.ledger import Ledger

__all__ = ["Notifier", "Topic"]

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,256}$")
# arn:<partition>:sns:<region>:<account>:<topic>, as SNS writes it
_TOPIC_ARN = re.compile(r"^arn:[a-z-]+:sns:[a-z0-9-]*:[0-9]*:([A-Za-z0-9_\-]{1,256})$")
LOCAL_ARN_PREFIX = "arn:aws:sns:local:000000000000"
_HAS_TOPIC_ARN: set[str] = set()  # ledger URLs whose notify_messages has the column
_LEASE_MARGIN = 30.0  # seconds beyond a delivery's own timeout before another notifier takes over
_MAX_MESSAGE_BYTES = 256 * 1024  # as SNS


@dataclass
class Topic:
    name: str
    subscriptions: list[Subscription] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _TOPIC_NAME.match(self.name):
            raise NotifyError(
                f"topic {self.name!r}", "a topic name is 1-256 characters of A-Z a-z 0-9 _ -"
            )
        self.subscriptions = [
            subscription_from_dict(s) if isinstance(s, Mapping) else s for s in self.subscriptions
        ]
        ids = [s.id for s in self.subscriptions]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise NotifyError(
                f"topic {self.name!r}",
                f"subscriptions {dupes} appear twice",
                "give each a distinct `name`",
            )

    @property
    def arn(self) -> str:
        """The topic's ARN when a publisher names it without one."""
        return f"{LOCAL_ARN_PREFIX}:{self.name}"


def topic_name(topic_arn: str) -> str:
    """The topic an SNS `TopicArn` names (its last part); a bare topic name is accepted too."""
    if _TOPIC_NAME.match(topic_arn):
        return topic_arn
    found = _TOPIC_ARN.match(topic_arn)
    if found is None:
        raise NotifyError(
            f"TopicArn {topic_arn!r}",
            "is not an SNS topic ARN",
            "write arn:aws:sns:<region>:<account>:<topic>, or the topic's name",
        )
    return found.group(1)


def _topics(topics: Mapping[str, Any] | Iterable[Topic]) -> dict[str, Topic]:
    out: dict[str, Topic] = {}
    if isinstance(topics, Mapping):
        for name, value in topics.items():
            topic = value if isinstance(value, Topic) else Topic(name, list(value))
            if topic.name != name:
                raise NotifyError(f"topic {name!r}", f"is registered under the name {topic.name!r}")
            out[name] = topic
    else:
        for topic in topics:
            if topic.name in out:
                raise NotifyError(f"topic {topic.name!r}", "is defined twice")
            out[topic.name] = topic
    return out


def _attribute(name: str, value: Any) -> dict[str, str]:
    """A message attribute in SNS's Publish shape ({"DataType", "StringValue"})."""
    if isinstance(value, Mapping) and "DataType" in value:
        return {k: str(v) for k, v in value.items()}
    if isinstance(value, bool):
        return {"DataType": "String", "StringValue": str(value).lower()}
    if isinstance(value, int | float | Decimal):
        return {"DataType": "Number", "StringValue": str(value)}
    if isinstance(value, str):
        return {"DataType": "String", "StringValue": value}
    if isinstance(value, list | tuple):
        return {"DataType": "String.Array", "StringValue": json.dumps(list(value))}
    raise NotifyError(f"message attribute {name!r}", f"{type(value).__name__} is not supported")


def _timestamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Notifier:
    """Publishes messages to topics and delivers them to their subscriptions."""

    def __init__(
        self,
        ledger: Ledger,
        topics: Mapping[str, Topic | Sequence[Subscription | Mapping[str, Any]]] | Iterable[Topic],
        *,
        max_attempts: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        synchronous: bool = True,
        max_workers: int = 8,
    ) -> None:
        if max_attempts < 1:
            raise NotifyError("notifier", "max_attempts must be at least 1")
        self.ledger = ledger
        self.topics = _topics(topics)
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.synchronous = synchronous
        self.max_workers = max_workers
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        create_tables(metadata, ledger.engine)
        _add_topic_arn_column(ledger)

    # -- publishing ---------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        message: Any,
        *,
        subject: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        topic_arn: str | None = None,
    ) -> str:
        """Record a message for every subscription of `topic` and return its MessageId.

        A message that is not a string is sent as its JSON, as SNS does for a state machine's
        `Message` object. Delivery failures are recorded in the ledger, not raised.
        `topic_arn` is the ARN the publisher wrote (the envelope's `TopicArn`); it must name
        `topic`. Without it the envelope carries `Topic.arn`.
        """
        if topic_arn is not None and topic_name(topic_arn) != topic:
            raise NotifyError(
                f"TopicArn {topic_arn!r}", f"does not name topic {topic!r}", "publish to its topic"
            )
        if topic not in self.topics:
            raise UnknownTopic(
                f"topic {topic!r}",
                "is not configured",
                f"configure it, or use one of {sorted(self.topics)}",
            )
        spec = self.topics[topic]
        text = message if isinstance(message, str) else json.dumps(message, default=str)
        if not text:
            raise NotifyError(f"message to topic {topic!r}", "is empty")
        if len(text.encode()) > _MAX_MESSAGE_BYTES:
            raise NotifyError(f"message to topic {topic!r}", "is larger than 256 KB")
        if subject is not None and (not subject or "\n" in subject or "\r" in subject):
            # a line break would let a subject inject email headers
            raise NotifyError(f"subject {subject!r}", "must be one non-empty line")
        attrs = {str(k): _attribute(str(k), v) for k, v in (attributes or {}).items()}
        message_id = str(uuid.uuid4())
        now = time.time()
        rows = [
            {
                "message_id": message_id,
                "subscription": sub.id,
                "topic": topic,
                "kind": sub.kind,
                "status": "pending",
                "attempts": 0,
                "max_attempts": sub.max_attempts or self.max_attempts,
                "next_attempt_at": now,
                # delivered by this call right away: leased so that no deliver_pending elsewhere
                # sends it too, until this process is past its retries (or dead)
                "lease_owner": self.id if self.synchronous else None,
                "lease_until": now + self._lease(sub) if self.synchronous else None,
                "created_at": now,
                "updated_at": now,
            }
            for sub in spec.subscriptions
        ]
        with self.ledger.begin() as conn:
            conn.execute(
                insert(notify_messages).values(
                    id=message_id,
                    topic=topic,
                    subject=subject,
                    message=text,
                    attributes=json.dumps(attrs),
                    topic_arn=topic_arn,
                    created_at=now,
                )
            )
            if rows:
                conn.execute(insert(notify_deliveries), rows)
        if self.synchronous and rows:
            envelope = self._envelope(spec, message_id, text, subject, attrs, now, topic_arn)
            jobs = [
                (sub, envelope, 0, row["max_attempts"])
                for sub, row in zip(spec.subscriptions, rows, strict=True)
            ]
            self._run(jobs, retry=True)
        return message_id

    def publish_request(self, params: Mapping[str, Any]) -> dict[str, str]:
        """SNS's Publish: `TopicArn` (or `TopicName`), `Message`, `Subject`,
        `MessageAttributes`; returns `{"MessageId": …}` (what `sns:publish` tasks expect)."""
        known = {"TopicArn", "TopicName", "Message", "Subject", "MessageAttributes"}
        unknown = set(params) - known
        if unknown:
            raise NotifyError(
                "SNS Publish request", f"parameters {sorted(unknown)} are not supported"
            )
        arn = params.get("TopicArn")
        if arn is not None and not isinstance(arn, str):
            raise NotifyError("SNS Publish request", "TopicArn must be a string")
        if not arn and not params.get("TopicName"):
            raise NotifyError("SNS Publish request", "TopicArn is required")
        target = params.get("TopicName") or topic_name(arn)
        if "Message" not in params:
            raise NotifyError("SNS Publish request", "Message is required")
        message_id = self.publish(
            target,
            params["Message"],
            subject=params.get("Subject"),
            attributes=params.get("MessageAttributes"),
            # a bare name in TopicArn is no ARN: the envelope then shows the topic's own
            topic_arn=arn if arn and _TOPIC_ARN.match(arn) else None,
        )
        return {"MessageId": message_id}

    # -- delivering ---------------------------------------------------------------------------

    def deliver_pending(self, *, limit: int = 100) -> dict[str, int]:
        """Make one attempt at each due pending delivery; returns counts by resulting status.

        Meant to be called periodically by the coordinator. A failed attempt is scheduled again
        after its backoff (or marked failed when out of attempts).
        """
        now = time.time()
        with self.ledger.begin() as conn:
            claimed = self._claim(conn, now, limit)
        jobs = []
        outcome: dict[str, int] = {}
        for row in claimed:
            spec = self.topics.get(row["topic"])
            sub = (
                next((s for s in spec.subscriptions if s.id == row["subscription"]), None)
                if spec
                else None
            )
            if sub is None:
                self._record(
                    row["message_id"],
                    row["subscription"],
                    "failed",
                    row["attempts"],
                    "the subscription is no longer configured",
                    None,
                )
                outcome["failed"] = outcome.get("failed", 0) + 1
                continue
            envelope = self._envelope(
                spec,
                row["message_id"],
                row["message"],
                row["subject"],
                json.loads(row["attributes"]),
                row["created_at"],
                row["topic_arn"],
            )
            jobs.append((sub, envelope, row["attempts"], row["max_attempts"]))
        for status in self._run(jobs, retry=False):
            outcome[status] = outcome.get(status, 0) + 1
        return outcome

    def _claim(self, conn: Connection, now: float, limit: int) -> list[dict[str, Any]]:
        d, m = notify_deliveries, notify_messages
        query = (
            select(
                d.c.message_id,
                d.c.subscription,
                d.c.topic,
                d.c.attempts,
                d.c.max_attempts,
                m.c.message,
                m.c.subject,
                m.c.attributes,
                m.c.topic_arn,
                m.c.created_at,
            )
            .join(m, m.c.id == d.c.message_id)
            .where(
                d.c.status == "pending",
                d.c.next_attempt_at <= now,
                or_(d.c.lease_until.is_(None), d.c.lease_until < now),
            )
            .order_by(d.c.next_attempt_at)
            .limit(limit)
        )
        if self.ledger.postgres:
            # several coordinators may call this at once: each takes rows the others do not hold
            query = query.with_for_update(of=d, skip_locked=True)
        rows = [dict(r) for r in conn.execute(query).mappings()]
        for row in rows:
            spec = self.topics.get(row["topic"])
            sub = (
                next((s for s in spec.subscriptions if s.id == row["subscription"]), None)
                if spec
                else None
            )
            lease = self._lease(sub, attempts=1) if sub else _LEASE_MARGIN
            conn.execute(
                update(d)
                .where(d.c.message_id == row["message_id"], d.c.subscription == row["subscription"])
                .values(lease_owner=self.id, lease_until=now + lease, updated_at=now)
            )
        return rows

    def _run(self, jobs: list[tuple], *, retry: bool) -> list[str]:
        if len(jobs) <= 1:
            return [self._deliver(*job, retry=retry) for job in jobs]
        with ThreadPoolExecutor(min(self.max_workers, len(jobs))) as pool:
            return list(pool.map(lambda job: self._deliver(*job, retry=retry), jobs))

    def _deliver(
        self,
        sub: Subscription,
        envelope: dict[str, Any],
        attempts: int,
        max_attempts: int,
        *,
        retry: bool,
    ) -> str:
        """Attempt delivery (with retries when `retry`); returns the final recorded status."""
        message_id = envelope["MessageId"]
        while True:
            attempts += 1
            try:
                sub.deliver(envelope)
            except DeliveryFailed as exc:
                error = str(exc)
            except Exception as exc:  # a bug in a subscriber must not escape into publish
                error = f"{type(exc).__name__}: {exc}"
            else:
                self._record(message_id, sub.id, "delivered", attempts, None, None)
                return "delivered"
            if attempts >= max_attempts:
                self._record(message_id, sub.id, "failed", attempts, error, None)
                return "failed"
            delay = exponential(attempts, self.backoff, cap=self.max_backoff)
            # keep the lease while sleeping in-process; give it up when a later call retries
            lease = delay + self._lease(sub, attempts=1) if retry else None
            if not self._record(message_id, sub.id, "pending", attempts, error, delay, lease):
                return "lost"  # another notifier took the row over: it owns the retries now
            if not retry:
                return "pending"
            time.sleep(delay)

    def _record(
        self,
        message_id: str,
        subscription: str,
        status: str,
        attempts: int,
        error: str | None,
        delay: float | None,
        lease: float | None = None,
    ) -> bool:
        now = time.time()
        values: dict[str, Any] = {
            "status": status,
            "attempts": attempts,
            "last_error": error,
            "updated_at": now,
            "lease_owner": self.id if lease is not None else None,
            "lease_until": now + lease if lease is not None else None,
        }
        if delay is not None:
            values["next_attempt_at"] = now + delay
        if status == "delivered":
            values["delivered_at"] = now
        d = notify_deliveries
        with self.ledger.begin() as conn:
            result = conn.execute(
                update(d)
                .where(
                    and_(
                        d.c.message_id == message_id,
                        d.c.subscription == subscription,
                        d.c.status == "pending",
                        or_(d.c.lease_owner.is_(None), d.c.lease_owner == self.id),
                    )
                )
                .values(**values)
            )
        return result.rowcount == 1

    def _lease(self, sub: Subscription, attempts: int | None = None) -> float:
        """How long a delivery may take before another notifier may assume this one died."""
        n = attempts or sub.max_attempts or self.max_attempts
        sleeps = sum(exponential(i, self.backoff, cap=self.max_backoff) for i in range(1, n))
        return n * float(getattr(sub, "timeout", 10.0)) + sleeps + _LEASE_MARGIN

    @staticmethod
    def _envelope(
        topic: Topic,
        message_id: str,
        message: str,
        subject: str | None,
        attributes: Mapping[str, Mapping[str, str]],
        at: float,
        topic_arn: str | None = None,
    ) -> dict[str, Any]:
        """The SNS HTTP notification document (what an SNS webhook receiver parses)."""
        envelope: dict[str, Any] = {
            "Type": "Notification",
            "MessageId": message_id,
            "TopicArn": topic_arn or topic.arn,
            "Topic": topic.name,
            "Message": message,
            "Timestamp": _timestamp(at),
        }
        if subject is not None:
            envelope["Subject"] = subject
        if attributes:
            envelope["MessageAttributes"] = {
                k: {"Type": v["DataType"], "Value": v.get("StringValue", v.get("BinaryValue"))}
                for k, v in attributes.items()
            }
        return envelope

    # -- reading ------------------------------------------------------------------------------

    def deliveries(
        self,
        message_id: str | None = None,
        *,
        topic: str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Delivery rows, newest first: status, attempts, last_error, timestamps."""
        d = notify_deliveries
        query = select(d).order_by(d.c.created_at.desc(), d.c.subscription).limit(limit)
        if message_id:
            query = query.where(d.c.message_id == message_id)
        if topic:
            query = query.where(d.c.topic == topic)
        if status:
            query = query.where(d.c.status == status)
        with self.ledger.reader.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def get_message(self, message_id: str) -> dict[str, Any] | None:
        with self.ledger.reader.connect() as conn:
            row = (
                conn.execute(select(notify_messages).where(notify_messages.c.id == message_id))
                .mappings()
                .first()
            )
        if row is None:
            return None
        out = dict(row)
        out["attributes"] = json.loads(out["attributes"])
        return out


def _add_topic_arn_column(ledger: Ledger) -> None:
    """Ledgers made before `topic_arn` existed get the column (nullable: old rows keep None)."""
    if ledger.url in _HAS_TOPIC_ARN:
        return
    columns = {c["name"] for c in inspect(ledger.engine).get_columns("notify_messages")}
    if "topic_arn" in columns:
        _HAS_TOPIC_ARN.add(ledger.url)
        return
    try:
        with ledger.begin() as conn:
            conn.execute(text("ALTER TABLE notify_messages ADD COLUMN topic_arn TEXT"))
    except SQLAlchemyError as exc:  # another notifier added it first
        if "duplicate" not in str(exc).lower() and "already exists" not in str(exc).lower():
            raise
    _HAS_TOPIC_ARN.add(ledger.url)
