"""The set-based graph features (feature_svc/graph/batch.py) answer exactly what the per-entity traversals answer,
for every entity of a world at several points in time (before, during and after its fraud labels)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from feature_svc.definitions import FEATURES
from feature_svc.graph import PostgresGraphStore
from feature_svc.world import World, WorldParams, generate_world
from tests.worlds import load_world_into

SCHEMA = "test_graph_batch"


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(WorldParams(n_cards=300, n_transactions=4_000, seed=17), progress=False)


@pytest.fixture(scope="module")
async def pool(postgres_dsn: str, world: World) -> AsyncIterator[asyncpg.Pool]:
    pool = await load_world_into(postgres_dsn, world, schema=SCHEMA, max_size=8)
    yield pool
    await pool.close()


async def test_batch_values_equal_the_per_entity_traversals(pool: asyncpg.Pool, world: World) -> None:
    graph = PostgresGraphStore(pool)
    tx = world.transactions.to_pylist()
    ids = {
        "card": sorted({r["card_id"] for r in tx}),
        "merchant": sorted({r["merchant_id"] for r in tx if r["merchant_id"]}),
        "device": sorted({r["device_id"] for r in tx if r["device_id"]}),
        "ip": sorted({r["ip_address"] for r in tx if r["ip_address"]}),
    }
    start = world.params.start
    moments = [start + timedelta(days=d) for d in (3, 20, world.params.days + 40)]
    compared = nonzero = 0
    for f in FEATURES.values():
        if f.graph_batch is None:
            continue
        assert f.graph is not None
        points = [(i, t) for i in ids[f.entity_type][:150] for t in moments]
        batch = await graph.batch_values(f.graph_batch, f.entity_type, [p[0] for p in points], [p[1] for p in points])
        for (eid, as_of), value in zip(points, batch, strict=True):
            expected = await f.graph(graph, eid, as_of)
            assert value == expected, f"{f.name} of {eid} as of {as_of}: batch {value}, per entity {expected}"
            compared += 1
            nonzero += value != 0
    assert compared > 1000 and nonzero > 100  # the comparison saw real graph structure, not only zeros


def test_the_component_cap_is_the_registrys() -> None:
    from feature_svc.definitions import COMPONENT_CAP
    from feature_svc.graph.batch import COMPONENT_CAP as BATCH_CAP

    assert BATCH_CAP == COMPONENT_CAP
