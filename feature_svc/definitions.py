"""The feature registry: every feature fraudmesh computes, online and offline, defined once.

A feature has a name (prefixed by its entity type), an entity type, a dtype, a description, a version and its
computation, which is one of:
- `sql`: an aggregate expression evaluated in its SQL *group*. A group is the set of rows the aggregate runs over
  for one (entity, as_of) pair: e.g. the card's transactions in the 30 days strictly before as_of (`t`). Every
  feature of a group is computed by one query for all requested (entity, as_of) pairs
  (see feature_svc/compute.py), with `q.id` the entity id and `q.as_of` the point in time;
- `graph`: a coroutine over the GraphStore, `(graph, entity_id, as_of) -> float`.

Point-in-time rule: nothing at or after `as_of` counts (transactions with timestamp < as_of, labels with
label_time < as_of, graph edges with first_seen < as_of). Online features use as_of = now, the offline export
uses as_of = the transaction's own timestamp, and both run these same definitions.

Changing a computation means bumping that feature's `version`; the feature-set version (`FEATURE_SET_VERSION`)
is derived from the names and versions, so the Redis entries of an older set become stale by themselves.

This module imports no service code, so the inference worker and the trainer can import it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final, Literal

from shared.entities import ENTITY_ID_FIELD
from shared.entities import ENTITY_TABLE as ENTITY_TABLE
from shared.entities import ENTITY_TYPES as ENTITY_TYPES
from shared.entities import EntityType as EntityType

ENTITY_COLUMN: Final = ENTITY_ID_FIELD
"""The transactions column holding each entity type's id."""

if TYPE_CHECKING:
    from feature_svc.graph.base import GraphStore
    from feature_svc.graph.batch import BatchKind

Dtype = Literal["float64", "int64", "bool"]
GraphFn = Callable[["GraphStore", str, datetime], Awaitable[float]]

FRESH_S: Final = 1.0
"""Freshness bound of every feature of an entity an ingested transaction or label touches directly."""
LAGGING_S: Final = 10.0
"""Freshness bound of graph features that change second-hand: the sharing counts, component sizes and 2-hop
fraud counts of the OTHER cards on a device or IP that a new transaction used (refreshed by the deferred pass)."""
COMPONENT_LAG_S: Final = 300.0
"""card_component_size changes when an edge is added anywhere in the component, not just next to the card: the
live path refreshes it when the card or a card sharing a device or IP with it transacts; beyond that, the
scoring path's max age (FRAUDMESH_FEATURE_MAX_AGE_S, default 300 s) bounds it."""
COMPONENT_CAP: Final = 200
"""component_size stops walking at this many nodes (a hub costs no more than this)."""
SMALL_AMOUNT: Final = 5.0
"""Card testing probes with amounts below this."""

TS = 't."timestamp"'


@dataclass(frozen=True)
class SqlGroup:
    """Rows one group's aggregates run over, for one (entity, as_of) pair: a FROM clause using `q.id`, `q.as_of`."""

    name: str
    entity_type: EntityType
    source: str


@dataclass(frozen=True)
class Feature:
    name: str
    entity_type: EntityType
    dtype: Dtype
    description: str
    version: int = 1
    group: str = ""
    sql: str | None = None
    graph: GraphFn | None = None
    graph_batch: BatchKind | None = None
    """The set-based form of `graph` (a kind of feature_svc/graph/batch.py), used when the store offers it."""
    freshness_s: float = 1.0
    """Freshness bound under live ingestion: an ingested transaction or label shows in this feature's online
    value within this many seconds (see docs/architecture.md, live features)."""

    @property
    def kind(self) -> Literal["sql", "graph"]:
        return "sql" if self.sql is not None else "graph"


# ------------------------------------------------------------------------------------------------ groups


def _window(entity: EntityType, days: int, join: str = "") -> str:
    col = ENTITY_COLUMN[entity]
    return f"transactions t {join} WHERE t.{col} = q.id AND {TS} < q.as_of AND {TS} >= q.as_of - interval '{days} days'"


def _history(entity: EntityType) -> str:
    return f"transactions t WHERE t.{ENTITY_COLUMN[entity]} = q.id AND {TS} < q.as_of"


def _firsts(entity: EntityType, of: str) -> str:
    """One row per distinct value of column `of` in the entity's history: when it was first used."""
    return (
        f"(SELECT min({TS}) AS first FROM transactions t WHERE t.{ENTITY_COLUMN[entity]} = q.id "
        f"AND {TS} < q.as_of AND t.{of} IS NOT NULL GROUP BY t.{of}) f"
    )


_MERCHANT_LABELS = "LEFT JOIN labels l ON l.transaction_id = t.transaction_id AND l.is_fraud AND l.label_time < q.as_of"

GROUPS: Final[dict[str, SqlGroup]] = {
    g.name: g
    for g in (
        SqlGroup("card_window", "card", _window("card", 30)),
        SqlGroup("card_history", "card", _history("card")),
        SqlGroup("card_device_firsts", "card", _firsts("card", "device_id")),
        SqlGroup("card_country_firsts", "card", _firsts("card", "country_code")),
        SqlGroup("card_labels", "card", "labels l WHERE l.card_id = q.id AND l.is_fraud AND l.label_time < q.as_of"),
        SqlGroup("merchant_window", "merchant", _window("merchant", 30, _MERCHANT_LABELS)),
        SqlGroup("device_window", "device", _window("device", 30)),
        SqlGroup("device_history", "device", _history("device")),
        SqlGroup("ip_window", "ip", _window("ip", 30)),
        SqlGroup("ip_history", "ip", _history("ip")),
    )
}

# --------------------------------------------------------------------------------------------- helpers

WINDOWS: Final[dict[str, str]] = {"1h": "1 hour", "24h": "24 hours", "7d": "7 days", "30d": "30 days"}


def _in(window: str) -> str:
    return f"{TS} >= q.as_of - interval '{WINDOWS[window]}'"


def _count(entity: EntityType, window: str) -> Feature:
    return Feature(
        f"{entity}_txn_count_{window}",
        entity,
        "int64",
        f"Transactions of the {entity} in the {window} before as_of.",
        group=f"{entity}_window",
        sql=f"count(*) FILTER (WHERE {_in(window)})",
    )


def _sum(entity: EntityType, window: str) -> Feature:
    return Feature(
        f"{entity}_txn_sum_{window}",
        entity,
        "float64",
        f"Total amount of the {entity}'s transactions in the {window} before as_of.",
        group=f"{entity}_window",
        sql=f"coalesce(sum(t.amount) FILTER (WHERE {_in(window)}), 0)",
    )


def _distinct(entity: EntityType, column: str, label: str, window: str) -> Feature:
    return Feature(
        f"{entity}_distinct_{label}_{window}",
        entity,
        "int64",
        f"Distinct {label} among the {entity}'s transactions in the {window} before as_of.",
        group=f"{entity}_window",
        sql=f"count(DISTINCT t.{column}) FILTER (WHERE {_in(window)})",
    )


def _amount_stats(entity: EntityType) -> list[Feature]:
    g = f"{entity}_window"
    return [
        Feature(
            f"{entity}_amount_mean_30d",
            entity,
            "float64",
            "Mean amount over 30 days (0 without history).",
            1,
            g,
            "coalesce(avg(t.amount), 0)",
        ),
        Feature(
            f"{entity}_amount_std_30d",
            entity,
            "float64",
            "Population std of amounts over 30 days.",
            1,
            g,
            "coalesce(stddev_pop(t.amount), 0)",
        ),
        Feature(
            f"{entity}_amount_max_30d",
            entity,
            "float64",
            "Largest amount over 30 days.",
            1,
            g,
            "coalesce(max(t.amount), 0)",
        ),
    ]


def _since_last(entity: EntityType) -> Feature:
    return Feature(
        f"{entity}_seconds_since_last_txn",
        entity,
        "float64",
        f"Seconds from the {entity}'s last transaction before as_of to as_of; -1 without history.",
        group=f"{entity}_history",
        sql=f"coalesce(extract(epoch FROM q.as_of - max({TS})), -1)",
    )


def _new_flag(label: str, group: str) -> Feature:
    return Feature(
        f"card_new_{label}_24h",
        "card",
        "bool",
        f"1 if the card used a {label} in the 24h before as_of that it had never used before, and it had "
        f"history older than 24h (a new {label} on an established card); else 0.",
        group=group,
        sql="CASE WHEN max(f.first) >= q.as_of - interval '24 hours' "
        "AND min(f.first) < q.as_of - interval '24 hours' THEN 1 ELSE 0 END",
    )


# --------------------------------------------------------------------------------------- graph features


async def _sharing_device(g: GraphStore, card: str, as_of: datetime) -> float:
    return float(len(await g.shared_entities(card, "device", as_of)))


async def _sharing_ip(g: GraphStore, card: str, as_of: datetime) -> float:
    return float(len(await g.shared_entities(card, "ip", as_of)))


async def _card_fraud_2hop(g: GraphStore, card: str, as_of: datetime) -> float:
    return float(await g.fraud_cards_within("card", card, 2, as_of, ("device", "ip")))


async def _card_component(g: GraphStore, card: str, as_of: datetime) -> float:
    # via devices only: public IPs (cafes, carrier NAT) would join everyone into one component
    return float(await g.component_size("card", card, COMPONENT_CAP, as_of, ("device",)))


def _degree(entity: EntityType) -> GraphFn:
    async def degree(g: GraphStore, entity_id: str, as_of: datetime) -> float:
        return float(await g.degree(entity, entity_id, as_of))

    return degree


def _fraud_cards(entity: EntityType) -> GraphFn:
    async def fraud_cards(g: GraphStore, entity_id: str, as_of: datetime) -> float:
        return float(await g.fraud_cards_within(entity, entity_id, 1, as_of, ("device", "ip")))

    return fraud_cards


_BATCH: Final[dict[str, BatchKind]] = {
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


def _graph(
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
        graph_batch=_BATCH.get(name),
        freshness_s=freshness_s,
    )


# ------------------------------------------------------------------------------------------- registry

_FEATURES: list[Feature] = [
    # cards: velocity, amounts, diversity, history, novelty, labels, graph
    *(_count("card", w) for w in ("1h", "24h", "7d")),
    *(_sum("card", w) for w in ("1h", "24h", "7d")),
    *_amount_stats("card"),
    *(_distinct("card", "merchant_id", "merchants", w) for w in ("24h", "7d")),
    *(_distinct("card", "country_code", "countries", w) for w in ("24h", "7d")),
    _distinct("card", "device_id", "devices", "7d"),
    Feature(
        "card_txn_count_total",
        "card",
        "int64",
        "All transactions of the card before as_of.",
        1,
        "card_history",
        "count(*)",
    ),
    _since_last("card"),
    Feature(
        "card_account_age_days",
        "card",
        "float64",
        "Days since the card's first transaction (0 if none).",
        1,
        "card_history",
        f"coalesce(extract(epoch FROM q.as_of - min({TS})) / 86400.0, 0)",
    ),
    _new_flag("device", "card_device_firsts"),
    _new_flag("country", "card_country_firsts"),
    Feature(
        "card_fraud_labels_known",
        "card",
        "int64",
        "Fraud labels on the card's own transactions known before as_of (label_time < as_of).",
        1,
        "card_labels",
        "count(*)",
    ),
    _graph(
        "card_cards_sharing_device",
        "card",
        "int64",
        "Other cards that used a device this card used.",
        _sharing_device,
        LAGGING_S,
    ),
    _graph(
        "card_cards_sharing_ip", "card", "int64", "Other cards that used an IP this card used.", _sharing_ip, LAGGING_S
    ),
    _graph(
        "card_fraud_cards_2hop",
        "card",
        "int64",
        "Fraud-labelled cards (label known before as_of) within 2 hops through devices and IPs.",
        _card_fraud_2hop,
        LAGGING_S,
    ),
    _graph(
        "card_component_size",
        "card",
        "int64",
        f"Nodes in the card's connected component through devices (capped at {COMPONENT_CAP}).",
        _card_component,
        COMPONENT_LAG_S,
    ),
    _graph("card_degree", "card", "int64", "Devices, IPs and merchants linked to the card.", _degree("card")),
    # merchants
    *(_count("merchant", w) for w in ("1h", "24h", "7d")),
    _sum("merchant", "24h"),
    *_amount_stats("merchant")[:2],
    _distinct("merchant", "card_id", "cards", "24h"),
    Feature(
        "merchant_small_txn_share_24h",
        "merchant",
        "float64",
        f"Share of the merchant's transactions in the 24h before as_of below {SMALL_AMOUNT} (card testing).",
        1,
        "merchant_window",
        f"coalesce((count(*) FILTER (WHERE {_in('24h')} AND t.amount < {SMALL_AMOUNT}))::float8 "
        f"/ nullif(count(*) FILTER (WHERE {_in('24h')}), 0), 0)",
    ),
    Feature(
        "merchant_fraud_labels_known_30d",
        "merchant",
        "int64",
        "Merchant transactions of the last 30 days with a fraud label known before as_of.",
        1,
        "merchant_window",
        "count(l.transaction_id)",
    ),
    Feature(
        "merchant_fraud_rate_known_30d",
        "merchant",
        "float64",
        "Known-fraud share of the merchant's "
        "transactions in the 30 days before as_of, from labels with label_time < as_of.",
        1,
        "merchant_window",
        "coalesce(count(l.transaction_id)::float8 / nullif(count(*), 0), 0)",
    ),
    _graph("merchant_degree", "merchant", "int64", "Cards that paid at the merchant.", _degree("merchant")),
    # devices
    *(_count("device", w) for w in ("1h", "24h", "7d")),
    *(_distinct("device", "card_id", "cards", w) for w in ("24h", "7d")),
    _since_last("device"),
    _graph("device_degree", "device", "int64", "Cards that used the device.", _degree("device")),
    _graph(
        "device_fraud_cards",
        "device",
        "int64",
        "Fraud-labelled cards (known before as_of) that used the device.",
        _fraud_cards("device"),
    ),
    # IPs
    *(_count("ip", w) for w in ("1h", "24h", "7d")),
    *(_distinct("ip", "card_id", "cards", w) for w in ("24h", "7d")),
    _since_last("ip"),
    _graph("ip_degree", "ip", "int64", "Cards that used the IP.", _degree("ip")),
    _graph(
        "ip_fraud_cards",
        "ip",
        "int64",
        "Fraud-labelled cards (known before as_of) that used the IP.",
        _fraud_cards("ip"),
    ),
]

FEATURES: Final[dict[str, Feature]] = {f.name: f for f in _FEATURES}
if len(FEATURES) != len(_FEATURES):  # pragma: no cover - caught at import, so never shipped
    raise RuntimeError("duplicate feature names in the registry")


def features_of(entity_type: str) -> list[Feature]:
    """The features of one entity type, in registry order."""
    return [f for f in FEATURES.values() if f.entity_type == entity_type]


def feature_names(entity_type: str) -> list[str]:
    return [f.name for f in features_of(entity_type)]


def feature_set_version(features: dict[str, Feature] = FEATURES) -> str:
    """A short, stable id of the feature set: a hash of every name and version (order-independent)."""
    text = "\n".join(f"{f.name}:{f.entity_type}:{f.dtype}:{f.version}" for f in sorted(features.values(), key=_key))
    return "fs-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def _key(f: Feature) -> str:
    return f.name


FEATURE_SET_VERSION: Final = feature_set_version()
