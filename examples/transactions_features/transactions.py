"""System 2: unconfirmed transactions → bus → stream → dedup → archive + per-minute features.

A poller asks the transactions API (``TX_API_URL``; `run_demo.py` starts a local simulator) for
the latest 100 unconfirmed transactions every second and publishes each to the bus. A rule routes
them to the ``transactions`` stream. The ``tx`` pipeline drops the transactions earlier polls
already brought, archives the raw records as Parquet partitioned by event date and hour, and
computes per minute of event time the number of transactions, the total fee and the average fee,
written to the ``tx_minute`` feature group (online: the newest minute; offline: every minute).
Late transactions (after the minute closed plus its grace) go to the ``tx-late`` stream.
"""

from __future__ import annotations

import os

import pyarrow as pa

from headrace import App
from headrace.features import FeatureGroup
from headrace.streams import HttpPoller
from headrace.streams.operators import aggregations as agg

API_URL = os.environ.get("TX_API_URL", "http://127.0.0.1:8765/unconfirmed-transactions?format=json")
GRACE = float(os.environ.get("TX_GRACE_SECONDS", "10"))

app = App("transactions")

app.source(
    HttpPoller("blockchain", API_URL, interval=1.0, records="txs"),
    event_source="blockchain.unconfirmed",
    detail_type="Transaction",
    time_field="time",
    id_field="hash",
)
app.stream("transactions", retention_seconds=7 * 86400)
app.rule(
    {"source": ["blockchain.unconfirmed"], "detail-type": ["Transaction"]},
    target="stream:transactions",
    name="transactions-to-stream",
)

app.feature_group(
    FeatureGroup(
        "tx_minute",
        entity_keys=["network"],
        event_time="window_end",
        features={
            "window_start": pa.timestamp("us", tz="UTC"),
            "tx_count": pa.int64(),
            "total_fee": pa.int64(),
            "avg_fee": pa.float64(),
        },
        description="Unconfirmed transactions per minute of event time",
    )
)


def with_network(minutes: pa.Table) -> pa.Table:
    """The feature group's entity: one network, so the online store keeps its newest minute."""
    network = pa.array(["bitcoin"] * minutes.num_rows, pa.string())  # a row per closed minute
    return minutes.append_column("network", network)


tx = app.pipeline("tx", stream="transactions")
tx.dedup("hash", ttl=3600)
tx.to_archive("archive", "transactions/", time_column="_event_time", max_seconds=30)
tx.tumbling(
    60,
    time_column="_event_time",
    aggs={"tx_count": agg.count(), "total_fee": agg.sum("fee"), "avg_fee": agg.mean("fee")},
    grace=GRACE,
)
tx.map(with_network)
tx.to_features("tx_minute")

app.compaction("tx_minute", every=300)
