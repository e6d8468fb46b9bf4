"""One contract for every GraphStore, on a small hand-built world whose answers are known exactly.

Runs against PostgresGraphStore always (real PostgreSQL, own schema), and against Neo4jGraphStore when
NEO4J_URI is set (with NEO4J_USER, NEO4J_PASSWORD and optionally NEO4J_DATABASE). The Neo4j run deletes
every :Card, :Merchant, :Device and :IP node of that database, so point it at a throwaway one.

The world (days after 2026-09-01, noon UTC):
    household   c1 -d1- c2 (day 1, 2),  c3 joins d1 on day 10;  c1, c2, c3 each have their own IP
    ring        r1, r2, r3 on devices rd1/rd2 and proxy IP rip1 at merchant m3 (days 3-5)
    labels      r2 fraud, label on day 8;  r3 fraud, label on day 20
    loner       c9 on d9 / ip9 at m1 (day 1)
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pyarrow as pa
import pytest

from feature_svc.graph import (
    CardLabel,
    Edge,
    GraphError,
    GraphStore,
    Neighbour,
    Neo4jGraphStore,
    PostgresGraphStore,
    SharedCard,
)
from feature_svc.world import World, WorldParams
from feature_svc.world.model import SCHEMAS, TRANSACTIONS_SCHEMA

SCHEMA = "test_graph_contract"
T0 = datetime(2026, 9, 1, 12, tzinfo=UTC)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


# (day, card, device, ip, merchant, fraud label day or None)
ROWS: list[tuple[float, str, str, str, str, float | None]] = [
    (1, "c1", "d1", "ip1", "m1", None),
    (1, "c9", "d9", "ip9", "m1", None),
    (2, "c2", "d1", "ip2", "m1", None),
    (3, "r1", "rd1", "rip1", "m3", None),
    (3, "r2", "rd1", "rip1", "m3", 8),
    (4, "r3", "rd2", "rip1", "m3", 20),
    (5, "r1", "rd2", "rip1", "m3", None),
    (5, "r2", "rd2", "rip1", "m3", 9),
    (6, "c1", "d1", "ip1", "m2", None),
    (10, "c3", "d1", "ip3", "m2", None),
]


def hand_world() -> World:
    rows = [
        {
            "transaction_id": f"tx_{i}",
            "timestamp": day(d),
            "card_id": card,
            "merchant_id": merchant,
            "device_id": device,
            "ip_address": ip,
            "amount": 10.0,
            "currency": "USD",
            "country_code": "US",
            "mcc_code": "5411",
            "channel": "ecom",
            "is_fraud": label is not None,
            "fraud_kind": "ring" if label is not None else "",
            "label_time": day(label) if label is not None else None,
        }
        for i, (d, card, device, ip, merchant, label) in enumerate(ROWS)
    ]
    empty = {name: schema.empty_table() for name, schema in SCHEMAS.items() if name != "transactions"}
    return World(params=WorldParams(), transactions=pa.Table.from_pylist(rows, schema=TRANSACTIONS_SCHEMA), **empty)


async def _postgres(dsn: str) -> GraphStore:
    conn = await asyncpg.connect(dsn)
    await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    await conn.close()
    return await PostgresGraphStore.open(dsn, schema=SCHEMA)


async def _neo4j() -> GraphStore:
    return await Neo4jGraphStore.open(
        os.environ["NEO4J_URI"],
        os.environ.get("NEO4J_USER", "neo4j"),
        os.environ.get("NEO4J_PASSWORD", ""),
        database=os.environ.get("NEO4J_DATABASE") or None,
    )


@pytest.fixture(
    scope="module",
    params=[
        "postgres",
        pytest.param(
            "neo4j",
            marks=[
                pytest.mark.neo4j,
                pytest.mark.skipif(
                    not os.environ.get("NEO4J_URI"),
                    reason="NEO4J_URI is not set: the Neo4j run of the graph contract needs a Neo4j server",
                ),
            ],
        ),
    ],
)
async def opened(request: pytest.FixtureRequest) -> AsyncIterator[GraphStore]:
    if request.param == "postgres":
        store = await _postgres(request.getfixturevalue("postgres_dsn"))
    else:
        store = await _neo4j()
    yield store
    await store.close()


@pytest.fixture
async def store(opened: GraphStore) -> GraphStore:
    """The store freshly loaded with the hand-built world, so tests that write do not leak into others."""
    counts = await opened.load_world(hand_world(), progress=False)
    # 10 transactions give 9 distinct card-device, 7 card-IP and 8 card-merchant pairs; 2 labelled cards
    assert counts == {"edges": 24, "card_labels": 2}
    return opened


def ids(neighbours: list[Neighbour]) -> list[tuple[str, str]]:
    return [(n.entity_type, n.entity_id) for n in neighbours]


# --------------------------------------------------------------------------------------------- one hop


async def test_neighbours_of_a_card(store: GraphStore) -> None:
    found = await store.neighbours("card", "c1")
    assert ids(found) == [("device", "d1"), ("ip", "ip1"), ("merchant", "m1"), ("merchant", "m2")]
    assert {n.entity_id: n.first_seen for n in found} == {
        "d1": day(1),
        "ip1": day(1),
        "m1": day(1),
        "m2": day(6),
    }


async def test_neighbours_as_of_cut_later_edges(store: GraphStore) -> None:
    assert ids(await store.neighbours("card", "c1", as_of=day(6))) == [
        ("device", "d1"),
        ("ip", "ip1"),
        ("merchant", "m1"),
    ]
    assert ids(await store.neighbours("device", "d1")) == [("card", "c1"), ("card", "c2"), ("card", "c3")]
    assert ids(await store.neighbours("device", "d1", as_of=day(5))) == [("card", "c1"), ("card", "c2")]
    assert await store.neighbours("device", "d1", as_of=day(1)) == [], "as_of is strict: day 1 itself is not before"


async def test_degree(store: GraphStore) -> None:
    assert await store.degree("card", "c1") == 4
    assert await store.degree("card", "c1", neighbour_type="merchant") == 2
    assert await store.degree("card", "c1", as_of=day(2)) == 3
    assert await store.degree("device", "d1") == 3
    assert await store.degree("device", "d1", neighbour_type="ip") == 0
    assert await store.degree("merchant", "m1") == 3
    assert await store.degree("ip", "rip1", as_of=day(4)) == 2


async def test_shared_entities(store: GraphStore) -> None:
    assert await store.shared_entities("c1", via="device") == [SharedCard("c2", 1), SharedCard("c3", 1)]
    assert await store.shared_entities("c1", via="device", as_of=day(5)) == [SharedCard("c2", 1)]
    assert await store.shared_entities("r1", via="device") == [SharedCard("r2", 2), SharedCard("r3", 1)]
    assert await store.shared_entities("r1", via="device", as_of=day(5)) == [SharedCard("r2", 1)]
    assert await store.shared_entities("r1", via="ip") == [SharedCard("r2", 1), SharedCard("r3", 1)]
    assert await store.shared_entities("c1", via="merchant") == [
        SharedCard("c2", 1),
        SharedCard("c3", 1),
        SharedCard("c9", 1),
    ]
    assert await store.shared_entities("c9", via="device") == []


# -------------------------------------------------------------------------------------------- multi-hop


async def test_k_hop_count(store: GraphStore) -> None:
    assert await store.k_hop_count("card", "c1", 1) == 2  # d1, ip1 (merchants are not walked by default)
    assert await store.k_hop_count("card", "c1", 2) == 4  # + c2, c3
    assert await store.k_hop_count("card", "c1", 3) == 6  # + ip2, ip3
    assert await store.k_hop_count("card", "c1", 3, as_of=day(5)) == 4  # c3 and ip3 come on day 10
    assert await store.k_hop_count("card", "c1", 2, via=("device", "ip", "merchant")) == 7
    assert await store.k_hop_count("merchant", "m3", 1) == 3  # r1, r2, r3
    assert await store.k_hop_count("merchant", "m3", 2) == 6  # + rd1, rd2, rip1


async def test_fraud_cards_within_uses_labels_known_at_as_of(store: GraphStore) -> None:
    assert await store.fraud_cards_within("card", "r1", hops=2) == 2
    assert await store.fraud_cards_within("card", "r1", hops=2, as_of=day(10)) == 1  # r3's label comes day 20
    assert await store.fraud_cards_within("card", "r1", hops=2, as_of=day(8)) == 0  # strict: day 8 not before
    assert await store.fraud_cards_within("card", "r2", hops=2) == 1, "the start card itself never counts"
    assert await store.fraud_cards_within("merchant", "m3", hops=1) == 2
    assert await store.fraud_cards_within("card", "c1", hops=4) == 0


async def test_component_size(store: GraphStore) -> None:
    assert await store.component_size("card", "c1") == 7  # c1 c2 c3 d1 ip1 ip2 ip3
    assert await store.component_size("card", "c1", as_of=day(5)) == 5
    assert await store.component_size("card", "c1", max_size=3) == 3
    assert await store.component_size("card", "r1") == 6
    assert await store.component_size("card", "c9") == 3
    assert await store.component_size("card", "nobody") == 1


async def test_unknown_entities_are_empty_not_errors(store: GraphStore) -> None:
    assert await store.neighbours("card", "nobody") == []
    assert await store.degree("ip", "10.9.9.9") == 0
    assert await store.k_hop_count("device", "nothing", 3) == 0
    assert await store.fraud_cards_within("card", "nobody") == 0
    assert await store.shared_entities("nobody") == []


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.neighbours("user", "u1"), "unknown entity type"),
        (lambda s: s.neighbours("card", "bad id!"), "malformed card id"),
        (lambda s: s.k_hop_count("card", "c1", 0), "k must be an integer from 1"),
        (lambda s: s.fraud_cards_within("card", "c1", hops=9), "hops must be an integer from 1"),
        (lambda s: s.degree("card", "c1", as_of=datetime(2026, 9, 5)), "timezone-aware"),
        (lambda s: s.k_hop_count("card", "c1", 2, via=()), "via must name at least one"),
        (lambda s: s.k_hop_count("card", "c1", 2, via=("card",)), "unknown link type"),
        (lambda s: s.shared_entities("c1", via="phone"), "unknown link type"),
        (lambda s: s.component_size("card", "c1", max_size=0), "max_size must be a positive"),
    ],
)
async def test_bad_arguments_are_clear_errors(store: GraphStore, call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(GraphError, match=message):
        await call(store)


# ----------------------------------------------------------------------------------------------- writes


async def test_upsert_edges_merges_and_respects_as_of(store: GraphStore) -> None:
    assert await store.upsert_edges([Edge("c9", "device", "d1", day(30), day(30), 1)]) == 1
    assert await store.shared_entities("c1", via="device", as_of=day(20)) == [
        SharedCard("c2", 1),
        SharedCard("c3", 1),
    ]
    assert [s.card_id for s in await store.shared_entities("c1", via="device")] == ["c2", "c3", "c9"]
    # an earlier sighting of the same pair moves first_seen back; duplicates in one batch collapse
    written = await store.upsert_edges(
        [Edge("c9", "device", "d1", day(25), day(26), 1), Edge("c9", "device", "d1", day(27), day(28), 2)]
    )
    assert written == 1
    by_id = {n.entity_id: n.first_seen for n in await store.neighbours("card", "c9")}
    assert by_id["d1"] == day(25)
    assert await store.degree("card", "c9") == 4


async def test_upsert_card_labels_keeps_the_earliest(store: GraphStore) -> None:
    await store.upsert_edges([Edge("c9", "device", "d1", day(30), day(30), 1)])
    assert await store.upsert_card_labels([CardLabel("c9", day(40))]) == 1
    assert await store.upsert_card_labels([CardLabel("c9", day(50))]) == 1
    assert await store.fraud_cards_within("card", "c1", hops=2, as_of=day(35)) == 0
    assert await store.fraud_cards_within("card", "c1", hops=2, as_of=day(41)) == 1
    assert await store.fraud_cards_within("card", "c1", hops=2) == 1


async def test_load_world_replaces_the_graph(store: GraphStore) -> None:
    await store.upsert_edges([Edge("c9", "ip", "ip1", day(7), day(7), 1)])
    assert await store.degree("card", "c9") == 4
    await store.load_world(hand_world(), progress=False)
    assert await store.degree("card", "c9") == 3
    assert await store.k_hop_count("card", "c1", 3) == 6


async def test_bad_edges_are_refused(store: GraphStore) -> None:
    with pytest.raises(GraphError, match="unknown link type"):
        await store.upsert_edges([Edge("c1", "phone", "p1", day(1), day(1), 1)])  # type: ignore[arg-type]
    with pytest.raises(GraphError, match="first_seen <= last_seen"):
        await store.upsert_edges([Edge("c1", "device", "d1", day(2), day(1), 1)])
