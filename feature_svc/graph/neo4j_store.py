"""The Neo4j graph store, in Cypher through the official async driver.

Model: one node label per entity type (:Card, :Merchant, :Device, :IP), each with a unique `id`, and one
relationship type per link, always from the card: (:Card)-[:USED_DEVICE|USED_IP|PAID_AT]->(x), carrying
first_seen, last_seen and n. A card's earliest fraud label time is the property `fraud_label_time`.
Constraints and indexes are created at start (`open`), idempotently.

Labels and relationship types cannot be query parameters in Cypher, so they are spliced in from the fixed
tables below, never from user input (ids and times always travel as parameters).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final, LiteralString, cast

import neo4j
from neo4j import AsyncDriver, AsyncGraphDatabase, RoutingControl
from tqdm import tqdm

from feature_svc.graph.base import FrontierGraphStore
from feature_svc.graph.model import (
    CardLabel,
    Edge,
    GraphError,
    LinkType,
    Neighbour,
    Node,
    NodeType,
    SharedCard,
    card_labels_from_transactions,
    check_as_of,
    check_link_type,
    check_node,
    check_node_type,
    edges_from_transactions,
    merge_edges,
    merge_labels,
)
from feature_svc.world import World

LABELS: Final[dict[NodeType, str]] = {"card": "Card", "merchant": "Merchant", "device": "Device", "ip": "IP"}
TYPE_OF_LABEL: Final[dict[str, NodeType]] = {label: t for t, label in LABELS.items()}
RELATIONSHIPS: Final[dict[LinkType, str]] = {"device": "USED_DEVICE", "ip": "USED_IP", "merchant": "PAID_AT"}
TYPE_OF_RELATIONSHIP: Final[dict[str, LinkType]] = {r: t for t, r in RELATIONSHIPS.items()}
BATCH: Final = 10_000

SCHEMA_STATEMENTS: Final[tuple[str, ...]] = (
    *(
        f"CREATE CONSTRAINT {label.lower()}_id IF NOT EXISTS FOR (n:{label}) REQUIRE n.id IS UNIQUE"
        for label in LABELS.values()
    ),
    "CREATE INDEX card_fraud_label_time IF NOT EXISTS FOR (c:Card) ON (c.fraud_label_time)",
    *(
        f"CREATE INDEX {rel.lower()}_first_seen IF NOT EXISTS FOR ()-[r:{rel}]-() ON (r.first_seen)"
        for rel in RELATIONSHIPS.values()
    ),
)

_AS_OF: Final = "($as_of IS NULL OR r.first_seen < $as_of)"


def _q(text: str) -> LiteralString:
    """Mark a query assembled from this module's fixed labels as safe for the driver's typing."""
    return text  # mypy reads LiteralString as str; the driver's stubs want it


def _native(value: Any) -> datetime:
    """neo4j.time.DateTime -> an aware datetime in UTC."""
    return cast(datetime, value.to_native()).astimezone(UTC)


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


class Neo4jGraphStore(FrontierGraphStore):
    """GraphStore over Neo4j 5+. Use `open`, which checks the connection and creates the schema."""

    def __init__(self, driver: AsyncDriver, *, database: str | None = None) -> None:
        self._driver = driver
        self._database = database

    @classmethod
    async def open(cls, uri: str, user: str, password: str, *, database: str | None = None) -> Neo4jGraphStore:
        if not uri:
            raise GraphError("no Neo4j URI: set FRAUDMESH_NEO4J_URI (e.g. neo4j://127.0.0.1:7687)")
        driver = AsyncGraphDatabase.driver(uri, auth=(user, password))
        store = cls(driver, database=database)
        try:
            await driver.verify_connectivity()
            await store.ensure_schema()
        except neo4j.exceptions.AuthError as exc:
            await driver.close()
            raise GraphError(f"Neo4j at {uri} rejected user {user!r}: check FRAUDMESH_NEO4J_PASSWORD") from exc
        except (neo4j.exceptions.Neo4jError, neo4j.exceptions.DriverError, OSError) as exc:
            await driver.close()
            raise GraphError(f"cannot use Neo4j at {uri}: {exc}") from exc
        return store

    async def ensure_schema(self) -> None:
        for statement in SCHEMA_STATEMENTS:
            await self._write(statement)

    async def close(self) -> None:
        await self._driver.close()

    async def _read(self, query: str, **params: Any) -> list[neo4j.Record]:
        result = await self._driver.execute_query(
            _q(query), params, routing_=RoutingControl.READ, database_=self._database
        )
        return list(result.records)

    async def _write(self, query: str, **params: Any) -> None:
        await self._driver.execute_query(_q(query), params, routing_=RoutingControl.WRITE, database_=self._database)

    # ------------------------------------------------------------------------------------- one hop

    async def neighbours(self, entity_type: str, entity_id: str, as_of: datetime | None = None) -> list[Neighbour]:
        node = check_node(entity_type, entity_id)
        as_of = check_as_of(as_of)
        if node.type == "card":
            records = await self._read(
                f"""MATCH (:Card {{id: $id}})-[r]->(x) WHERE {_AS_OF}
                    RETURN type(r) AS rel, x.id AS id, r.first_seen AS first_seen""",
                id=node.id,
                as_of=as_of,
            )
            found = [Neighbour(TYPE_OF_RELATIONSHIP[r["rel"]], r["id"], _native(r["first_seen"])) for r in records]
            return sorted(found, key=lambda n: (n.entity_type, n.entity_id))
        records = await self._read(
            f"""MATCH (:{LABELS[node.type]} {{id: $id}})<-[r]-(c:Card) WHERE {_AS_OF}
                RETURN c.id AS id, r.first_seen AS first_seen ORDER BY id""",
            id=node.id,
            as_of=as_of,
        )
        return [Neighbour("card", r["id"], _native(r["first_seen"])) for r in records]

    async def degree(
        self,
        entity_type: str,
        entity_id: str,
        as_of: datetime | None = None,
        neighbour_type: NodeType | None = None,
    ) -> int:
        node = check_node(entity_type, entity_id)
        as_of = check_as_of(as_of)
        if neighbour_type is not None:
            check_node_type(neighbour_type)
        if node.type == "card":
            if neighbour_type == "card":
                return 0
            rel = "" if neighbour_type is None else f":{RELATIONSHIPS[neighbour_type]}"
            pattern = f"(:Card {{id: $id}})-[r{rel}]->()"
        else:
            if neighbour_type not in (None, "card"):
                return 0
            pattern = f"(:{LABELS[node.type]} {{id: $id}})<-[r]-(:Card)"
        records = await self._read(f"MATCH {pattern} WHERE {_AS_OF} RETURN count(r) AS n", id=node.id, as_of=as_of)
        return int(records[0]["n"])

    async def shared_entities(
        self, card_id: str, via: LinkType = "device", as_of: datetime | None = None
    ) -> list[SharedCard]:
        check_node("card", card_id)
        rel = RELATIONSHIPS[check_link_type(via)]
        records = await self._read(
            f"""MATCH (c:Card {{id: $id}})-[mine:{rel}]->(x)<-[other:{rel}]-(o:Card)
                WHERE o <> c AND ($as_of IS NULL OR (mine.first_seen < $as_of AND other.first_seen < $as_of))
                RETURN o.id AS card_id, count(DISTINCT x) AS shared
                ORDER BY shared DESC, card_id""",
            id=card_id,
            as_of=check_as_of(as_of),
        )
        return [SharedCard(r["card_id"], int(r["shared"])) for r in records]

    async def _expand(self, frontier: set[Node], via: tuple[LinkType, ...], as_of: datetime | None) -> set[Node]:
        found: set[Node] = set()
        by_type: dict[NodeType, list[str]] = defaultdict(list)
        for node in frontier:
            by_type[node.type].append(node.id)
        if by_type.get("card"):
            rels = "|".join(RELATIONSHIPS[v] for v in via)
            records = await self._read(
                f"""UNWIND $ids AS cid MATCH (:Card {{id: cid}})-[r:{rels}]->(x) WHERE {_AS_OF}
                    RETURN DISTINCT type(r) AS rel, x.id AS id""",
                ids=by_type["card"],
                as_of=as_of,
            )
            found.update(Node(TYPE_OF_RELATIONSHIP[r["rel"]], r["id"]) for r in records)
        for node_type, ids in by_type.items():
            if node_type == "card":
                continue
            records = await self._read(
                f"""UNWIND $ids AS eid MATCH (:{LABELS[node_type]} {{id: eid}})<-[r]-(c:Card) WHERE {_AS_OF}
                    RETURN DISTINCT c.id AS id""",
                ids=ids,
                as_of=as_of,
            )
            found.update(Node("card", r["id"]) for r in records)
        return found

    async def _count_fraud_cards(self, card_ids: list[str], as_of: datetime | None) -> int:
        records = await self._read(
            """MATCH (c:Card) WHERE c.id IN $ids AND c.fraud_label_time IS NOT NULL
                 AND ($as_of IS NULL OR c.fraud_label_time < $as_of)
               RETURN count(c) AS n""",
            ids=card_ids,
            as_of=as_of,
        )
        return int(records[0]["n"])

    # -------------------------------------------------------------------------------------- writes

    async def _write_edge_rows(self, link: LinkType, rows: list[dict[str, Any]]) -> None:
        await self._write(
            f"""UNWIND $rows AS row
                MERGE (c:Card {{id: row.card_id}})
                MERGE (x:{LABELS[link]} {{id: row.entity_id}})
                MERGE (c)-[r:{RELATIONSHIPS[link]}]->(x)
                  ON CREATE SET r.first_seen = row.first_seen, r.last_seen = row.last_seen, r.n = row.n
                  ON MATCH SET
                    r.first_seen = CASE WHEN row.first_seen < r.first_seen
                                        THEN row.first_seen ELSE r.first_seen END,
                    r.last_seen = CASE WHEN row.last_seen > r.last_seen
                                       THEN row.last_seen ELSE r.last_seen END,
                    r.n = r.n + row.n""",
            rows=rows,
        )

    async def _write_label_rows(self, rows: list[dict[str, Any]]) -> None:
        await self._write(
            """UNWIND $rows AS row
               MERGE (c:Card {id: row.card_id})
               SET c.fraud_label_time = CASE
                   WHEN c.fraud_label_time IS NULL OR row.label_time < c.fraud_label_time THEN row.label_time
                   ELSE c.fraud_label_time END""",
            rows=rows,
        )

    async def upsert_edges(self, edges: Iterable[Edge]) -> int:
        merged = merge_edges(edges)
        by_link: dict[LinkType, list[dict[str, Any]]] = defaultdict(list)
        for e in merged:
            by_link[e.entity_type].append(
                {
                    "card_id": e.card_id,
                    "entity_id": e.entity_id,
                    "first_seen": _utc(e.first_seen),
                    "last_seen": _utc(e.last_seen),
                    "n": e.n,
                }
            )
        for link, rows in by_link.items():
            for i in range(0, len(rows), BATCH):
                await self._write_edge_rows(link, rows[i : i + BATCH])
        return len(merged)

    async def upsert_card_labels(self, labels: Iterable[CardLabel]) -> int:
        merged = merge_labels(labels)
        rows = [{"card_id": label.card_id, "label_time": _utc(label.label_time)} for label in merged]
        for i in range(0, len(rows), BATCH):
            await self._write_label_rows(rows[i : i + BATCH])
        return len(merged)

    async def clear(self) -> None:
        """Delete every node of the fraudmesh labels (and so every relationship), a batch per transaction
        so that a large graph never needs one huge transaction. Plain MATCH ... LIMIT works on every
        Neo4j 5+ version, unlike the CALL-subquery forms whose syntax changed across versions."""
        labels = " OR ".join(f"n:{label}" for label in LABELS.values())
        query = f"MATCH (n) WHERE {labels} WITH n LIMIT {BATCH} DETACH DELETE n RETURN count(*) AS deleted"
        while True:
            result = await self._driver.execute_query(
                _q(query),
                routing_=RoutingControl.WRITE,
                database_=self._database,
            )
            if result.records[0]["deleted"] == 0:
                return

    async def load_world(self, world: World, progress: bool = True) -> dict[str, int]:
        """Replace the fraudmesh nodes with the world's graph, in batches of UNWIND ... MERGE."""
        edges = edges_from_transactions(world.transactions)
        labels = card_labels_from_transactions(world.transactions)
        await self.clear()
        total = edges.num_rows + labels.num_rows
        bar = tqdm(total=total, desc="loading neo4j", unit="row", unit_scale=True, disable=not progress)
        with bar:
            for batch in edges.to_batches(max_chunksize=BATCH):
                by_link: dict[LinkType, list[dict[str, Any]]] = defaultdict(list)
                for row in batch.to_pylist():
                    row["first_seen"] = _utc(row["first_seen"])
                    row["last_seen"] = _utc(row["last_seen"])
                    by_link[row.pop("entity_type")].append(row)
                for link, rows in by_link.items():
                    await self._write_edge_rows(link, rows)
                bar.update(batch.num_rows)
            for batch in labels.to_batches(max_chunksize=BATCH):
                rows = [{"card_id": r["card_id"], "label_time": _utc(r["first_label_time"])} for r in batch.to_pylist()]
                await self._write_label_rows(rows)
                bar.update(batch.num_rows)
        return {"edges": edges.num_rows, "card_labels": labels.num_rows}
