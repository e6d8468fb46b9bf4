"""The PostgreSQL ledger on a real server: migrations apply once, COPY loads every row exactly once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pyarrow.compute as pc
import pytest

from feature_svc.ledger import LedgerError, MigrationError, connect, load_world, migrate, migrations
from feature_svc.world import World, WorldParams, generate_world

SCHEMA = "test_ledger"


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(WorldParams(n_cards=300, n_transactions=5_000, seed=3), progress=False)


@pytest.fixture(scope="module")
async def pool(postgres_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    conn = await asyncpg.connect(postgres_dsn)
    await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    await conn.close()
    pool = await connect(postgres_dsn, schema=SCHEMA)
    yield pool
    await pool.close()


async def test_migrate_is_idempotent(pool: asyncpg.Pool) -> None:
    versions = [m.version for m in migrations()]
    assert versions == sorted(versions) and versions[:2] == ["001", "002"]
    assert await migrate(pool) == versions
    assert await migrate(pool) == []
    assert await pool.fetchval("SELECT count(*) FROM schema_migrations") == len(versions)
    tables = {r["tablename"] for r in await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", SCHEMA)}
    expected = {
        "transactions",
        "labels",
        "cards",
        "merchants",
        "devices",
        "ips",
        "edges",
        "card_fraud_labels",
    }
    assert expected <= tables


async def test_edited_migration_is_refused(pool: asyncpg.Pool) -> None:
    await migrate(pool)
    await pool.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = '001'")
    try:
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(pool)
    finally:
        await pool.execute("UPDATE schema_migrations SET checksum = $1 WHERE version = '001'", migrations()[0].checksum)
    assert await migrate(pool) == []


async def _counts(pool: asyncpg.Pool) -> dict[str, int]:
    tables = ("transactions", "labels", "cards", "merchants", "devices", "ips")
    return {t: await pool.fetchval(f"SELECT count(*) FROM {t}") for t in tables}


async def test_load_counts_match_the_world(pool: asyncpg.Pool, world: World) -> None:
    await migrate(pool)
    counts = await load_world(pool, world, progress=False)
    expected = {
        "transactions": world.transactions.num_rows,
        "labels": world.summary()["fraud"],
        "cards": world.cards.num_rows,
        "merchants": world.merchants.num_rows,
        "devices": world.devices.num_rows,
        "ips": world.ips.num_rows,
    }
    assert counts == expected
    assert await _counts(pool) == expected

    first = world.transactions.slice(0, 1).to_pylist()[0]
    row = await pool.fetchrow("SELECT * FROM transactions WHERE transaction_id = $1", first["transaction_id"])
    assert row is not None
    for column in ("timestamp", "card_id", "merchant_id", "device_id", "ip_address", "amount", "channel"):
        assert row[column] == first[column], column

    late = await pool.fetchval("SELECT count(*) FROM labels WHERE label_time <= transaction_time")
    assert late == 0
    kinds = {
        r["fraud_kind"]: r["n"] for r in await pool.fetch("SELECT fraud_kind, count(*) AS n FROM labels GROUP BY 1")
    }
    assert kinds == {k: v for k, v in world.summary().items() if k in kinds}
    fraud_sum = pc.sum(world.transactions.filter(world.transactions["is_fraud"])["amount"]).as_py()
    db_sum = await pool.fetchval(
        "SELECT sum(t.amount) FROM transactions t JOIN labels l USING (transaction_id) WHERE l.is_fraud"
    )
    assert db_sum == pytest.approx(fraud_sum)


async def test_reload_does_not_duplicate(pool: asyncpg.Pool, world: World) -> None:
    await migrate(pool)
    await load_world(pool, world, progress=False)
    before = await _counts(pool)
    await load_world(pool, world, progress=False)
    assert await _counts(pool) == before
    indexes = {
        r["indexname"]
        for r in await pool.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = 'transactions'", SCHEMA
        )
    }
    assert {"transactions_pkey", "transactions_card_time", "transactions_time"} <= indexes, "indexes rebuilt"


async def test_connect_errors_are_clear(postgres_dsn: str) -> None:
    with pytest.raises(LedgerError, match="invalid schema name"):
        await connect(postgres_dsn, schema="Robert'); DROP TABLE students;--")
    with pytest.raises(LedgerError, match="cannot open the ledger") as caught:
        await connect("postgresql://fraudmesh:secret@127.0.0.1:1/fraudmesh")
    assert "secret" not in str(caught.value), "the password is never shown"
