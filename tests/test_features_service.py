"""The feature service over a real NATS, Redis and PostgreSQL: an in-process FeatureService in the test's event
loop, its own PostgreSQL schema and its own Redis key prefix."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import nats
import numpy as np
import pytest
import redis.asyncio as aioredis
from nats.aio.client import Client as NATS

from feature_svc.client import FeatureServiceError, compute_remote, get_remote
from feature_svc.compute import compute_points
from feature_svc.definitions import FEATURE_SET_VERSION, feature_names
from feature_svc.graph import PostgresGraphStore
from feature_svc.offline import export_offline, read_offline
from feature_svc.online import FeatureRecord, OnlineStore
from feature_svc.service import FeatureService
from feature_svc.world import World, WorldParams, generate_world
from shared import subjects
from shared.messages import Codec, HealthPing, HealthReply
from shared.settings import load_settings
from tests.worlds import load_world_into

SCHEMA = "test_features_svc"
PREFIX = "fmtest:feat"
TTL = 600


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(WorldParams(n_cards=300, n_transactions=5_000, seed=21), progress=False)


@pytest.fixture(scope="module")
async def pool(postgres_dsn: str, world: World) -> AsyncIterator[asyncpg.Pool]:
    pool = await load_world_into(postgres_dsn, world, schema=SCHEMA, max_size=8)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
async def rdb(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.from_url(redis_url)
    yield r
    async for key in r.scan_iter(f"{PREFIX}:*"):
        await r.delete(key)
    await r.aclose()


@pytest.fixture(scope="module")
async def service(
    nats_url: str, redis_url: str, postgres_dsn: str, pool: asyncpg.Pool, rdb: aioredis.Redis
) -> AsyncIterator[FeatureService]:
    async for key in rdb.scan_iter(f"{PREFIX}:*"):
        await rdb.delete(key)
    settings = load_settings({}, nats_url=nats_url, redis_url=redis_url, postgres_dsn=postgres_dsn, feature_ttl_s=TTL)
    svc = FeatureService(settings, schema=SCHEMA, redis_prefix=PREFIX, chunk_size=50)
    await svc.start()
    yield svc
    await svc.stop()


@pytest.fixture(scope="module")
async def nc(nats_url: str, service: FeatureService) -> AsyncIterator[NATS]:
    conn = await nats.connect(nats_url)
    yield conn
    await conn.drain()


def entities_of(world: World, start: int, n: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for row in world.transactions.slice(start, n).to_pylist():
        out += [("card", row["card_id"]), ("merchant", row["merchant_id"]), ("ip", row["ip_address"])]
        if row["device_id"]:
            out.append(("device", row["device_id"]))
    return list(dict.fromkeys(out))


async def test_compute_writes_hashes_with_computed_at_version_and_ttl(
    nc: NATS, rdb: aioredis.Redis, world: World
) -> None:
    ents = entities_of(world, 4000, 5)
    reply = await compute_remote(nc, ents)
    assert reply.written and reply.version == FEATURE_SET_VERSION and reply.chunks == 1
    assert [(e.type, e.id) for e in reply.entities] == ents
    for e in reply.entities:
        assert list(e.values) == feature_names(e.type) and e.known and e.source == "computed"
        key = f"{PREFIX}:{e.type}:{e.id}"
        raw = await rdb.hgetall(key)
        packed = np.frombuffer(raw.pop(b"_vec"), dtype="<f8")  # the scoring path's packed copy, registry order
        stored = {k.decode(): v.decode() for k, v in raw.items()}
        assert stored["version"] == FEATURE_SET_VERSION
        assert packed.tolist() == [e.values[n] for n in feature_names(e.type)]
        assert float(stored["computed_at"]) == e.computed_at == reply.computed_at
        assert {k: float(v) for k, v in stored.items() if k in e.values} == e.values
        assert 0 < await rdb.ttl(key) <= TTL


async def test_get_reads_through_then_hits(
    nc: NATS, rdb: aioredis.Redis, world: World, service: FeatureService
) -> None:
    ents = entities_of(world, 4100, 4)
    await rdb.delete(*(f"{PREFIX}:{t}:{i}" for t, i in ents))
    hits_before = service.m.cache.labels("hit")._value.get()
    first = await get_remote(nc, ents)
    assert first.misses == len(ents) and first.hits == 0 and first.computed == len(ents)
    assert all(e.source == "computed" for e in first.entities)
    second = await get_remote(nc, ents)
    assert second.hits == len(ents) and second.misses == 0 and second.computed == 0
    assert all(e.source == "cache" and e.age_s >= 0 for e in second.entities)
    assert [e.values for e in second.entities] == [e.values for e in first.entities]
    assert service.m.cache.labels("hit")._value.get() - hits_before == len(ents)
    only = await get_remote(nc, ents[:1], names=["card_txn_count_7d", "merchant_degree"])
    assert set(only.entities[0].values) == {"card_txn_count_7d"}


async def test_stale_version_and_max_age_are_recomputed(nc: NATS, redis_url: str, world: World) -> None:
    ents = entities_of(world, 4200, 2)
    old = OnlineStore.from_url(redis_url, version="fs-old", prefix=PREFIX, ttl_s=TTL)
    await old.write([FeatureRecord(entity_type=t, entity_id=i, values={"x": 1.0}, computed_at=1.0) for t, i in ents])
    reads = await old.read(ents)
    assert all(r.fresh for r in reads)
    await old.close()
    reply = await get_remote(nc, ents)
    assert reply.stale == len(ents) and reply.computed == len(ents)
    aged = await get_remote(nc, ents, max_age_s=1e-6)
    assert aged.stale == len(ents)


async def test_large_request_is_split_across_chunks_in_order(nc: NATS, world: World) -> None:
    ents = entities_of(world, 3000, 40)
    assert len(ents) > 120
    reply = await compute_remote(nc, ents, write=False)
    assert reply.chunks == math.ceil(len(ents) / 50) and not reply.written
    assert [(e.type, e.id) for e in reply.entities] == ents


async def test_historical_compute_is_not_written_and_equals_offline(
    nc: NATS, rdb: aioredis.Redis, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    graph = PostgresGraphStore(pool)
    end = (await pool.fetchval('SELECT max("timestamp") FROM transactions')) - timedelta(days=5)
    await export_offline(pool, graph, tmp_path, legit_fraction=0.05, start=end, progress=False)
    rows: list[dict[str, Any]] = read_offline(tmp_path).to_pylist()
    assert rows
    for row in rows[:15]:
        ents = [(t, row[c]) for t, c in (("card", "card_id"), ("merchant", "merchant_id"), ("ip", "ip_address"))]
        await rdb.delete(*(f"{PREFIX}:{t}:{i}" for t, i in ents))
        reply = await compute_remote(nc, ents, as_of=row["timestamp"])
        assert not reply.written and reply.as_of == row["timestamp"]
        for e in reply.entities:
            assert not await rdb.exists(f"{PREFIX}:{e.type}:{e.id}")
            for name, value in e.values.items():
                assert math.isclose(value, row[name], rel_tol=1e-9, abs_tol=1e-9), (name, value, row[name])


async def test_bad_requests_get_error_replies(nc: NATS) -> None:
    with pytest.raises(FeatureServiceError) as exc:
        await get_remote(nc, [("card", "card_000001")], names=["no_such_feature"])
    assert exc.value.reply.code == "bad_request" and exc.value.reply.errors[0].path == "$.names[0]"
    msg = await nc.request(subjects.FEATURES_COMPUTE, b"\x81\xa8entities\x90", timeout=5)
    assert b"bad_request" in msg.data
    unknown = await compute_remote(nc, [("card", "card_never_seen")], write=False)
    assert not unknown.entities[0].known and unknown.entities[0].values["card_txn_count_total"] == 0


async def test_never_seen_entities_get_the_definitions_values_without_their_queries(
    nc: NATS, pool: asyncpg.Pool, world: World, service: FeatureService
) -> None:
    """A new card, device, IP or merchant is answered with `UnknownValues` (no queries for it): the same values
    the registry's SQL gives for it, as of now and as of a past instant, beside known entities of each type."""
    new = [("card", "card_brand_new"), ("device", "dev_brand_new"), ("ip", "203.0.113.77"), ("merchant", "m_new")]
    known = entities_of(world, 4300, 2)
    graph = PostgresGraphStore(pool)
    end = await pool.fetchval('SELECT max("timestamp") FROM transactions')
    for as_of in (None, end - timedelta(days=3)):
        reply = await compute_remote(nc, [*new, *known], as_of=as_of, write=False)
        assert [(e.type, e.id) for e in reply.entities] == [*new, *known]
        assert [e.known for e in reply.entities] == [False] * len(new) + [True] * len(known)
        points = [(e.type, e.id, reply.as_of) for e in reply.entities]
        expected = await compute_points(pool, graph, points)
        for e, want in zip(reply.entities, expected, strict=True):
            assert e.values == want, (e.type, e.id)
        assert reply.entities[0].values["card_seconds_since_last_txn"] == -1
        assert reply.entities[0].values["card_txn_count_total"] == 0
    assert set(service.unknown._values) == {"card", "device", "ip", "merchant"}


async def test_health_reports_stores(nc: NATS, service: FeatureService) -> None:
    codec = Codec()
    msg = await nc.request(subjects.health_subject("feature"), codec.encode(HealthPing()), timeout=5)
    replies = [codec.decode(msg.data, HealthReply)]
    await asyncio.sleep(0)
    assert any(r.details.get("redis") == "ok" and r.details["postgres"].startswith("ok") for r in replies) or (
        service.health_details()["redis"] == "ok"
    )
