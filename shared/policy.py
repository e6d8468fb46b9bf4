"""What happens to a JetStream message whose handler did not succeed: a pure decision, tested without servers.

| what went wrong                                   | action                         | counted as      |
|---------------------------------------------------|--------------------------------|-----------------|
| the body does not decode                          | term + dead-letter             | `undecodable`   |
| the handler raised `Poison`                       | term + dead-letter             | `poison`        |
| the deadline header has passed                    | term (its caller gave up)      | `expired`       |
| a dependency failed (`Transient`, connection and  | nak with capped exponential    | `retried`       |
| timeout errors of nats, redis, asyncpg, OSError)  | backoff, never dead-lettered;  |                 |
|                                                   | on the last allowed delivery:  | `gave_up`       |
|                                                   | term + tell the owner          |                 |
| anything else (a bug, bad data the handler did    | nak with backoff; on the last  | `retried`, then |
| not classify)                                     | allowed delivery, dead-letter  | `dead_lettered` |
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import msgspec
import nats.errors
import nats.js.errors
import redis.exceptions

from shared import subjects
from shared.context import Poison, Transient

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    Transient,
    ConnectionError,
    OSError,  # includes TimeoutError and nats.errors.TimeoutError
    asyncio.TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
    nats.errors.ConnectionClosedError,
    nats.errors.NoRespondersError,
    nats.errors.StaleConnectionError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.ServiceUnavailableError,
)
"""Failures of the infrastructure, not of the message: retried, never dead-lettered as poison."""

UNDECODABLE_ERRORS: tuple[type[BaseException], ...] = (msgspec.DecodeError, msgspec.ValidationError)


class Action(enum.Enum):
    NAK = "nak"
    TERM = "term"
    GIVE_UP = "give_up"
    """Term and tell the owner (the message is fine, its dependencies were not: no dead letter)."""
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    outcome: str
    """The handler-metric outcome: retried, expired, undecodable, poison, dead_lettered."""
    delay_s: float = 0.0
    reason: str = ""


OwnerNotice = Callable[[bytes, str], msgspec.Struct | None]
"""Builds the message that tells a dead-lettered message's owner (its `Fraudmesh-Reply-To`) it will not be
handled, from the raw body and the reason; None when there is nothing to say (e.g. the body is unreadable)."""


@dataclass(frozen=True)
class ConsumerPolicy:
    """How a consumer treats failures. `max_deliver` must match the durable consumer's (the server stops
    redelivering after it; the aggregator's max-deliveries listener dead-letters what the workers never acked)."""

    max_deliver: int = 4
    backoff_base_s: float = 0.1
    backoff_max_s: float = 2.0
    dead_letter_subject: str = subjects.DLQ_SUBJECT
    owner_notice: OwnerNotice | None = None

    def backoff(self, deliveries: int) -> float:
        """Exponential in the delivery count (1 on the first delivery), capped."""
        return min(self.backoff_base_s * float(2 ** max(0, deliveries)), self.backoff_max_s)

    def decide(self, exc: BaseException, deliveries: int) -> Decision:
        reason = f"{type(exc).__name__}: {exc}"[:500]
        if isinstance(exc, UNDECODABLE_ERRORS):
            return Decision(Action.DEAD_LETTER, "undecodable", reason=f"undecodable: {reason}")
        if isinstance(exc, Poison):
            return Decision(Action.DEAD_LETTER, "poison", reason=reason)
        if isinstance(exc, TRANSIENT_ERRORS):
            if deliveries >= self.max_deliver:  # the server would stop here and raise a max-deliveries advisory
                return Decision(Action.GIVE_UP, "gave_up", reason=f"unavailable after {deliveries} tries: {reason}")
            return Decision(Action.NAK, "retried", self.backoff(deliveries), reason)
        if deliveries >= self.max_deliver:
            return Decision(Action.DEAD_LETTER, "dead_lettered", reason=f"failed {deliveries} times: {reason}")
        return Decision(Action.NAK, "retried", self.backoff(deliveries), reason)


EXPIRED = Decision(Action.TERM, "expired", reason="deadline passed")
