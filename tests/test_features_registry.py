"""The feature registry: enough features over every entity type, unique names, a stable feature-set version."""

from __future__ import annotations

from collections import Counter

from feature_svc.compute import group_sql
from feature_svc.definitions import (
    _FEATURES,
    ENTITY_TYPES,
    FEATURE_SET_VERSION,
    FEATURES,
    GROUPS,
    feature_names,
    feature_set_version,
)


def test_registry_has_at_least_25_features_over_the_four_entity_types() -> None:
    assert len(FEATURES) >= 25
    assert len({f.name for f in _FEATURES}) == len(_FEATURES)
    per_type = Counter(f.entity_type for f in FEATURES.values())
    assert set(per_type) == set(ENTITY_TYPES)
    for name, f in FEATURES.items():
        assert name.startswith(f"{f.entity_type}_"), name
        assert f.description and f.version >= 1 and f.dtype in ("float64", "int64", "bool")
        assert (f.sql is None) != (f.graph is None), f"{name} needs exactly one computation"
        if f.sql is not None:
            assert GROUPS[f.group].entity_type == f.entity_type


def test_registry_covers_the_issue_families() -> None:
    names = set(FEATURES)
    for window in ("1h", "24h", "7d"):
        assert {f"card_txn_count_{window}", f"card_txn_sum_{window}"} <= names
    expected = {
        "card_amount_mean_30d",
        "card_amount_std_30d",
        "card_amount_max_30d",
        "card_distinct_merchants_24h",
        "card_distinct_countries_7d",
        "card_seconds_since_last_txn",
        "card_new_device_24h",
        "card_new_country_24h",
        "merchant_fraud_rate_known_30d",
        "card_cards_sharing_device",
        "card_cards_sharing_ip",
        "card_fraud_cards_2hop",
        "card_component_size",
        "card_degree",
    }
    assert expected <= names
    assert feature_names("ip")[0].startswith("ip_")


def test_feature_set_version_depends_on_names_and_versions() -> None:
    assert feature_set_version() == FEATURE_SET_VERSION and FEATURE_SET_VERSION.startswith("fs-")
    import dataclasses

    bumped = dict(FEATURES)
    bumped["card_degree"] = dataclasses.replace(FEATURES["card_degree"], version=2)
    assert feature_set_version(bumped) != FEATURE_SET_VERSION
    fewer = {k: v for k, v in FEATURES.items() if k != "ip_degree"}
    assert feature_set_version(fewer) != FEATURE_SET_VERSION


def test_group_sql_is_strictly_before_as_of() -> None:
    for name, group in GROUPS.items():
        assert "< q.as_of" in group.source, name
        feats = [f for f in FEATURES.values() if f.group == name]
        assert feats, f"group {name} has no feature"
        assert "unnest($1::text[], $2::timestamptz[])" in group_sql(group, feats)
