"""The consumer failure policy (shared/policy.py): a pure decision, no servers."""

from __future__ import annotations

import asyncpg
import msgspec
import nats.errors
import pytest
import redis.exceptions

from shared.context import Poison, Transient
from shared.policy import EXPIRED, Action, ConsumerPolicy

POLICY = ConsumerPolicy(max_deliver=4, backoff_base_s=0.1, backoff_max_s=2.0)


def undecodable() -> Exception:
    try:
        msgspec.msgpack.decode(b"\xc1")
    except msgspec.DecodeError as exc:
        return exc
    raise AssertionError("decoded")


@pytest.mark.parametrize("deliveries", [1, 4, 100])
def test_undecodable_is_dead_lettered_at_once(deliveries: int) -> None:
    d = POLICY.decide(undecodable(), deliveries)
    assert (d.action, d.outcome) == (Action.DEAD_LETTER, "undecodable")
    assert d.reason.startswith("undecodable: DecodeError")


def test_poison_is_dead_lettered_at_once_with_its_reason() -> None:
    d = POLICY.decide(Poison("card_id is a PAN"), 1)
    assert (d.action, d.outcome) == (Action.DEAD_LETTER, "poison")
    assert "card_id is a PAN" in d.reason


@pytest.mark.parametrize(
    "exc",
    [
        Transient("redis down"),
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
        OSError("network unreachable"),
        redis.exceptions.ConnectionError("Connection refused"),
        redis.exceptions.TimeoutError("timeout"),
        asyncpg.CannotConnectNowError("starting up"),
        asyncpg.InterfaceError("connection is closed"),
        nats.errors.NoRespondersError(),
        nats.errors.TimeoutError(),
        nats.errors.ConnectionClosedError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_infrastructure_failures_are_retried_never_dead_lettered(exc: BaseException) -> None:
    for deliveries in (1, 2, 3):
        d = POLICY.decide(exc, deliveries)
        assert (d.action, d.outcome) == (Action.NAK, "retried"), deliveries
        assert 0 < d.delay_s <= 2.0
    for deliveries in (4, 50):  # the last allowed delivery: given up (owner told), still not a dead letter
        d = POLICY.decide(exc, deliveries)
        assert (d.action, d.outcome) == (Action.GIVE_UP, "gave_up"), deliveries
        assert d.reason.startswith(f"unavailable after {deliveries} tries: ")


def test_backoff_doubles_and_is_capped() -> None:
    patient = ConsumerPolicy(max_deliver=100, backoff_base_s=0.1, backoff_max_s=2.0)
    delays = [patient.decide(Transient("x"), n).delay_s for n in range(1, 8)]
    assert delays[:4] == [0.2, 0.4, 0.8, 1.6]
    assert delays[4:] == [2.0, 2.0, 2.0]


def test_other_errors_are_retried_then_dead_lettered_on_the_last_delivery() -> None:
    bug = ValueError("shapes (3,) and (4,) not aligned")
    assert [POLICY.decide(bug, n).action for n in (1, 2, 3)] == [Action.NAK] * 3
    last = POLICY.decide(bug, 4)
    assert (last.action, last.outcome) == (Action.DEAD_LETTER, "dead_lettered")
    assert last.reason == "failed 4 times: ValueError: shapes (3,) and (4,) not aligned"


def test_expired_is_terminated_not_dead_lettered() -> None:
    assert (EXPIRED.action, EXPIRED.outcome) == (Action.TERM, "expired")


def test_reason_is_bounded() -> None:
    assert len(POLICY.decide(Poison("x" * 10_000), 1).reason) <= 500
