"""The registry's graph features (feature_svc/definitions.py): each a coroutine over the GraphStore,
`(graph, entity_id, as_of) -> float`, and, where the store offers it, a set-based form (feature_svc/graph/batch.py)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Final

from feature_svc.feature_model import COMPONENT_CAP, FRESH_S, Dtype, Feature, GraphFn
from shared.entities import EntityType

if TYPE_CHECKING:
    from feature_svc.graph.base import GraphStore
    from feature_svc.graph.batch import BatchKind


async def sharing_device(g: GraphStore, card: str, as_of: datetime) -> float:
    return float(len(await g.shared_entities(card, "device", as_of)))


async def sharing_ip(g: GraphStore, card: str, as_of: datetime) -> float:
    return float(len(await g.shared_entities(card, "ip", as_of)))


async def card_fraud_2hop(g: GraphStore, card: str, as_of: datetime) -> float:
    return float(await g.fraud_cards_within("card", card, 2, as_of, ("device", "ip")))


async def card_component(g: GraphStore, card: str, as_of: datetime) -> float:
    # via devices only: public IPs (cafes, carrier NAT) would join everyone into one component
    return float(await g.component_size("card", card, COMPONENT_CAP, as_of, ("device",)))


def degree(entity: EntityType) -> GraphFn:
    async def degree(g: GraphStore, entity_id: str, as_of: datetime) -> float:
        return float(await g.degree(entity, entity_id, as_of))

    return degree


def fraud_cards(entity: EntityType) -> GraphFn:
    async def fraud_cards(g: GraphStore, entity_id: str, as_of: datetime) -> float:
        return float(await g.fraud_cards_within(entity, entity_id, 1, as_of, ("device", "ip")))

    return fraud_cards


BATCH: Final[dict[str, BatchKind]] = {
    "card_cards_sharing_device": "shared_device",
    "card_cards_sharing_ip": "shared_ip",
    "card_fraud_cards_2hop": "fraud_2hop",
    "card_degree": "degree",
    "merchant_degree": "degree",
    "device_degree": "degree",
    "ip_degree": "degree",
    "device_fraud_cards": "fraud_1hop",
    "ip_fraud_cards": "fraud_1hop",
    "card_component_size": "component_device",
}
"""Graph features with a set-based form (feature_svc/graph/batch.py)."""


def graph_feature(
    name: str,
    entity: EntityType,
    dtype: Dtype,
    description: str,
    fn: GraphFn,
    freshness_s: float = FRESH_S,
) -> Feature:
    return Feature(
        name,
        entity,
        dtype,
        description,
        group=f"{entity}_graph",
        graph=fn,
        graph_batch=BATCH.get(name),
        freshness_s=freshness_s,
    )
