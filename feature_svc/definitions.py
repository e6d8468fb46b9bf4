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
from typing import Final

from feature_svc import graph_features as gf
from feature_svc.feature_model import COMPONENT_CAP as COMPONENT_CAP
from feature_svc.feature_model import COMPONENT_LAG_S as COMPONENT_LAG_S
from feature_svc.feature_model import FRESH_S as FRESH_S
from feature_svc.feature_model import LAGGING_S as LAGGING_S
from feature_svc.feature_model import SMALL_AMOUNT as SMALL_AMOUNT
from feature_svc.feature_model import TS as TS
from feature_svc.feature_model import Dtype as Dtype
from feature_svc.feature_model import Feature as Feature
from feature_svc.feature_model import GraphFn as GraphFn
from feature_svc.feature_model import SqlGroup as SqlGroup
from feature_svc.graph_features import graph_feature
from shared.entities import ENTITY_ID_FIELD
from shared.entities import ENTITY_TABLE as ENTITY_TABLE
from shared.entities import ENTITY_TYPES as ENTITY_TYPES
from shared.entities import EntityType as EntityType

ENTITY_COLUMN: Final = ENTITY_ID_FIELD
"""The transactions column holding each entity type's id."""


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


_MERCHANT_FRAUD_KNOWN_30D = (
    "(SELECT count(*) FROM labels l WHERE l.merchant_id = q.id AND l.is_fraud AND l.label_time < q.as_of "
    "AND l.transaction_time < q.as_of AND l.transaction_time >= q.as_of - interval '30 days')"
)
"""The merchant's transactions of the 30 days before as_of with a fraud label known before as_of, counted from the
labels alone (they carry the transaction's merchant and time; one label per transaction): the same number as
joining every window row to its label, without probing the labels once per row of a busy merchant's window (that
join was most of the PostgreSQL time of live ingestion, bench/results/ingest-live-*.md)."""

GROUPS: Final[dict[str, SqlGroup]] = {
    g.name: g
    for g in (
        SqlGroup("card_window", "card", _window("card", 30)),
        SqlGroup("card_history", "card", _history("card")),
        SqlGroup("card_device_firsts", "card", _firsts("card", "device_id")),
        SqlGroup("card_country_firsts", "card", _firsts("card", "country_code")),
        SqlGroup("card_labels", "card", "labels l WHERE l.card_id = q.id AND l.is_fraud AND l.label_time < q.as_of"),
        SqlGroup("merchant_window", "merchant", _window("merchant", 30)),
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
    graph_feature(
        "card_cards_sharing_device",
        "card",
        "int64",
        "Other cards that used a device this card used.",
        gf.sharing_device,
        LAGGING_S,
    ),
    graph_feature(
        "card_cards_sharing_ip",
        "card",
        "int64",
        "Other cards that used an IP this card used.",
        gf.sharing_ip,
        LAGGING_S,
    ),
    graph_feature(
        "card_fraud_cards_2hop",
        "card",
        "int64",
        "Fraud-labelled cards (label known before as_of) within 2 hops through devices and IPs.",
        gf.card_fraud_2hop,
        LAGGING_S,
    ),
    graph_feature(
        "card_component_size",
        "card",
        "int64",
        f"Nodes in the card's connected component through devices (capped at {COMPONENT_CAP}).",
        gf.card_component,
        COMPONENT_LAG_S,
    ),
    graph_feature("card_degree", "card", "int64", "Devices, IPs and merchants linked to the card.", gf.degree("card")),
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
        _MERCHANT_FRAUD_KNOWN_30D,
    ),
    Feature(
        "merchant_fraud_rate_known_30d",
        "merchant",
        "float64",
        "Known-fraud share of the merchant's "
        "transactions in the 30 days before as_of, from labels with label_time < as_of.",
        1,
        "merchant_window",
        f"coalesce({_MERCHANT_FRAUD_KNOWN_30D}::float8 / nullif(count(*), 0), 0)",
    ),
    graph_feature("merchant_degree", "merchant", "int64", "Cards that paid at the merchant.", gf.degree("merchant")),
    # devices
    *(_count("device", w) for w in ("1h", "24h", "7d")),
    *(_distinct("device", "card_id", "cards", w) for w in ("24h", "7d")),
    _since_last("device"),
    graph_feature("device_degree", "device", "int64", "Cards that used the device.", gf.degree("device")),
    graph_feature(
        "device_fraud_cards",
        "device",
        "int64",
        "Fraud-labelled cards (known before as_of) that used the device.",
        gf.fraud_cards("device"),
    ),
    # IPs
    *(_count("ip", w) for w in ("1h", "24h", "7d")),
    *(_distinct("ip", "card_id", "cards", w) for w in ("24h", "7d")),
    _since_last("ip"),
    graph_feature("ip_degree", "ip", "int64", "Cards that used the IP.", gf.degree("ip")),
    graph_feature(
        "ip_fraud_cards",
        "ip",
        "int64",
        "Fraud-labelled cards (known before as_of) that used the IP.",
        gf.fraud_cards("ip"),
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
