"""The SQL tables of notifications, on their own MetaData (created by `Notifier`)."""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

notify_messages = Table(
    "notify_messages",
    metadata,
    Column("id", String(64), primary_key=True),  # the SNS MessageId
    Column("topic", String(256), nullable=False),
    Column("subject", Text),
    Column("message", Text, nullable=False),
    Column("attributes", Text, nullable=False),  # JSON, SNS MessageAttributes shape
    Column("topic_arn", Text),  # the ARN the publisher wrote (None: the topic's own)
    Column("created_at", Float, nullable=False),
    Index("ix_notify_messages_topic", "topic", "created_at"),
)

# One row per (message, subscription). A row is pending until delivered or out of attempts;
# `lease_owner`/`lease_until` mark the notifier delivering it right now, so two notifiers never
# send the same pending row at the same time, and a row whose notifier died is taken over once
# its lease runs out.
notify_deliveries = Table(
    "notify_deliveries",
    metadata,
    Column("message_id", String(64), primary_key=True),
    Column("subscription", String(512), primary_key=True),
    Column("topic", String(256), nullable=False),
    Column("kind", String(16), nullable=False),  # webhook | email | file
    Column("status", String(16), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_owner", String(64)),
    Column("lease_until", Float),
    Column("last_error", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("delivered_at", Float),
    Index("ix_notify_deliveries_due", "status", "next_attempt_at"),
)
