"""Live features end to end, as processes: scored transactions flow through FRAUD_TXNS into the online features
(Done-when 1 of issue 9), and 20,000 published transactions with duplicate ids survive a SIGKILLed feature worker
with nothing lost or double-counted (Done-when 2). Own nats-server, own PostgreSQL schema, own Redis database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import nats
import pytest
from nats.js import JetStreamContext

from deploy.servers import Server, start_nats
from feature_svc.definitions import FEATURE_SET_VERSION, LAGGING_S
from feature_svc.graph import PostgresGraphStore
from feature_svc.ingest.check import confirmed_check
from feature_svc.ingest.synthetic import synthetic_transactions
from feature_svc.ingest.touched import of_transactions
from feature_svc.online import OnlineStore
from feature_svc.world import WorldParams, generate_world
from shared import subjects
from shared.ingest_messages import TxnIngest, encode_for_stream
from tests.stacks import Stack
from tests.worlds import load_world_into

SCHEMA = "test_ingest_live"
REDIS_DB = 6
DEDUPE_S = 2.0


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_nats(Path(tmp_path_factory.mktemp("live-nats")))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
async def pool(postgres_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    world = generate_world(
        WorldParams(n_cards=200, n_transactions=2_000, seed=11, start=datetime.now(UTC) - timedelta(days=10)),
        progress=False,
    )
    pool = await load_world_into(postgres_dsn, world, schema=SCHEMA, max_size=8)
    yield pool
    await pool.close()


def redis_db(url: str) -> str:
    return url.rsplit("/", 1)[0] + f"/{REDIS_DB}"


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory,
    own_nats: Server,
    redis_url: str,
    postgres_dsn: str,
    model_dir: Path,
    pool: asyncpg.Pool,
) -> Iterator[Stack]:
    import redis

    redis.Redis.from_url(redis_db(redis_url)).flushdb()
    s = Stack(
        Path(tmp_path_factory.mktemp("live-stack")),
        own_nats.extra["url"],
        redis_db(redis_url),
        f"{postgres_dsn}?search_path={SCHEMA}",
        model_dir,
        env={"FRAUDMESH_INGEST_DEDUPE_WINDOW_S": str(DEDUPE_S), "FRAUDMESH_CONSISTENCY_CHECK_INTERVAL_S": "0"},
    )
    s.start("aggregator")
    s.start("inference")
    s.start("feature", 2)
    s.start("gateway")
    try:
        s.wait_ready()
        s.wait_health("feature", 2)
        yield s
    finally:
        s.stop()


@pytest.fixture
async def js(own_nats: Server, live: Stack) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(own_nats.extra["url"])
    yield nc.jetstream(timeout=10.0)
    await nc.drain()


async def settle(js: JetStreamContext, timeout: float = 600.0) -> None:
    end = time.monotonic() + timeout
    info = None
    while time.monotonic() < end:
        info = await js.consumer_info(subjects.TXNS_STREAM, subjects.TXNS_CONSUMER)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"FRAUD_TXNS consumer still lags after {timeout}s: {info}")


async def card_count_1h(client: httpx.AsyncClient, card: str, *, not_yet_ingested_ok: bool = False) -> float:
    """The card's `card_txn_count_1h` as served; with `not_yet_ingested_ok`, a card whose first transaction is not
    in yet (404 "never transacted", while polling right after scoring) counts 0."""
    r = await client.get("/features", params={"entity_type": "card", "entity_id": card})
    if not_yet_ingested_ok and r.status_code == 404 and "never transacted" in r.text:
        return 0.0
    assert r.status_code == 200, r.text
    return float(r.json()["values"]["card_txn_count_1h"])


async def test_scored_transactions_show_in_the_cards_features(
    live: Stack, js: JetStreamContext, pool: asyncpg.Pool
) -> None:
    card = "card_new_live_1"
    body = {"card_id": card, "merchant_id": "m_00001", "transaction_amount": 1.5, "device_id": "dev_live_1"}
    async with httpx.AsyncClient(base_url=live.gateway_url, timeout=10.0) as client:
        for k in range(30):
            r = await client.post("/score/fraud", json={**body, "transaction_id": f"dw1-{k}"})
            assert r.status_code == 200, r.text
        last_reply = time.monotonic()
        count = 0.0
        while time.monotonic() - last_reply < 15.0 and count != 30:
            count = await card_count_1h(client, card, not_yet_ingested_ok=True)
            await asyncio.sleep(0.02)
        visible_s = time.monotonic() - last_reply
        assert count == 30
        print(f"card_txn_count_1h = 30 visible {visible_s * 1000:.0f} ms after the last reply")

        for k in range(5):  # the same transaction ids again: scored again, ingested once
            r = await client.post("/score/fraud", json={**body, "transaction_id": f"dw1-{k}"})
            assert r.status_code == 200
        await asyncio.sleep(0.5)
        await settle(js)
        assert await card_count_1h(client, card) == 30

        # what-if scoring never reaches the ledger
        r = await client.post("/score/fraud", params={"ingest": "false"}, json={**body, "transaction_id": "dw1-x"})
        assert r.status_code == 200
        await settle(js)
        assert await pool.fetchval("SELECT count(*) FROM transactions WHERE transaction_id = 'dw1-x'") == 0
        assert await pool.fetchval("SELECT count(*) FROM transactions WHERE transaction_id LIKE 'dw1-%'") == 30
        health = (await client.get("/health")).json()
        details = next(iter(health["services"]["aggregator"]["details"].values()))
        assert details["ingest_publish"] == "ok"


async def test_ingest_http_endpoints(live: Stack, js: JetStreamContext, pool: asyncpg.Pool) -> None:
    txns = synthetic_transactions(20, seed=3, prefix="http")
    doc = {"transactions": [_json(t) for t in txns]}
    async with httpx.AsyncClient(base_url=live.gateway_url, timeout=10.0) as client:
        r = await client.post("/transactions", json=doc)
        assert r.status_code == 202, r.text
        assert r.json() == {"accepted": 20, "duplicates": 0, "stream": subjects.TXNS_STREAM}
        r = await client.post("/transactions", json={"transactions": doc["transactions"][:3]})
        assert r.json()["duplicates"] == 3
        r = await client.post("/labels", json={"labels": [{"transaction_id": "http-1", "label": "fraud"}]})
        assert r.status_code == 202, r.text
        for bad in ({"transactions": []}, {"transactions": [{"card_id": "c"}]}, {"labels": [{"label": "maybe"}]}):
            path = "/transactions" if "transactions" in bad else "/labels"
            r = await client.post(path, json=bad)
            assert r.status_code == 400, r.text
            assert r.json()["errors"][0]["path"].startswith("$")
    await settle(js)
    assert await pool.fetchval("SELECT count(*) FROM transactions WHERE transaction_id LIKE 'http-%'") == 20


async def deferred_drained(redis_url: str, timeout: float = 120.0) -> None:
    import redis.asyncio as aioredis

    r = aioredis.from_url(redis_db(redis_url))
    try:
        for _ in range(int(timeout / 0.2)):
            if not await r.zcard("fm:feat:ingest:deferred"):
                break
            await asyncio.sleep(0.2)
        assert await r.zcard("fm:feat:ingest:deferred") == 0, "the deferred pass did not catch up"
    finally:
        await r.aclose()


def _json(t: TxnIngest) -> dict[str, object]:
    import msgspec

    return msgspec.to_builtins(t)  # type: ignore[no-any-return]


async def test_twenty_thousand_with_duplicates_and_a_killed_worker(
    live: Stack, js: JetStreamContext, pool: asyncpg.Pool, redis_url: str
) -> None:
    txns = synthetic_transactions(20_000, seed=7, prefix="dw2")
    dup_now, dup_late = txns[:1000], txns[1000:2000]

    async def send(batch: list[TxnIngest]) -> None:
        futures = [
            await js.publish_async(
                subjects.TXNS_SUBJECT, encode_for_stream(t), headers={subjects.HDR_MSG_ID: t.transaction_id}
            )
            for t in batch
        ]
        await asyncio.gather(*futures)

    await send(txns[:10_000])
    await send(dup_now)  # within the dedupe window: dropped by JetStream
    victim = next(p for p in live.procs if p.name == "feature")
    live.kill(victim)  # SIGKILL mid-stream: whatever it held unacked is redelivered
    await send(txns[10_000:])
    live.start("feature")
    await asyncio.sleep(DEDUPE_S + 0.5)
    await send(dup_late)  # after the window: JetStream stores them again, the ledger must not
    await settle(js)
    await deferred_drained(redis_url)

    assert await pool.fetchval("SELECT count(*) FROM transactions WHERE transaction_id LIKE 'dw2-%'") == 20_000
    entities = of_transactions(txns)
    online = OnlineStore.from_url(redis_db(redis_url), version=FEATURE_SET_VERSION)
    try:
        report = await confirmed_check(pool, PostgresGraphStore(pool), online, entities, LAGGING_S)
    finally:
        await online.close()
    assert report.checked == len(entities)
    assert report.mismatches == [], report.mismatches[:5]
    info = await js.consumer_info(subjects.TXNS_STREAM, subjects.TXNS_CONSUMER)
    assert info.num_pending == 0 and info.num_ack_pending == 0


async def test_live_traffic_runs_its_episodes_through_the_gateway(live: Stack, js: JetStreamContext) -> None:
    from deploy.traffic import run

    tally = await run(live.gateway_url, rate=20.0, duration=4.0, seed=1, api_key="")
    assert tally.errors == 0, tally.last_error
    assert tally.scored >= 60  # 80 legit at 20/s, plus the episodes' transactions
    assert [e.kind for e in tally.episodes] == ["card_testing", "ring", "account_takeover"]
    assert all(e.sent == len(e.txns) for e in tally.episodes)
    await settle(js)
