"""Embedding refresh from the live ledger with the exported encoder (onnxruntime, no torch): the same embeddings
the trainer's own path computes from the world, and an entity that arrived by ingestion gets its own after the
refresh (before it, no key: serving uses the per-type default)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import numpy as np
import pytest
import redis.asyncio as aioredis

pytest.importorskip("torch")
pytest.importorskip("torch_geometric")

from feature_svc.graph import PostgresGraphStore
from feature_svc.ingest.embeddings_refresh import refresh_embeddings
from feature_svc.ingest.ledger_writer import write_transactions
from feature_svc.world import World, WorldParams, generate_world
from inference_svc.artifact import active_version, read_metadata
from inference_svc.embeddings import key
from shared.ingest_messages import TxnIngest
from tests.worlds import load_world_into, train_tiny_gnn

SCHEMA = "test_emb_refresh"
TINY = WorldParams(n_cards=300, n_transactions=4_000, days=14, seed=4, start=datetime.now(UTC) - timedelta(days=15))


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(TINY, progress=False)


@pytest.fixture(scope="module")
def gnn_dir(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_gnn(world, tmp_path_factory.mktemp("emb-models"), epochs=2, patience=2, val_days=3, test_days=3)


@pytest.fixture(scope="module")
async def pool(postgres_dsn: str, world: World) -> AsyncIterator[asyncpg.Pool]:
    pool = await load_world_into(postgres_dsn, world, schema=SCHEMA, max_size=4)
    yield pool
    await pool.close()


async def test_refresh_matches_the_trainer_and_covers_ingested_entities(
    pool: asyncpg.Pool, world: World, gnn_dir: Path, redis_url: str
) -> None:
    from trainer.data import ledger_from_world, to_us
    from trainer.embed import onnx_embeddings
    from trainer.snapshot import edge_table, snapshot

    redis = aioredis.from_url(redis_url.rsplit("/", 1)[0] + "/7")
    await redis.flushdb()
    version = active_version(gnn_dir)
    spec = read_metadata(gnn_dir / version / "metadata.json").embedding_spec()
    assert spec is not None
    as_of = datetime.now(UTC)
    summary = await refresh_embeddings(pool, redis, gnn_dir, as_of=as_of)
    assert summary["version"] == version and int(str(summary["written"])) > 300

    # the world's entities: what the trainer's own (torch-free) path gives from the world, as of the same time
    ledger = ledger_from_world(world)
    snap = snapshot(ledger, edge_table(ledger), to_us(as_of))
    emb = onnx_embeddings(gnn_dir / version / (spec.encoder or "encoder.onnx"), snap)
    compared = 0
    for t in ("card", "merchant", "device", "ip"):
        for k in np.flatnonzero(snap.x[t][:, 0] > 0)[:40]:
            raw = await redis.get(key(version, t, str(ledger.ids[t][k])))
            assert raw is not None, f"{t} {ledger.ids[t][k]} has no refreshed embedding"
            np.testing.assert_allclose(np.frombuffer(raw, dtype="<f4"), emb[t][k], rtol=1e-4, atol=1e-5)
            compared += 1
    assert compared == 160

    # a card that arrives by ingestion: the default until the next refresh, its own embedding after it
    new = TxnIngest(
        transaction_id="emb-new-1",
        card_id="card_brand_new",
        transaction_amount=12.0,
        merchant_id=world.transactions["merchant_id"][0].as_py(),
        device_id="dev_brand_new",
        timestamp=datetime.now(UTC) - timedelta(seconds=1),
    )
    await write_transactions(pool, PostgresGraphStore(pool), [new])
    assert await redis.get(key(version, "card", "card_brand_new")) is None
    await refresh_embeddings(pool, redis, gnn_dir)
    fresh = await redis.get(key(version, "card", "card_brand_new"))
    assert fresh is not None and len(fresh) == 4 * spec.dim
    default = np.asarray(spec.default["card"], dtype=np.float32)
    assert not np.allclose(np.frombuffer(fresh, dtype="<f4"), default)  # a seen card, not the unseen default
    await redis.flushdb()
    await redis.aclose()
