"""The entity types of fraudmesh's transaction graph, defined once: cards, merchants, devices and IP addresses.

A transaction names one of each (`Transaction.card_id`, `merchant_id`, `device_id`, `ip_address`); features,
graph nodes, embeddings and the ledger's entity tables are keyed by (entity type, id). Every package imports
the vocabulary from here.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

EntityType = Literal["card", "merchant", "device", "ip"]
ENTITY_TYPES: Final[tuple[EntityType, ...]] = get_args(EntityType)
"""In this order wherever entities are listed (feature vectors, embeddings, model inputs)."""

ENTITY_ID_FIELD: Final[dict[EntityType, str]] = {
    "card": "card_id",
    "merchant": "merchant_id",
    "device": "device_id",
    "ip": "ip_address",
}
"""The field of a `Transaction` (and the ledger's column) that holds the entity's id."""

ENTITY_TABLE: Final[dict[EntityType, str]] = {
    "card": "cards",
    "merchant": "merchants",
    "device": "devices",
    "ip": "ips",
}
"""The ledger table of each entity type."""


PersonalizationEntityType = Literal["user", "item", "session"]
"""The entity types of the personalization family (seed 001's second model family): shoppers, catalogue items and
their browsing sessions. Their features live in the same online store under their own type
(feature_svc/world/personalization/features.py); they are not part of the transaction graph."""
PERSONALIZATION_ENTITY_TYPES: Final[tuple[PersonalizationEntityType, ...]] = get_args(PersonalizationEntityType)
