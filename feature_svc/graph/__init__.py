"""The transaction graph (cards, merchants, devices, IPs) behind one interface, `GraphStore`, with two
implementations: PostgreSQL (embedded default, SQL over the ledger's edge table) and Neo4j (Cypher).

    store = await open_graph_store(settings)
    await store.load_world(world)
    await store.fraud_cards_within("card", "card_000123", hops=2, as_of=t)

Every query takes `as_of` for point-in-time answers; see feature_svc.graph.base for its exact meaning.
"""

from typing import TYPE_CHECKING, Any

from feature_svc.graph.base import FrontierGraphStore, GraphStore
from feature_svc.graph.factory import open_graph_store
from feature_svc.graph.model import (
    IDENTITY,
    LINK_TYPES,
    MAX_HOPS,
    NODE_TYPES,
    CardLabel,
    Edge,
    GraphError,
    LinkType,
    Neighbour,
    Node,
    NodeType,
    SharedCard,
    card_labels_from_transactions,
    edges_for_transaction,
    edges_from_transactions,
)
from feature_svc.graph.postgres import PostgresGraphStore

if TYPE_CHECKING:
    from feature_svc.graph.neo4j_store import Neo4jGraphStore


def __getattr__(name: str) -> Any:
    """Neo4jGraphStore is imported on first use: its driver is the optional `neo4j` extra."""
    if name == "Neo4jGraphStore":
        from feature_svc.graph.neo4j_store import Neo4jGraphStore

        return Neo4jGraphStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "IDENTITY",
    "LINK_TYPES",
    "MAX_HOPS",
    "NODE_TYPES",
    "CardLabel",
    "Edge",
    "FrontierGraphStore",
    "GraphError",
    "GraphStore",
    "LinkType",
    "Neighbour",
    "Neo4jGraphStore",
    "Node",
    "NodeType",
    "PostgresGraphStore",
    "SharedCard",
    "card_labels_from_transactions",
    "edges_for_transaction",
    "edges_from_transactions",
    "open_graph_store",
]
