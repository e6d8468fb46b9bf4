"""Embedding refresh from the live ledger with the exported encoder (onnxruntime, no torch), as a new model version:
the same embeddings the trainer's own path computes from the world, and an entity that arrived by ingestion has
its own row after the refresh (before it, none: serving uses the per-type default)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import numpy as np
import pyarrow.parquet as pq
import pytest

pytest.importorskip("torch")
pytest.importorskip("torch_geometric")

from feature_svc.graph import PostgresGraphStore
from feature_svc.ingest.embeddings_refresh import refresh_embeddings
from feature_svc.ingest.ledger_writer import write_transactions
from feature_svc.world import World, WorldParams, generate_world
from inference_svc.artifact import active_version, read_metadata
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


def rows(path: Path) -> dict[tuple[str, str], np.ndarray]:
    table = pq.read_table(path)
    dim = len(table["embedding"][0].as_py())
    matrix = np.asarray(table["embedding"].combine_chunks().flatten(), dtype=np.float32).reshape(-1, dim)
    keys = zip(table["entity_type"].to_pylist(), table["entity_id"].to_pylist(), strict=True)
    return {k: matrix[i] for i, k in enumerate(keys)}


async def test_refresh_matches_the_trainer_and_covers_ingested_entities(
    pool: asyncpg.Pool, world: World, gnn_dir: Path
) -> None:
    from trainer.data import ledger_from_world, to_us
    from trainer.embed import onnx_embeddings
    from trainer.snapshot import edge_table, snapshot

    version = active_version(gnn_dir)
    spec = read_metadata(gnn_dir / version / "metadata.json").embedding_spec()
    assert spec is not None
    as_of = datetime.now(UTC)
    summary = await refresh_embeddings(pool, gnn_dir, as_of=as_of)
    new_version = str(summary["new_version"])
    assert new_version.startswith(version + "-emb") and active_version(gnn_dir) == version  # not activated here
    meta = read_metadata(gnn_dir / new_version / "metadata.json")
    assert meta.version == new_version and meta.embedding_spec().as_of == as_of.isoformat()  # type: ignore[union-attr]
    assert (gnn_dir / new_version / "model.onnx").read_bytes() == (gnn_dir / version / "model.onnx").read_bytes()
    refreshed = rows(gnn_dir / new_version / spec.file)

    # the world's entities: what the trainer's own (torch-free) path gives from the world, as of the same time
    ledger = ledger_from_world(world)
    snap = snapshot(ledger, edge_table(ledger), to_us(as_of))
    emb = onnx_embeddings(gnn_dir / version / (spec.encoder or "encoder.onnx"), snap)
    compared = 0
    for t in ("card", "merchant", "device", "ip"):
        for k in np.flatnonzero(snap.x[t][:, 0] > 0)[:40]:
            got = refreshed[(t, str(ledger.ids[t][k]))]
            np.testing.assert_allclose(got, emb[t][k], rtol=1e-4, atol=1e-5)
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
    assert ("card", "card_brand_new") not in refreshed
    later = await refresh_embeddings(pool, gnn_dir, version=new_version)
    assert str(later["new_version"]).count("-emb") == 1  # a refresh of a refresh replaces the suffix
    again = rows(gnn_dir / str(later["new_version"]) / spec.file)
    default = np.asarray(spec.default["card"], dtype=np.float32)
    assert not np.allclose(again[("card", "card_brand_new")], default)  # a seen card, not the unseen default
