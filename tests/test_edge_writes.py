"""Ingested transactions and the PostgreSQL graph store's edges: a repeat sighting of an edge rewrites no row (the
pages stay in the visibility map for the graph features' index-only scans), an earlier one still moves first_seen
back, and the `edge_activity` view gives each edge's last_seen and n from the ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from feature_svc.graph import PostgresGraphStore
from feature_svc.graph.model import Edge
from feature_svc.ingest.ledger_writer import write_transactions
from feature_svc.world import WorldParams, generate_world
from shared.ingest_messages import TxnIngest
from tests.worlds import load_world_into

SCHEMA = "edge_writes"
T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
async def pool(postgres_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    world = generate_world(WorldParams(n_cards=100, n_transactions=1000, seed=5, start=T0), progress=False)
    pool = await load_world_into(postgres_dsn, world, schema=SCHEMA, max_size=4)
    yield pool
    await pool.close()


def txn(i: int, at: datetime, card: str = "wc1", device: str = "wd1") -> TxnIngest:
    return TxnIngest(
        transaction_id=f"we-{i}",
        timestamp=at,
        card_id=card,
        merchant_id="wm1",
        device_id=device,
        ip_address="10.9.9.9",
        transaction_amount=10.0 + i,
    )


async def row_versions(pool: asyncpg.Pool, card: str) -> dict[tuple[str, str], tuple[str, datetime]]:
    rows = await pool.fetch(
        "SELECT entity_type, entity_id, xmin::text AS version, first_seen FROM edges WHERE card_id = $1", card
    )
    return {(r["entity_type"], r["entity_id"]): (r["version"], r["first_seen"]) for r in rows}


async def test_a_repeat_sighting_rewrites_no_edge_and_an_earlier_one_moves_first_seen(pool: asyncpg.Pool) -> None:
    graph = PostgresGraphStore(pool)
    await write_transactions(pool, graph, [txn(1, T0 + timedelta(days=3))])
    first = await row_versions(pool, "wc1")
    assert set(first) == {("device", "wd1"), ("ip", "10.9.9.9"), ("merchant", "wm1")}

    await write_transactions(pool, graph, [txn(2, T0 + timedelta(days=4)), txn(3, T0 + timedelta(days=5))])
    assert await row_versions(pool, "wc1") == first  # same row versions: nothing written

    earlier = T0 + timedelta(days=1)
    await graph.upsert_edges([Edge("wc1", "device", "wd1", earlier, earlier, 1)])
    after = await row_versions(pool, "wc1")
    assert after[("device", "wd1")][1] == earlier
    assert after[("ip", "10.9.9.9")] == first[("ip", "10.9.9.9")]


async def test_edge_activity_counts_every_ledger_transaction_of_the_edge(pool: asyncpg.Pool) -> None:
    graph = PostgresGraphStore(pool)
    times = [T0 + timedelta(days=d, hours=2) for d in (6, 8, 7)]
    await write_transactions(pool, graph, [txn(10 + k, t, card="wc2", device="wd2") for k, t in enumerate(times)])
    row = await pool.fetchrow(
        """SELECT first_seen, last_seen, n FROM edge_activity
           WHERE card_id = 'wc2' AND entity_type = 'device' AND entity_id = 'wd2'"""
    )
    assert row is not None
    assert (row["first_seen"], row["last_seen"], row["n"]) == (min(times), max(times), 3)
    ledger = await pool.fetchval("SELECT count(*) FROM transactions WHERE card_id = 'wc2' AND merchant_id = 'wm1'")
    assert ledger == 3
    edges = await pool.fetchval(
        "SELECT n FROM edge_activity WHERE card_id = 'wc2' AND entity_type = 'merchant' AND entity_id = 'wm1'"
    )
    assert edges == ledger
