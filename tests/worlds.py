"""Loading a generated world into the real PostgreSQL of the suite (ledger and graph store), for tests."""

from __future__ import annotations

import asyncpg

from feature_svc.graph.postgres import PostgresGraphStore
from feature_svc.ledger import connect, load_world, migrate
from feature_svc.world import World


async def load_world_into(dsn: str, world: World, *, schema: str | None = None, max_size: int = 8) -> asyncpg.Pool:
    """A pool on `schema` (dropped and re-created; the DSN's default schema when None) holding `world` in the
    ledger and the PostgreSQL graph store. The caller closes the pool."""
    if schema is not None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()
    pool = await connect(dsn, schema=schema, max_size=max_size)
    await migrate(pool)
    await load_world(pool, world, progress=False)
    await PostgresGraphStore(pool).load_world(world, progress=False)
    return pool
