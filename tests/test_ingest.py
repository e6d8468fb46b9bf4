"""Live ingestion in a feature worker (in process) over its own nats-server and the suite's Redis and PostgreSQL:
transactions and labels published to FRAUD_TXNS / FRAUD_LABELS reach the ledger, the graph and the online
features, exactly once, and the online values equal a recompute from the ledger as of their computed_at."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from deploy.servers import Server, start_nats
from feature_svc.graph import PostgresGraphStore
from feature_svc.ingest.check import check_consistency
from feature_svc.ingest.ledger_writer import write_transactions
from feature_svc.online import OnlineStore
from feature_svc.service import FeatureService
from feature_svc.world import WorldParams, generate_world
from shared import subjects
from shared.ingest_messages import JSON, Label, TxnIngest, encode_for_stream
from shared.settings import load_settings
from tests.stacks import clear_redis_prefix
from tests.worlds import load_world_into

SCHEMA = "test_ingest"
PREFIX = "fmtest:ingest"
DEDUPE_S = 2.0


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_nats(Path(tmp_path_factory.mktemp("ingest-nats")))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
async def pool(postgres_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    world = generate_world(
        WorldParams(n_cards=200, n_transactions=2_000, seed=9, start=datetime.now(UTC) - timedelta(days=10)),
        progress=False,
    )
    pool = await load_world_into(postgres_dsn, world, schema=SCHEMA, max_size=8)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
async def service(
    own_nats: Server, redis_url: str, postgres_dsn: str, pool: asyncpg.Pool
) -> AsyncIterator[FeatureService]:
    await clear_redis_prefix(redis_url, PREFIX)
    settings = load_settings(
        {},
        nats_url=own_nats.extra["url"],
        redis_url=redis_url,
        postgres_dsn=postgres_dsn,
        ingest_dedupe_window_s=DEDUPE_S,
        consistency_check_interval_s=0,
    )
    svc = FeatureService(settings, schema=SCHEMA, redis_prefix=PREFIX)
    await svc.start()
    yield svc
    await svc.stop()


@pytest.fixture(scope="module")
async def js(own_nats: Server, service: FeatureService) -> AsyncIterator[JetStreamContext]:
    nc: NATS = await nats.connect(own_nats.extra["url"])
    yield nc.jetstream()
    await nc.drain()


def txn(tid: str, card: str, *, amount: float = 2.5, device: str | None = None, ip: str | None = None) -> TxnIngest:
    return TxnIngest(
        transaction_id=tid,
        card_id=card,
        transaction_amount=amount,
        merchant_id="m_live_1",
        device_id=device,
        ip_address=ip,
        timestamp=datetime.now(UTC) - timedelta(seconds=1),
        source="nats",
    )


async def publish(js: JetStreamContext, msgs: list[TxnIngest] | list[Label], content_type: str = "") -> int:
    """Publish each with Nats-Msg-Id = transaction id; return how many JetStream called a duplicate."""
    subject = subjects.TXNS_SUBJECT if msgs and isinstance(msgs[0], TxnIngest) else subjects.LABELS_SUBJECT
    dups = 0
    for m in msgs:
        headers = {subjects.HDR_MSG_ID: m.transaction_id}
        if content_type:
            headers[subjects.HDR_CONTENT_TYPE] = content_type
        ack = await js.publish(subject, encode_for_stream(m, content_type or "msgpack"), headers=headers)
        dups += bool(ack.duplicate)
    return dups


async def settle(js: JetStreamContext, timeout: float = 30.0) -> None:
    """Wait until both ingest consumers have acked everything (lag 0)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        infos = [
            await js.consumer_info(subjects.TXNS_STREAM, subjects.TXNS_CONSUMER),
            await js.consumer_info(subjects.LABELS_STREAM, subjects.LABELS_CONSUMER),
        ]
        if all(i.num_pending == 0 and i.num_ack_pending == 0 for i in infos):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"ingest consumers still lag after {timeout}s: {infos}")


async def online_values(service: FeatureService, etype: str, eid: str) -> dict[str, float]:
    assert service.online is not None
    [read] = await service.online.read([(etype, eid)])
    assert read.present, f"{etype} {eid} has no online features"
    return read.values


async def assert_consistent(service: FeatureService, entities: list[tuple[str, str]]) -> None:
    assert service.pool is not None and service.graph is not None and service.online is not None
    report = await check_consistency(service.pool, service.graph, service.online, entities)
    assert report.checked == len(set(entities)), report
    assert report.mismatches == [], report.mismatches[:5]


async def test_transactions_reach_ledger_graph_and_online_features(
    service: FeatureService, js: JetStreamContext, pool: asyncpg.Pool
) -> None:
    card = "card_live_velocity"
    txns = [txn(f"live-v-{i}", card, device="dev_live_v", ip="10.9.0.1") for i in range(30)]
    assert await publish(js, txns) == 0
    # re-published at once, within the dedupe window: JetStream drops them (the check is here, not after the
    # settle below, so that the window is not a race against how long the machine takes to settle)
    assert await publish(js, txns[:5]) == 5
    await settle(js)
    values = await online_values(service, "card", card)
    assert values["card_txn_count_1h"] == 30
    assert values["card_txn_sum_1h"] == pytest.approx(75.0)
    assert (await online_values(service, "device", "dev_live_v"))["device_txn_count_1h"] == 30
    assert service.online is not None  # new entities, known from their own ledger rows (no known-entities query)
    assert all(
        r.known for r in await service.online.read([("card", card), ("device", "dev_live_v"), ("ip", "10.9.0.1")])
    )
    assert await pool.fetchval("SELECT count(*) FROM transactions WHERE card_id = $1", card) == 30
    graph = PostgresGraphStore(pool)
    assert await graph.degree("card", card) == 3  # its device, IP and merchant
    await assert_consistent(service, [("card", card), ("merchant", "m_live_1"), ("device", "dev_live_v")])

    # after the dedupe window, the ledger's idempotent write drops the re-publish
    await asyncio.sleep(DEDUPE_S + 0.5)
    assert await publish(js, txns[5:10]) == 0
    await settle(js)
    assert await pool.fetchval("SELECT count(*) FROM transactions WHERE card_id = $1", card) == 30
    assert (await online_values(service, "card", card))["card_txn_count_1h"] == 30
    assert await pool.fetchval("SELECT n FROM edges WHERE card_id = $1 AND entity_type = 'device'", card) == 30


async def test_json_messages_are_ingested_and_undecodable_ones_dead_lettered(
    service: FeatureService, js: JetStreamContext
) -> None:
    card = "card_live_json"
    assert await publish(js, [txn("live-json-1", card), txn("live-json-2", card)], content_type=JSON) == 0
    await js.publish(subjects.TXNS_SUBJECT, b'{"card_id": "x"}', headers={subjects.HDR_CONTENT_TYPE: JSON})
    await settle(js)
    assert (await online_values(service, "card", card))["card_txn_count_1h"] == 2
    info = await js.stream_info(subjects.INGEST_DLQ_STREAM)
    assert info.state.messages == 1
    dead = await js.get_msg(subjects.INGEST_DLQ_STREAM, info.state.last_seq)
    assert "missing required field" in (dead.headers or {})[subjects.HDR_DLQ_REASON]


async def test_chargeback_raises_the_fraud_counts_of_its_device_and_ring(
    service: FeatureService, js: JetStreamContext
) -> None:
    ring = ["card_ring_a", "card_ring_b", "card_ring_c"]
    await publish(js, [txn(f"ring-{c}", c, amount=40.0, device="dev_ring_1", ip="10.9.9.9") for c in ring])
    await settle(js)
    await service.ingest.ingestor.deferred_pass()  # type: ignore[union-attr]
    assert (await online_values(service, "device", "dev_ring_1"))["device_fraud_cards"] == 0
    assert (await online_values(service, "card", "card_ring_b"))["card_fraud_cards_2hop"] == 0
    assert (await online_values(service, "card", "card_ring_b"))["card_cards_sharing_device"] == 2

    await publish(js, [Label(transaction_id="ring-card_ring_a", label="fraud", fraud_kind="ring")])
    await settle(js)
    assert (await online_values(service, "device", "dev_ring_1"))["device_fraud_cards"] == 1
    assert (await online_values(service, "ip", "10.9.9.9"))["ip_fraud_cards"] == 1
    for other in ring[1:]:
        assert (await online_values(service, "card", other))["card_fraud_cards_2hop"] == 1
    assert (await online_values(service, "card", "card_ring_a"))["card_fraud_labels_known"] == 1
    assert (await online_values(service, "merchant", "m_live_1"))["merchant_fraud_labels_known_30d"] == 1
    await assert_consistent(
        service, [("device", "dev_ring_1"), ("card", "card_ring_a"), ("card", "card_ring_b"), ("ip", "10.9.9.9")]
    )


async def test_a_label_before_its_transaction_is_parked_then_applied(
    service: FeatureService, js: JetStreamContext, pool: asyncpg.Pool
) -> None:
    await publish(js, [Label(transaction_id="late-tx-1", label="fraud")])
    await settle(js)
    assert await pool.fetchval("SELECT count(*) FROM pending_labels WHERE transaction_id = 'late-tx-1'") == 1
    await publish(js, [txn("late-tx-1", "card_late")])
    await settle(js)
    assert await pool.fetchval("SELECT count(*) FROM pending_labels") == 0
    assert await pool.fetchval("SELECT is_fraud FROM labels WHERE transaction_id = 'late-tx-1'") is True
    assert (await online_values(service, "card", "card_late"))["card_fraud_labels_known"] == 1


async def test_online_entries_never_regress_to_an_older_computation(service: FeatureService) -> None:
    from feature_svc.online import FeatureRecord

    assert service.online is not None
    new = FeatureRecord(entity_type="ip", entity_id="ip-regress", values={"ip_degree": 2.0}, computed_at=200.0)
    old = FeatureRecord(entity_type="ip", entity_id="ip-regress", values={"ip_degree": 1.0}, computed_at=100.0)
    assert await service.online.write_if_newer([new]) == 1
    assert await service.online.write_if_newer([old]) == 0
    assert (await online_values(service, "ip", "ip-regress"))["ip_degree"] == 2.0


def test_messages_round_trip_in_both_encodings() -> None:
    t = txn("rt-1", "card_rt")
    assert msgspec.json.decode(encode_for_stream(t, JSON), type=TxnIngest) == t
    assert msgspec.msgpack.decode(encode_for_stream(t), type=TxnIngest) == t
    _ = OnlineStore  # imported for the type of service.online


def test_ingest_never_gives_up_on_a_store_that_is_down() -> None:
    import asyncpg

    from shared.jetstream import INGEST_MAX_DELIVER, ingest_policy
    from shared.policy import Action

    policy = ingest_policy()
    down = policy.decide(asyncpg.PostgresConnectionError("connection refused"), INGEST_MAX_DELIVER * 10)
    assert down.action is Action.NAK and 0 < down.delay_s <= 30.0
    broken = policy.decide(ValueError("a bug"), INGEST_MAX_DELIVER)
    assert broken.action is Action.DEAD_LETTER


async def test_only_a_new_card_on_a_device_or_ip_queues_its_other_cards(pool: asyncpg.Pool) -> None:
    """The deferred pass refreshes the other cards on a device or IP only when it gained a card: a card paying
    again from a device and IP it used before changes no other card's sharing counts, 2-hop counts or component."""
    graph = PostgresGraphStore(pool)
    first = await write_transactions(pool, graph, [txn("nl-1", "card_nl_a", device="dev_nl", ip="10.8.8.8")])
    assert sorted(first.new_links) == [("device", "dev_nl"), ("ip", "10.8.8.8")]
    again = await write_transactions(pool, graph, [txn("nl-2", "card_nl_a", device="dev_nl", ip="10.8.8.8")])
    assert [t.transaction_id for t in again.new] == ["nl-2"] and again.new_links == []
    # a second card on the same device, from a new IP; twice in one batch: each node listed once
    other = await write_transactions(
        pool,
        graph,
        [txn(f"nl-{k}", "card_nl_b", device="dev_nl", ip="10.8.8.9") for k in (3, 4)],
    )
    assert sorted(other.new_links) == [("device", "dev_nl"), ("ip", "10.8.8.9")]
    replay = await write_transactions(pool, graph, [txn("nl-1", "card_nl_a", device="dev_nl", ip="10.8.8.8")])
    assert replay.new == [] and replay.new_links == []


async def test_cards_linked_in_one_query_are_the_first_cards_of_each_node(pool: asyncpg.Pool) -> None:
    graph = PostgresGraphStore(pool)
    nodes: list[tuple[str, str]] = [
        ("ip", r["entity_id"])
        for r in await pool.fetch(
            "SELECT entity_id FROM edges WHERE entity_type = 'ip' GROUP BY entity_id ORDER BY count(*) DESC LIMIT 5"
        )
    ]
    nodes.append(("device", "no_such_device"))
    linked = [await graph.neighbours(t, i) for t, i in nodes]
    assert max(len(cards) for cards in linked) > 3  # the limit below is exercised
    expected = {n.entity_id for cards in linked for n in cards[:3]}
    assert sorted(await graph.cards_linked(nodes, 3)) == sorted(expected)


async def test_the_deferred_pass_skips_cards_refreshed_since_their_node_was_queued(
    service: FeatureService, pool: asyncpg.Pool
) -> None:
    """The other cards on a device that gained a card are refreshed by the deferred pass, except a card whose
    online entry was computed after the device was queued (it already includes the new edge)."""
    from prometheus_client import CollectorRegistry

    from feature_svc.definitions import FEATURE_SET_VERSION
    from feature_svc.ingest.ingestor import Ingestor
    from feature_svc.ingest.refresh import refresh

    assert service.online is not None
    graph = PostgresGraphStore(pool)
    # its own prefix, so the service's background pass never takes this queue's entries
    online = OnlineStore(service.online.redis, version=FEATURE_SET_VERSION, prefix="fmtest:ingest:skip")
    registry = CollectorRegistry()
    ingestor = Ingestor(pool, graph, online, registry, check_interval_s=0)
    cards = ["card_skip_a", "card_skip_b", "card_skip_c"]
    written = await write_transactions(pool, graph, [txn(f"skip-{c}", c, device="dev_skip") for c in cards])
    assert ("device", "dev_skip") in written.new_links
    await ingestor.deferred.add(written.new_links)
    await asyncio.sleep(0.05)  # strictly later than the queueing: on a fast run both fell in one clock tick (a tie)
    await refresh(pool, graph, online, [("card", "card_skip_a")])  # computed after the device was queued
    [kept] = await online.read([("card", "card_skip_a")])

    await ingestor.deferred_pass()

    assert await ingestor.deferred.size() == 0
    assert registry.get_sample_value("fraudmesh_ingest_entities_refreshed_total", {"path": "deferred"}) == 2
    [again] = await online.read([("card", "card_skip_a")])
    assert again.computed_at == kept.computed_at  # skipped, not rewritten
    for card in cards:
        [read] = await online.read([("card", card)])
        assert read.present and read.values["card_cards_sharing_device"] == 2
    report = await check_consistency(pool, graph, online, [("card", c) for c in cards])
    assert report.checked == 3 and report.mismatches == []
