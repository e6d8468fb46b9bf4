"""The GraphStore interface, and the traversals both implementations share.

Point-in-time rule: with `as_of`, a store answers as it would have at that instant. An edge counts only if
its `first_seen` is strictly before `as_of`, a fraud label only if its label time is strictly before it.
Strictly, because features of a transaction at time t are computed online before t is ingested, and the
offline (training) features of that transaction must see exactly what the online ones saw.
`as_of=None` means everything known now.

Traversal rule (`via`): from a card the walk goes only to the devices, IPs or merchants whose type is in
`via`; from any other node it goes to the cards linked to it. So a walk that starts at a merchant reaches
its cards, then their devices and IPs. Unknown entities are not errors: they have no edges yet (a new
card is a normal thing to score), so they have no neighbours and count zero.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from datetime import datetime
from typing import Protocol, runtime_checkable

from feature_svc.graph.model import (
    IDENTITY,
    CardLabel,
    Edge,
    GraphError,
    LinkType,
    Neighbour,
    Node,
    NodeType,
    SharedCard,
    check_as_of,
    check_hops,
    check_node,
    check_via,
)
from feature_svc.world import World


@runtime_checkable
class GraphStore(Protocol):
    """The transaction graph of cards, merchants, devices and IPs."""

    async def neighbours(self, entity_type: str, entity_id: str, as_of: datetime | None = None) -> list[Neighbour]:
        """Every node linked to this one, ordered by type then id."""
        ...

    async def degree(
        self,
        entity_type: str,
        entity_id: str,
        as_of: datetime | None = None,
        neighbour_type: NodeType | None = None,
    ) -> int:
        """How many nodes (of `neighbour_type`, if given) are linked to this one."""
        ...

    async def shared_entities(
        self, card_id: str, via: LinkType = "device", as_of: datetime | None = None
    ) -> list[SharedCard]:
        """Other cards linked to a device (or IP, merchant) this card is linked to, with how many they share,
        most shared first."""
        ...

    async def k_hop_count(
        self,
        entity_type: str,
        entity_id: str,
        k: int,
        as_of: datetime | None = None,
        via: Iterable[LinkType] = IDENTITY,
    ) -> int:
        """Distinct nodes within 1..k hops, not counting the start."""
        ...

    async def fraud_cards_within(
        self,
        entity_type: str,
        entity_id: str,
        hops: int = 2,
        as_of: datetime | None = None,
        via: Iterable[LinkType] = IDENTITY,
    ) -> int:
        """Cards within `hops` (not the start itself) with a fraud label known at `as_of`."""
        ...

    async def component_size(
        self,
        entity_type: str,
        entity_id: str,
        max_size: int = 1000,
        as_of: datetime | None = None,
        via: Iterable[LinkType] = IDENTITY,
    ) -> int:
        """Nodes in this node's connected component, itself included, capped at `max_size` (the walk stops
        there, so a hub costs no more than `max_size` nodes). 1 for a node without edges."""
        ...

    async def upsert_edges(self, edges: Iterable[Edge]) -> int:
        """Add edges, merging with existing ones: first_seen is kept at the earliest sighting (idempotent; the
        only field the features read). last_seen and n are summaries for monitoring: Neo4j merges them (latest,
        summed; not idempotent in n), PostgreSQL keeps those of the edge's creation and derives current ones
        from the ledger (view `edge_activity`) so that a repeat sighting writes nothing.
        Returns the number of distinct edges in the call."""
        ...

    async def upsert_card_labels(self, labels: Iterable[CardLabel]) -> int:
        """Record fraud labels on cards, keeping each card's earliest label time. Idempotent."""
        ...

    async def load_world(self, world: World, progress: bool = True) -> dict[str, int]:
        """Replace the whole graph with the world's edges and card labels; returns counts."""
        ...

    async def close(self) -> None: ...


class FrontierGraphStore(ABC):
    """Multi-hop traversals done once, as breadth-first frontier expansion: one round trip per hop, each
    hop deduplicated against everything already seen, stopping early at a size limit. Implementations
    supply the one-hop expansion and the fraud-label count, so both stores give identical answers."""

    @abstractmethod
    async def _expand(self, frontier: set[Node], via: tuple[LinkType, ...], as_of: datetime | None) -> set[Node]:
        """The nodes one hop from `frontier`, following the traversal rule of this module."""

    @abstractmethod
    async def _count_fraud_cards(self, card_ids: list[str], as_of: datetime | None) -> int:
        """How many of these cards had a fraud label strictly before `as_of`."""

    async def _reach(
        self,
        start: Node,
        hops: int | None,
        as_of: datetime | None,
        via: tuple[LinkType, ...],
        limit: int | None,
    ) -> set[Node]:
        seen = {start}
        frontier = {start}
        depth = 0
        while frontier and (hops is None or depth < hops):
            frontier = await self._expand(frontier, via, as_of) - seen
            seen |= frontier
            depth += 1
            if limit is not None and len(seen) >= limit:
                break
        return seen

    async def k_hop_count(
        self,
        entity_type: str,
        entity_id: str,
        k: int,
        as_of: datetime | None = None,
        via: Iterable[LinkType] = IDENTITY,
    ) -> int:
        start = check_node(entity_type, entity_id)
        reached = await self._reach(start, check_hops(k, "k"), check_as_of(as_of), check_via(via), None)
        return len(reached) - 1

    async def fraud_cards_within(
        self,
        entity_type: str,
        entity_id: str,
        hops: int = 2,
        as_of: datetime | None = None,
        via: Iterable[LinkType] = IDENTITY,
    ) -> int:
        start = check_node(entity_type, entity_id)
        as_of = check_as_of(as_of)
        reached = await self._reach(start, check_hops(hops), as_of, check_via(via), None)
        cards = [n.id for n in reached if n.type == "card" and n != start]
        return await self._count_fraud_cards(cards, as_of) if cards else 0

    async def component_size(
        self,
        entity_type: str,
        entity_id: str,
        max_size: int = 1000,
        as_of: datetime | None = None,
        via: Iterable[LinkType] = IDENTITY,
    ) -> int:
        start = check_node(entity_type, entity_id)
        if not isinstance(max_size, int) or max_size < 1:
            raise GraphError(f"max_size must be a positive integer, got {max_size!r}")
        reached = await self._reach(start, None, check_as_of(as_of), check_via(via), max_size)
        return min(len(reached), max_size)
