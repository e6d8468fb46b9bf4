"""Loading a generated world into the real PostgreSQL of the suite (ledger and graph store), for tests."""

from __future__ import annotations

import asyncio
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import asyncpg

from feature_svc.graph.postgres import PostgresGraphStore
from feature_svc.ledger import connect, load_world, migrate
from feature_svc.world import World, WorldParams, generate_world
from tests.stacks import Stack, own_stack

TINY = WorldParams(n_cards=400, n_transactions=6_000, days=21, seed=3, ring_share=0.02, card_testing_share=0.01)
"""The tiny world the GNN serving tests train a model on (with some ring and card-testing fraud)."""


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


def loaded_world(postgres_dsn: str, params: WorldParams) -> World:
    """The world of `params`, loaded into the ledger and the graph store of the default schema (the services')."""
    w = generate_world(params, progress=False)

    async def load() -> None:
        await (await load_world_into(postgres_dsn, w)).close()

    asyncio.run(load())
    return w


def train_tiny_gnn(world: World, model_dir: Path, served_head: str = "mlp", **config: object) -> Path:
    """Train the GNN (the `train` extra) on a small world with a few epochs and export it into `model_dir`,
    activating the MLP head (`gnn-*`) or the embeddings+GBM head (`embgbm-*`)."""
    from trainer.export import export
    from trainer.train import TrainConfig, run

    defaults: dict[str, object] = {"epochs": 3, "patience": 3, "val_days": 5, "test_days": 5, "baseline_iter": 30}
    result = run(world, None, TrainConfig(progress=False, **{**defaults, **config}))  # type: ignore[arg-type]
    export(result, model_dir, world_params=world.params.to_json(), served_head=served_head)
    return model_dir


def world_requests(rows: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """World ledger rows as /predict transactions, with ids `{prefix}-{i}`."""
    return [
        {
            "card_id": r["card_id"],
            "transaction_amount": float(r["amount"]),
            "merchant_id": r["merchant_id"],
            "mcc_code": r["mcc_code"],
            "country_code": r["country_code"],
            "device_id": r["device_id"],
            "ip_address": r["ip_address"],
            "channel": r["channel"],
            "transaction_id": f"{prefix}-{i}",
        }
        for i, r in enumerate(rows)
    ]


def gnn_stack(d: Path, redis_url: str, postgres_dsn: str, model_dir: Path) -> AbstractContextManager[Stack]:
    """`own_stack` serving the GNN in `model_dir` (its workers load the model and its embeddings before the gateway
    is ready: a longer wait)."""
    return own_stack(d, redis_url, postgres_dsn, model_dir, ready_timeout=90)
