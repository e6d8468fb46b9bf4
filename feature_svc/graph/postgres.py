"""The embedded graph store: SQL over the ledger's `edges` and `card_fraud_labels` tables (migration 002).

Neighbour lookups are index-only scans: the primary key (card_id, entity_type, entity_id) serves the card
side and `edges_entity` (entity_type, entity_id, card_id) the other, both carrying first_seen for the
point-in-time filter. Multi-hop walks expand one frontier per round trip (see base.FrontierGraphStore)
rather than in one recursive CTE, because a CTE cannot deduplicate across depths or stop at a size limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import asyncpg
from tqdm import tqdm

from feature_svc.graph.base import FrontierGraphStore
from feature_svc.graph.batch import BATCH_SQL, COMPONENT_CAP, BatchKind
from feature_svc.graph.model import (
    EDGES_SCHEMA,
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
from feature_svc.ledger import connect, copy_table, migrate
from feature_svc.world import World

_AS_OF = "($%d::timestamptz IS NULL OR first_seen < $%d)"


class PostgresGraphStore(FrontierGraphStore):
    """GraphStore over PostgreSQL. Give it a pool on a migrated ledger, or use `open`."""

    def __init__(self, pool: asyncpg.Pool, *, owns_pool: bool = False) -> None:
        self._pool = pool
        self._owns_pool = owns_pool

    @classmethod
    async def open(cls, dsn: str, *, schema: str | None = None) -> PostgresGraphStore:
        """Connect, apply the ledger migrations (idempotent), and own the pool (closed by `close`)."""
        pool = await connect(dsn, schema=schema)
        try:
            await migrate(pool)
        except BaseException:
            await pool.close()
            raise
        return cls(pool, owns_pool=True)

    async def close(self) -> None:
        if self._owns_pool:
            await self._pool.close()

    # ------------------------------------------------------------------------------------- one hop

    async def neighbours(self, entity_type: str, entity_id: str, as_of: datetime | None = None) -> list[Neighbour]:
        node = check_node(entity_type, entity_id)
        as_of = check_as_of(as_of)
        if node.type == "card":
            rows = await self._pool.fetch(
                f"""SELECT entity_type, entity_id, first_seen FROM edges
                    WHERE card_id = $1 AND {_AS_OF % (2, 2)} ORDER BY entity_type, entity_id""",
                node.id,
                as_of,
            )
            return [Neighbour(r["entity_type"], r["entity_id"], r["first_seen"]) for r in rows]
        rows = await self._pool.fetch(
            f"""SELECT card_id, first_seen FROM edges
                WHERE entity_type = $1 AND entity_id = $2 AND {_AS_OF % (3, 3)} ORDER BY card_id""",
            node.type,
            node.id,
            as_of,
        )
        return [Neighbour("card", r["card_id"], r["first_seen"]) for r in rows]

    async def cards_linked(self, nodes: Sequence[tuple[str, str]], limit: int) -> list[str]:
        """The cards linked to any of these devices, IPs or merchants, at most `limit` per node (the first by id,
        as `neighbours(...)[:limit]` gives them), in ONE query instead of one per node."""
        if not nodes:
            return []
        rows = await self._pool.fetch(
            """SELECT DISTINCT c.card_id FROM unnest($1::text[], $2::text[]) AS f(entity_type, entity_id)
               CROSS JOIN LATERAL (SELECT e.card_id FROM edges e
                                   WHERE e.entity_type = f.entity_type AND e.entity_id = f.entity_id
                                   ORDER BY e.card_id LIMIT $3) c""",
            [t for t, _ in nodes],
            [i for _, i in nodes],
            limit,
        )
        return [r["card_id"] for r in rows]

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
            return int(
                await self._pool.fetchval(
                    f"""SELECT count(*) FROM edges WHERE card_id = $1 AND {_AS_OF % (2, 2)}
                        AND ($3::text IS NULL OR entity_type = $3)""",
                    node.id,
                    as_of,
                    neighbour_type,
                )
            )
        if neighbour_type not in (None, "card"):
            return 0
        return int(
            await self._pool.fetchval(
                f"SELECT count(*) FROM edges WHERE entity_type = $1 AND entity_id = $2 AND {_AS_OF % (3, 3)}",
                node.type,
                node.id,
                as_of,
            )
        )

    async def shared_entities(
        self, card_id: str, via: LinkType = "device", as_of: datetime | None = None
    ) -> list[SharedCard]:
        check_node("card", card_id)
        link = check_link_type(via)
        rows = await self._pool.fetch(
            """SELECT other.card_id, count(*) AS shared
               FROM edges mine
               JOIN edges other
                 ON other.entity_type = mine.entity_type AND other.entity_id = mine.entity_id
                AND other.card_id <> mine.card_id
               WHERE mine.card_id = $1 AND mine.entity_type = $2
                 AND ($3::timestamptz IS NULL OR (mine.first_seen < $3 AND other.first_seen < $3))
               GROUP BY other.card_id
               ORDER BY shared DESC, other.card_id""",
            card_id,
            link,
            check_as_of(as_of),
        )
        return [SharedCard(r["card_id"], int(r["shared"])) for r in rows]

    async def _expand(self, frontier: set[Node], via: tuple[LinkType, ...], as_of: datetime | None) -> set[Node]:
        cards = [n.id for n in frontier if n.type == "card"]
        others = [n for n in frontier if n.type != "card"]
        rows = await self._pool.fetch(
            f"""SELECT entity_type AS type, entity_id AS id FROM edges
                WHERE card_id = ANY($1::text[]) AND entity_type = ANY($2::text[]) AND {_AS_OF % (3, 3)}
                UNION
                SELECT 'card', e.card_id
                FROM unnest($4::text[], $5::text[]) AS f(entity_type, entity_id)
                JOIN edges e ON e.entity_type = f.entity_type AND e.entity_id = f.entity_id
                WHERE $3::timestamptz IS NULL OR e.first_seen < $3""",
            cards,
            list(via),
            as_of,
            [n.type for n in others],
            [n.id for n in others],
        )
        return {Node(r["type"], r["id"]) for r in rows}

    async def _count_fraud_cards(self, card_ids: list[str], as_of: datetime | None) -> int:
        return int(
            await self._pool.fetchval(
                """SELECT count(*) FROM card_fraud_labels
                   WHERE card_id = ANY($1::text[]) AND ($2::timestamptz IS NULL OR first_label_time < $2)""",
                card_ids,
                as_of,
            )
        )

    # ------------------------------------------------------------------------------ set-based batches

    async def batch_values(
        self, kind: BatchKind, entity_type: str, ids: Sequence[str], as_ofs: Sequence[datetime]
    ) -> list[float]:
        """See feature_svc/graph/batch.py: one query for every point."""
        if kind == "component_device" and entity_type == "card":
            return await self._components(ids, as_ofs)
        sql = BATCH_SQL.get((kind, entity_type))
        if sql is None:
            raise GraphError(f"no batch query for {kind} of {entity_type}")
        rows = await self._pool.fetch(sql, list(ids), list(as_ofs))
        return [float(r["v"]) for r in rows]

    async def _components(self, ids: Sequence[str], as_ofs: Sequence[datetime]) -> list[float]:
        """component_size(card, COMPONENT_CAP, as_of, via devices) of many cards, per distinct as_of: ONE
        breadth-first walk from all of them at once (one query per hop for the whole frontier), with the nodes
        found merged into components as edges are found (union-find). A node is expanded at most once, and not at
        all once its component has COMPONENT_CAP nodes. The answer, min(component size, cap), is the per-entity
        walk's: a component smaller than the cap is walked completely (its discovered part never reaches the
        cap), a larger one reaches the cap. Cards of one component share the walk instead of each walking it."""
        out = [0.0] * len(ids)
        by_time: dict[datetime, list[int]] = {}
        for k, t in enumerate(as_ofs):
            by_time.setdefault(t, []).append(k)
        for as_of, idx in by_time.items():
            walk = _UnionWalk()
            frontier = {("card", ids[k]) for k in idx}
            for n in frontier:
                walk.add(n)
            while frontier:
                adjacency = await self._adjacency(frontier, as_of)
                found: set[_Key] = set()
                for x in frontier:
                    for y in adjacency.get(x, ()):
                        if walk.add(y):
                            found.add(y)
                        walk.union(x, y)
                frontier = {n for n in found if walk.size(n) < COMPONENT_CAP}
            for k in idx:
                out[k] = float(min(walk.size(("card", ids[k])), COMPONENT_CAP))
        return out

    async def _adjacency(self, nodes: set[_Key], as_of: datetime) -> dict[_Key, list[_Key]]:
        """One hop from each node through devices (the traversal rule of base.py with via=("device",)).
        Nodes as (type, id) tuples: the walk hashes each many times, and a tuple hashes ~5x faster than a Node."""
        cards = [i for t, i in nodes if t == "card"]
        others = [(t, i) for t, i in nodes if t != "card"]
        rows = await self._pool.fetch(
            """SELECT 0 AS side, card_id, entity_type, entity_id FROM edges
               WHERE card_id = ANY($1::text[]) AND entity_type = 'device' AND first_seen < $2
               UNION ALL
               SELECT 1, e.card_id, e.entity_type, e.entity_id
               FROM unnest($3::text[], $4::text[]) AS f(entity_type, entity_id)
               JOIN edges e ON e.entity_type = f.entity_type AND e.entity_id = f.entity_id
               WHERE e.first_seen < $2""",
            cards,
            as_of,
            [t for t, _ in others],
            [i for _, i in others],
        )
        adjacency: dict[_Key, list[_Key]] = {}
        for side, card_id, etype, eid in rows:
            card, other = ("card", card_id), (etype, eid)
            if side == 0:
                adjacency.setdefault(card, []).append(other)
            else:
                adjacency.setdefault(other, []).append(card)
        return adjacency

    # -------------------------------------------------------------------------------------- writes

    async def upsert_edges(self, edges: Iterable[Edge]) -> int:
        """New edges are inserted; an existing edge is rewritten only when the new sighting is earlier than its
        first_seen (the one field the features read). Its `last_seen` and `n` are not bumped: every live
        transaction of a card at a busy merchant rewrote that edge's row before, which kept the table's pages
        out of the visibility map, so every index-only scan of a hub (a merchant's degree, an IP's cards, the
        2-hop counts) fetched a heap page per edge (bench/results/ingest-perf-*.md). Current last_seen and n are
        derived from the ledger by the `edge_activity` view (migration 005)."""
        # in key order: two batches upserting overlapping edges (two workers, or one worker's concurrent
        # micro-batches) then lock them in the same order instead of deadlocking
        merged = sorted(merge_edges(edges), key=lambda e: (e.card_id, e.entity_type, e.entity_id))
        if not merged:
            return 0
        await self._pool.execute(
            """INSERT INTO edges (card_id, entity_type, entity_id, first_seen, last_seen, n)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
                                    $6::bigint[])
               ON CONFLICT (card_id, entity_type, entity_id) DO UPDATE SET
                   first_seen = EXCLUDED.first_seen,
                   last_seen = GREATEST(edges.last_seen, EXCLUDED.last_seen),
                   n = edges.n + EXCLUDED.n
               WHERE EXCLUDED.first_seen < edges.first_seen""",
            [e.card_id for e in merged],
            [e.entity_type for e in merged],
            [e.entity_id for e in merged],
            [e.first_seen for e in merged],
            [e.last_seen for e in merged],
            [e.n for e in merged],
        )
        return len(merged)

    async def upsert_card_labels(self, labels: Iterable[CardLabel]) -> int:
        merged = sorted(merge_labels(labels), key=lambda label: label.card_id)  # lock order: see upsert_edges
        if not merged:
            return 0
        await self._pool.execute(
            """INSERT INTO card_fraud_labels (card_id, first_label_time)
               SELECT * FROM unnest($1::text[], $2::timestamptz[])
               ON CONFLICT (card_id) DO UPDATE SET
                   first_label_time = LEAST(card_fraud_labels.first_label_time, EXCLUDED.first_label_time)""",
            [label.card_id for label in merged],
            [label.label_time for label in merged],
        )
        return len(merged)

    async def load_world(self, world: World, progress: bool = True) -> dict[str, int]:
        """Replace edges and card labels with the world's, in one transaction (COPY)."""
        edges = edges_from_transactions(world.transactions)
        labels = card_labels_from_transactions(world.transactions)
        total = edges.num_rows + labels.num_rows
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("TRUNCATE edges, card_fraud_labels")
            await conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
            bar = tqdm(total=total, desc="loading graph", unit="row", unit_scale=True, disable=not progress)
            with bar:
                bar.set_postfix_str("edges")
                n_edges = await copy_table(conn, "edges", edges, EDGES_SCHEMA.names, bar)
                bar.set_postfix_str("card labels")
                n_labels = await copy_table(conn, "card_fraud_labels", labels, labels.column_names, bar)
        return {"edges": n_edges, "card_labels": n_labels}


_Key = tuple[str, str]
"""A node of a component walk: (type, id)."""


class _UnionWalk:
    """Union-find over the nodes a component walk found: `size(n)` = nodes found so far in n's component."""

    def __init__(self) -> None:
        self._parent: dict[_Key, _Key] = {}
        self._size: dict[_Key, int] = {}

    def add(self, n: _Key) -> bool:
        """Add `n`; True if it is new, False if it was found before."""
        if n in self._parent:
            return False
        self._parent[n] = n
        self._size[n] = 1
        return True

    def find(self, n: _Key) -> _Key:
        root = n
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[n] != root:  # path compression
            self._parent[n], n = root, self._parent[n]
        return root

    def union(self, a: _Key, b: _Key) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self._size[ra] < self._size[rb]:
            ra, rb = rb, ra
        self._parent[rb] = ra
        self._size[ra] += self._size.pop(rb)

    def size(self, n: _Key) -> int:
        return self._size[self.find(n)]
