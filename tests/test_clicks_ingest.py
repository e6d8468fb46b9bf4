"""The personalization clickstream through the live path, in a feature worker (in process) over its own nats-server
and the suite's Redis and PostgreSQL: a simulated world's events published to FRAUD_CLICKS (out of order, JSON and
msgpack, re-published) end as user, item and session features in Redis equal to what the world's loader computes
from the same events; the event log counts every event once; a recompute as of a past time equals the loader's
point-in-time rows."""

from __future__ import annotations

import asyncio
import functools
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from deploy.servers import Server, start_nats
from feature_svc.ingest.clicks import compute
from feature_svc.offline_clicks import export_click_snapshots, read_click_snapshots
from feature_svc.service import FeatureService
from feature_svc.world.personalization.events import click_events, tagged
from feature_svc.world.personalization.online import records, store
from feature_svc.world.personalization.world import CATEGORIES, EVENT_TYPES, SECONDS_PER_DAY, WorldOptions, generate
from shared import subjects
from shared.click_messages import EVENT_TYPES as WIRE_EVENT_TYPES
from shared.click_messages import CategoryName, ClickEvent
from shared.ingest_messages import JSON
from shared.settings import load_settings
from tests.stacks import clear_redis_prefix

SCHEMA = "test_clicks"
PREFIX = "fmtest:clicks"
TAG = "ck"
WORLD = WorldOptions(seed=3, users=60, items=40, days=6)
START = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_nats(Path(tmp_path_factory.mktemp("clicks-nats")))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
async def service(own_nats: Server, redis_url: str, postgres_dsn: str) -> AsyncIterator[FeatureService]:
    await clear_redis_prefix(redis_url, PREFIX)
    settings = load_settings(
        {},
        nats_url=own_nats.extra["url"],
        redis_url=redis_url,
        postgres_dsn=postgres_dsn,
        consistency_check_interval_s=0,
    )
    svc = FeatureService(settings, schema=SCHEMA, redis_prefix=PREFIX)
    await svc.start()
    assert svc.pool is not None
    await svc.pool.execute("TRUNCATE click_events")
    yield svc
    await svc.stop()


@pytest.fixture(scope="module")
async def js(own_nats: Server, service: FeatureService) -> AsyncIterator[JetStreamContext]:
    nc: NATS = await nats.connect(own_nats.extra["url"])
    yield nc.jetstream()
    await nc.drain()


async def publish(js: JetStreamContext, events: list[ClickEvent], msg_ids: list[str] | None = None) -> int:
    """Every other event as JSON, the rest msgpack; Nats-Msg-Id = event_id unless given. Returns the duplicates
    JetStream dropped."""
    dups = 0
    for k, e in enumerate(events):
        headers = {subjects.HDR_MSG_ID: msg_ids[k] if msg_ids else e.event_id}
        if k % 2:
            headers[subjects.HDR_CONTENT_TYPE] = JSON
            body = msgspec.json.encode(e)
        else:
            body = msgspec.msgpack.encode(e)
        ack = await js.publish(subjects.CLICKS_SUBJECT, body, headers=headers)
        dups += bool(ack.duplicate)
    return dups


async def settle(js: JetStreamContext, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        info = await js.consumer_info(subjects.CLICKS_STREAM, subjects.CLICKS_CONSUMER)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the clicks consumer did not catch up within {timeout:.0f}s: {info}")


def loader_rows(world: Any, cutoff: float | None = None) -> dict[tuple[str, str], dict[str, float]]:
    """What the world's loader writes (feature_svc/world/personalization/online.py `records`), by tagged id."""
    return {(r.entity_type, tagged(r.entity_id, TAG)): dict(r.values) for r in records(world, cutoff)}


def assert_equal_rows(got: dict[str, float], want: dict[str, float], where: str) -> None:
    assert set(got) == set(want), f"{where}: names differ: {sorted(set(got) ^ set(want))}"
    for name, v in want.items():
        # times go through RFC 3339 / timestamptz (microseconds): a session's duration within a millisecond
        assert got[name] == pytest.approx(v, rel=1e-9, abs=1e-3 if name == "duration_s" else 1e-9), (where, name)


def test_the_wire_types_are_the_worlds() -> None:
    assert get_args(CategoryName) == CATEGORIES
    assert WIRE_EVENT_TYPES == EVENT_TYPES


async def test_published_clickstream_becomes_the_loaders_features_in_redis(
    service: FeatureService, js: JetStreamContext
) -> None:
    world = generate(WORLD)
    events = list(click_events(world, START, TAG))
    shuffled = events[:]
    random.Random(5).shuffle(shuffled)  # out of order: features do not depend on arrival order
    assert await publish(js, shuffled) == 0
    assert await publish(js, events[:25]) == 25  # re-published within the dedupe window: dropped by JetStream
    # re-published under other message ids (a replay after the window): JetStream takes them, the log does not
    assert await publish(js, events[25:40], [f"replay-{e.event_id}" for e in events[25:40]]) == 0
    await settle(js)

    want = loader_rows(world, float(world.event_time.max()) + 1.0)  # every event (the loader's default stops at
    # the end of the last day; a session that began before it may run past)
    touched = {("user", e.user_id) for e in events} | {("item", e.item_id) for e in events}
    touched |= {("session", e.session_id) for e in events}
    reader = store(service.settings.redis_url, 600, PREFIX)
    try:
        keys = sorted(want)
        reads = await reader.read(keys)
    finally:
        await reader.close()
    by_key = {(r.entity_type, r.entity_id): r for r in reads}
    for key in keys:
        r = by_key[key]
        if key not in touched:  # a user or item of the world without events: the loader's zeros, never ingested
            assert not r.present, key
            continue
        assert r.present and not r.stale, key
        assert_equal_rows(dict(r.values), want[key], f"{key[0]} {key[1]}")
    assert {k[0] for k in touched} == {"user", "item", "session"}

    assert service.pool is not None
    assert await service.pool.fetchval("SELECT count(*) FROM click_events") == len(events)
    new = service.registry.get_sample_value("fraudmesh_click_events_total", {"outcome": "new"})
    dup = service.registry.get_sample_value("fraudmesh_click_events_total", {"outcome": "duplicate"})
    assert (new, dup) == (len(events), 15)


async def test_a_recompute_as_of_a_past_time_is_the_loaders_point_in_time_row(
    service: FeatureService, js: JetStreamContext
) -> None:
    """Runs after the stream was consumed: the event log holds every event, and `as_of` leaves out the later ones."""
    world = generate(WORLD)
    cutoff = 2.5 * SECONDS_PER_DAY
    events = list(click_events(world, START, TAG))
    assert service.pool is not None
    before = [e for e in events if e.timestamp < START + timedelta(seconds=cutoff)]
    users = sorted({e.user_id for e in before})
    items = sorted({e.item_id for e in before})
    sessions = sorted({e.session_id for e in before})
    got = await compute(service.pool, users, items, sessions, as_of=(START.timestamp() + cutoff))
    want = loader_rows(world, cutoff)
    assert len(got) == len(users) + len(items) + len(sessions)
    for rec in got:
        assert_equal_rows(
            dict(rec.values), want[(rec.entity_type, rec.entity_id)], f"{rec.entity_type} {rec.entity_id}"
        )
    later = {e.session_id for e in events} - set(sessions)
    assert later and not await compute(service.pool, [], [], sorted(later), as_of=START.timestamp() + cutoff)


async def test_the_parquet_snapshots_are_the_loaders_rows_as_of_each_midnight(
    service: FeatureService, js: JetStreamContext, tmp_path: Path
) -> None:
    """Runs after the stream was consumed: one snapshot per UTC midnight after the first event; each row equals the
    loader's row at that cut-off, and an entity appears from the first snapshot after its first event."""
    assert service.pool is not None
    world = generate(WORLD)
    summary = await export_click_snapshots(service.pool, tmp_path / "offline")
    last = float(world.event_time.max())
    days = int(last // SECONDS_PER_DAY) + 1
    assert summary["snapshots"] == [(START + timedelta(days=d)).isoformat() for d in range(1, days + 1)]
    for etype in ("user", "item", "session"):
        table = read_click_snapshots(tmp_path / "offline", etype)
        assert table.num_rows == summary["rows"][etype] > 0
        seen: dict[int, set[str]] = {}
        for row in table.to_pylist():
            day = round((row["as_of"].timestamp() - START.timestamp()) / SECONDS_PER_DAY)
            seen.setdefault(day, set()).add(row["entity_id"])
            want = loader_rows(world, day * SECONDS_PER_DAY)[(etype, row["entity_id"])]
            got = {k: v for k, v in row.items() if k not in ("entity_id", "as_of", "day") and v is not None}
            assert_equal_rows(got, want, f"{etype} {row['entity_id']} day {day}")
        assert sorted(seen) == list(range(1, days + 1))
        assert all(seen[d] <= seen[d + 1] for d in range(1, days))  # an entity, once seen, stays

    # the same through the CLI
    out = tmp_path / "cli"
    cli = [sys.executable, "-m", "deploy.cli", "features", "export", "--family", "personalization"]
    args = ["--schema", SCHEMA, "--postgres-dsn", service.settings.postgres_dsn, "--out", str(out)]
    run = functools.partial(subprocess.run, capture_output=True, text=True, timeout=300, check=False)
    res = await asyncio.to_thread(run, [*cli, *args])
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"wrote {days} daily snapshots" in res.stdout
    for etype in ("user", "item", "session"):
        assert read_click_snapshots(out, etype).equals(read_click_snapshots(tmp_path / "offline", etype))
