"""The transaction graph's vocabulary, shared by every GraphStore implementation, and the functions that
turn transactions into edges.

The graph is bipartite around cards: every edge joins a card to a device, an IP or a merchant it
transacted with, because every transaction is a card's. An edge is stored once, keyed by its card.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal, TypeAlias, get_args

import pyarrow as pa
import pyarrow.compute as pc

from shared.entities import EntityType

LinkType = Literal["device", "ip", "merchant"]  # the non-card end of an edge
NodeType: TypeAlias = EntityType
"""The graph's node types are the entity types (shared/entities.py)."""
NODE_TYPES: Final[tuple[NodeType, ...]] = get_args(NodeType)
LINK_TYPES: Final[tuple[LinkType, ...]] = get_args(LinkType)
IDENTITY: Final[tuple[LinkType, ...]] = ("device", "ip")
"""Default `via` of traversals: devices and IPs tie cards to the people (or rings) behind them. Merchants
are hubs that put every shopper within two hops of every other, so walks avoid them unless asked."""

MAX_HOPS: Final = 6
# The same pattern as shared.messages.Identifier, so anything accepted on the wire is a valid node id.
IDENTIFIER: Final = re.compile(r"^[A-Za-z0-9_.:@\-]{1,128}$")
# transaction column of each link type
LINK_COLUMNS: Final[dict[LinkType, str]] = {
    "device": "device_id",
    "ip": "ip_address",
    "merchant": "merchant_id",
}


class GraphError(ValueError):
    """A bad argument to a graph store, or a graph store that cannot be reached; the message says which."""


@dataclass(frozen=True, slots=True, order=True)
class Node:
    type: NodeType
    id: str


@dataclass(frozen=True, slots=True)
class Edge:
    """A card's link to a device, IP or merchant: first and last time seen, and how many transactions."""

    card_id: str
    entity_type: LinkType
    entity_id: str
    first_seen: datetime
    last_seen: datetime
    n: int = 1


@dataclass(frozen=True, slots=True)
class CardLabel:
    """A fraud label on a card, known from `label_time` on (a chargeback arriving)."""

    card_id: str
    label_time: datetime


@dataclass(frozen=True, slots=True)
class Neighbour:
    entity_type: NodeType
    entity_id: str
    first_seen: datetime


@dataclass(frozen=True, slots=True)
class SharedCard:
    """Another card linked to the same device(s) or IP(s); `shared` is how many of them."""

    card_id: str
    shared: int


# ------------------------------------------------------------------------------------------ checking


def check_node_type(entity_type: str) -> NodeType:
    if entity_type not in NODE_TYPES:
        raise GraphError(f"unknown entity type {entity_type!r}; expected one of {', '.join(NODE_TYPES)}")
    return entity_type


def check_node(entity_type: str, entity_id: str) -> Node:
    if not isinstance(entity_id, str) or not IDENTIFIER.match(entity_id):
        raise GraphError(f"malformed {entity_type} id {entity_id!r}: 1-128 characters of A-Z a-z 0-9 _ . : @ -")
    return Node(check_node_type(entity_type), entity_id)


def check_link_type(link_type: str) -> LinkType:
    if link_type not in LINK_TYPES:
        raise GraphError(f"unknown link type {link_type!r}; expected one of {', '.join(LINK_TYPES)}")
    return link_type


def check_via(via: Iterable[str]) -> tuple[LinkType, ...]:
    checked = tuple(sorted({check_link_type(v) for v in via}))
    if not checked:
        raise GraphError("via must name at least one link type (device, ip, merchant)")
    return checked


def check_as_of(as_of: datetime | None) -> datetime | None:
    if as_of is not None and (as_of.tzinfo is None or as_of.utcoffset() is None):
        raise GraphError(f"as_of must be timezone-aware (UTC), got naive {as_of.isoformat()}")
    return as_of


def check_hops(hops: int, name: str = "hops") -> int:
    if not isinstance(hops, int) or not 1 <= hops <= MAX_HOPS:
        raise GraphError(f"{name} must be an integer from 1 to {MAX_HOPS}, got {hops!r}")
    return hops


def check_edge(edge: Edge) -> Edge:
    check_node("card", edge.card_id)
    check_node(check_link_type(edge.entity_type), edge.entity_id)
    check_as_of(edge.first_seen)
    check_as_of(edge.last_seen)
    if edge.last_seen < edge.first_seen or edge.n < 1:
        raise GraphError(f"inconsistent edge {edge}: needs first_seen <= last_seen and n >= 1")
    return edge


# ------------------------------------------------------------------------------- building edges


def merge_edges(edges: Iterable[Edge]) -> list[Edge]:
    """Collapse repeated (card, entity) pairs into one edge each, so a batch upsert touches a row once."""
    merged: dict[tuple[str, str, str], Edge] = {}
    for edge in map(check_edge, edges):
        key = (edge.card_id, edge.entity_type, edge.entity_id)
        old = merged.get(key)
        merged[key] = (
            edge
            if old is None
            else Edge(
                edge.card_id,
                edge.entity_type,
                edge.entity_id,
                min(old.first_seen, edge.first_seen),
                max(old.last_seen, edge.last_seen),
                old.n + edge.n,
            )
        )
    return list(merged.values())


def merge_labels(labels: Iterable[CardLabel]) -> list[CardLabel]:
    """The earliest label per card: a card is fraud-labelled from its first chargeback on."""
    first: dict[str, CardLabel] = {}
    for label in labels:
        check_node("card", label.card_id)
        check_as_of(label.label_time)
        old = first.get(label.card_id)
        if old is None or label.label_time < old.label_time:
            first[label.card_id] = label
    return list(first.values())


def edges_for_transaction(
    card_id: str,
    timestamp: datetime,
    *,
    device_id: str | None = None,
    ip_address: str | None = None,
    merchant_id: str | None = None,
) -> list[Edge]:
    """The edges one ingested transaction adds (its missing fields add none)."""
    ends: Sequence[tuple[LinkType, str | None]] = (
        ("device", device_id),
        ("ip", ip_address),
        ("merchant", merchant_id),
    )
    return [Edge(card_id, kind, entity, timestamp, timestamp, 1) for kind, entity in ends if entity]


EDGES_SCHEMA: Final = pa.schema(
    [
        ("card_id", pa.string()),
        ("entity_type", pa.string()),
        ("entity_id", pa.string()),
        ("first_seen", pa.timestamp("us", tz="UTC")),
        ("last_seen", pa.timestamp("us", tz="UTC")),
        ("n", pa.int64()),
    ]
)


def edges_from_transactions(transactions: pa.Table) -> pa.Table:
    """All edges of a transactions table (columns as in the world), aggregated: one row per (card, entity)."""
    parts = []
    for link_type, column in LINK_COLUMNS.items():
        rows = transactions.select(["card_id", column, "timestamp"]).filter(pc.is_valid(transactions[column]))
        grouped = rows.group_by(["card_id", column], use_threads=False).aggregate(
            [("timestamp", "min"), ("timestamp", "max"), ("timestamp", "count")]
        )
        parts.append(
            pa.table(
                {
                    "card_id": grouped["card_id"],
                    "entity_type": pa.array([link_type] * grouped.num_rows, type=pa.string()),
                    "entity_id": grouped[column],
                    "first_seen": grouped["timestamp_min"],
                    "last_seen": grouped["timestamp_max"],
                    "n": grouped["timestamp_count"],
                },
                schema=EDGES_SCHEMA,
            )
        )
    return pa.concat_tables(parts)


def card_labels_from_transactions(transactions: pa.Table) -> pa.Table:
    """Per fraud-labelled card, when its first label arrived (columns card_id, first_label_time)."""
    fraud = transactions.filter(transactions["is_fraud"]).select(["card_id", "label_time"])
    grouped = fraud.group_by("card_id", use_threads=False).aggregate([("label_time", "min")])
    return pa.table({"card_id": grouped["card_id"], "first_label_time": grouped["label_time_min"]})
