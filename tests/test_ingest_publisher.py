"""The aggregator's ingest publisher: scored transactions reach FRAUD_TXNS with their score; when JetStream cannot
take them, the reply was never blocked, the publish is retried, counted as failed and shown in health."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from prometheus_client import CollectorRegistry

from aggregator.ingest_publisher import IngestPublisher
from deploy.servers import Server
from shared import subjects
from shared.ingest_messages import TxnIngest
from shared.jetstream import ensure_ingest_streams
from shared.messages import Transaction, TransactionScore
from shared.settings import load_settings

TXS = [Transaction(card_id="c1", transaction_amount=3.0, transaction_id=f"pub-{k}") for k in range(3)]
SCORES = [
    TransactionScore(
        transaction_id=f"pub-{k}",
        fraud_score=0.25,
        risk_level="low",
        recommended_action="approve",
        confidence=0.9,
        model_version="v-test",
    )
    for k in range(2)
] + [None]


@pytest.fixture
async def nc(isolated_nats: Server) -> AsyncIterator[NATS]:
    conn = await nats.connect(isolated_nats.extra["url"])
    yield conn
    await conn.drain()


async def wait_idle(pub: IngestPublisher) -> None:
    for _ in range(500):
        if pub.health()["ingest_publish_in_flight"] == "0":
            return
        await asyncio.sleep(0.01)
    raise AssertionError("publishes still in flight")


async def test_scored_transactions_are_published_with_their_score(nc: NATS) -> None:
    js = nc.jetstream()
    await ensure_ingest_streams(js, load_settings({}))
    pub = IngestPublisher(js, CollectorRegistry())
    pub.publish_scored(TXS, SCORES)
    await wait_idle(pub)
    assert pub.health()["ingest_publish"] == "ok"
    info = await js.stream_info(subjects.TXNS_STREAM)
    assert info.state.messages == 3
    first = await js.get_msg(subjects.TXNS_STREAM, 1)
    body = msgspec.msgpack.decode(first.data or b"", type=TxnIngest)
    assert (body.transaction_id, body.fraud_score, body.model_version, body.source) == (
        "pub-0",
        0.25,
        "v-test",
        "score",
    )
    assert (first.headers or {})[subjects.HDR_MSG_ID] == "pub-0"
    unscored = msgspec.msgpack.decode((await js.get_msg(subjects.TXNS_STREAM, 3)).data or b"", type=TxnIngest)
    assert unscored.fraud_score is None  # unscored transactions reach the ledger too


async def test_a_publish_jetstream_refuses_is_retried_counted_and_shown_in_health(nc: NATS) -> None:
    registry = CollectorRegistry()
    pub = IngestPublisher(nc.jetstream(timeout=0.5), registry, backoff_s=(0.01, 0.01))  # no stream: refused
    pub.publish_scored(TXS, SCORES)  # returns at once: a reply never waits for it
    assert pub.health()["ingest_publish_in_flight"] == "1"
    await wait_idle(pub)
    assert pub.health()["ingest_publish"] == "3 failed"
    assert registry.get_sample_value("fraudmesh_ingest_publish_failed_total") == 3
    assert registry.get_sample_value("fraudmesh_ingest_publish_retries_total") == 6
