"""Runtime settings (validation, merging, what an instance applies) and the canonical body hash of idempotency, in
process: no server involved."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from gateway.idempotency import body_hash, differing_fields
from shared.messages import Transaction
from shared.runtime_config import ConfigError, LiveSettings, RuntimeConfig, effective, merge
from shared.settings import Settings

BASE = Settings(max_request_timeout_ms=60000)


def paths(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return [e.path for e in exc.value.errors]


def test_merge_applies_a_patch_and_null_removes_an_override() -> None:
    current = RuntimeConfig(partial_size=100, degraded_policy="review")
    merged = merge(current, {"partial_size": 50, "degraded_policy": None, "coalesce_window_ms": 0}, BASE)
    assert merged == RuntimeConfig(partial_size=50, coalesce_window_ms=0.0)
    assert msgspec.json.decode(msgspec.json.encode(merged)) == {"partial_size": 50, "coalesce_window_ms": 0.0}


@pytest.mark.parametrize(
    ("patch", "path"),
    [
        ({"partial_size": 0}, "$.partial_size"),
        ({"partial_size": 1.5}, "$.partial_size"),
        ({"degraded_policy": "sometimes"}, "$.degraded_policy"),
        ({"idempotency_window_s": 0}, "$.idempotency_window_s"),
        ({"redis_url": "redis://elsewhere"}, "$.redis_url"),
        ({"request_timeout_ms": 60001}, "$.request_timeout_ms"),
        ({}, "$"),
        ([], "$"),
        (None, "$"),
    ],
)
def test_a_bad_patch_names_the_field_and_changes_nothing(patch: object, path: str) -> None:
    current = RuntimeConfig(partial_size=100)
    with pytest.raises(ConfigError) as exc:
        merge(current, patch, BASE)
    assert path in paths(exc)
    assert current == RuntimeConfig(partial_size=100)


def test_every_bad_field_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as exc:
        merge(RuntimeConfig(), {"partial_size": -1, "nope": 1, "coalesce_window_ms": "x"}, BASE)
    assert sorted(paths(exc)) == ["$.coalesce_window_ms", "$.nope", "$.partial_size"]


def test_an_instance_applies_overrides_on_its_own_settings_and_tells_listeners() -> None:
    own = Settings(partial_size=300, gateway_max_in_flight=64)
    live = LiveSettings(own)
    seen: list[Settings] = []
    live.listen(seen.append)
    live.apply(RuntimeConfig(partial_size=50), revision=3)
    assert (live.current.partial_size, live.current.gateway_max_in_flight, live.revision) == (50, 64, 3)
    assert seen == [live.current]
    live.apply(RuntimeConfig(), revision=4)  # the override removed: back to the instance's own value
    assert live.current.partial_size == 300 and live.current is own
    assert effective(own, RuntimeConfig()) is own


def test_the_body_hash_is_canonical() -> None:
    decode = msgspec.json.Decoder(Transaction)
    a = decode.decode(b'{"transaction_id": "t1", "card_id": "c", "transaction_amount": 100, "currency": "USD"}')
    b = decode.decode(b'{"currency": "USD", "transaction_amount": 100.0, "card_id": "c", "transaction_id": "t1"}')
    assert body_hash(a) == body_hash(b)
    t1 = decode.decode(b'{"card_id": "c", "transaction_amount": 1, "timestamp": "2026-11-01T10:00:00Z"}')
    t2 = decode.decode(b'{"card_id": "c", "transaction_amount": 1, "timestamp": "2026-11-01T11:00:00+01:00"}')
    assert t1.timestamp == t2.timestamp == dt.datetime(2026, 11, 1, 10, tzinfo=dt.UTC)
    assert body_hash(t1) == body_hash(t2)
    c = decode.decode(b'{"transaction_id": "t1", "card_id": "c", "transaction_amount": 100, "currency": "EUR"}')
    assert body_hash(a) != body_hash(c)
    assert differing_fields(a, c) == ["currency"]
