"""What `/health` and `/ready` conclude from the services' health replies (gateway/health_view.py)."""

from __future__ import annotations

from gateway.health_view import system_view
from shared.messages import HealthReply


def rep(service: str, instance: str, **details: str) -> HealthReply:
    return HealthReply(service=service, instance_id=instance, status="ok", details=details)


def test_everything_up() -> None:
    view = system_view(
        {
            "aggregator": [rep("aggregator", "a0")],
            "inference": [rep("inference", "i0", model_version="v1", redis="ok", entity_features="on")],
            "feature": [rep("feature", "f0", redis="ok", postgres="ok (2 connections, 2 idle)")],
        },
        nats_connected=True,
    )
    assert view.down == [] and view.can_score and view.model_version == "v1"


def test_a_store_down_is_named_with_who_saw_it() -> None:
    view = system_view(
        {
            "aggregator": [rep("aggregator", "a0")],
            "inference": [rep("inference", "i0", model_version="v1", redis="down: ConnectionError")],
            "feature": [rep("feature", "f0", redis="unreachable", postgres="error: ConnectionRefusedError")],
        },
        nats_connected=True,
    )
    assert sorted(view.down) == ["postgres", "redis"]
    assert "inference i0" in view.problems["redis"] and view.can_score and view.features_down


def test_missing_services_and_nats() -> None:
    view = system_view({"aggregator": [], "inference": [rep("inference", "i0", entity_features="on")]}, True)
    assert view.down == ["aggregator", "feature"] and not view.can_score
    assert system_view({}, nats_connected=False).down == ["nats"]


def test_feature_workers_are_not_required_when_the_model_reads_no_entity_features() -> None:
    view = system_view(
        {"aggregator": [rep("aggregator", "a0")], "inference": [rep("inference", "i0", entity_features="off")]}, True
    )
    assert view.down == []


def test_unknown_before_the_first_check_is_not_down() -> None:
    view = system_view(
        {"aggregator": [rep("aggregator", "a0")], "inference": [rep("inference", "i0", redis="unknown")]}, True
    )
    assert view.down == []
