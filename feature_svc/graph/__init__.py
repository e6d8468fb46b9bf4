"""The transaction graph (cards, merchants, devices, IPs) behind one interface, `GraphStore`, with two
implementations: PostgreSQL (embedded default, SQL over the ledger's edge table) and Neo4j (Cypher).

    store = await open_graph_store(settings)
    await store.load_world(world)
    await store.fraud_cards_within("card", "card_000123", hops=2, as_of=t)

Every query takes `as_of` for point-in-time answers; see feature_svc.graph.base for its exact meaning.
"""

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
from feature_svc.graph.neo4j_store import Neo4jGraphStore
from feature_svc.graph.postgres import PostgresGraphStore

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
