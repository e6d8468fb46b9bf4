"""What a handler knows about the message it handles, and the errors that steer what happens to it.

- `Context`: a request-reply or listener message (subject, headers, request id, deadline).
- `Delivery`: a JetStream message (a `Context` plus its delivery count and stream sequence).
- `ServiceError` (and `DeadlineExceeded`): become an `ErrorReply` for a request-reply caller.
- `Poison` / `Transient`: raised by a consumer handler to say "this message can never succeed" (dead-letter it)
  or "the infrastructure failed, retry it later" (nak with backoff, never dead-lettered).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from nats.aio.msg import Msg

from shared import subjects
from shared.messages import ErrorCode, ErrorReply, FieldError

T = TypeVar("T")


class ServiceError(Exception):
    """An error that becomes an `ErrorReply` for the caller."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        errors: list[FieldError] | None = None,
        retryable: bool = False,
        retry_after_s: float = 0.0,
    ) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.errors = errors or []
        self.retryable = retryable
        self.retry_after_s = retry_after_s

    def reply(self, request_id: str = "") -> ErrorReply:
        return ErrorReply(
            code=self.code,
            message=self.message,
            request_id=request_id,
            errors=self.errors,
            retryable=self.retryable,
            retry_after_s=self.retry_after_s,
        )


class DeadlineExceeded(ServiceError):
    def __init__(self, step: str, late_ms: float) -> None:
        super().__init__(
            "deadline_exceeded",
            f"The request deadline passed {late_ms:.1f} ms before '{step}'; ask for a longer timeout or a "
            f"smaller batch.",
            retryable=True,
        )


class Poison(Exception):
    """Raised by a consumer handler: this message can never be handled (bad content). It is terminated and
    dead-lettered at once, whatever its delivery count."""


class Transient(Exception):
    """Raised by a consumer handler: a dependency failed (store down, timeout). The message is nak'ed with
    backoff and never dead-lettered as poison. Connection and timeout errors of nats, redis and asyncpg are
    treated the same way without being wrapped."""


def now_ms() -> float:
    return time.time() * 1000.0


def deadline_from_headers(headers: dict[str, str] | None, default_ms: float, max_ms: float) -> float:
    """Absolute deadline (epoch ms) from the header, or now + default when the caller sent none. A deadline
    further out than `max_ms` is capped; one that is not a number is the caller's error."""
    raw = (headers or {}).get(subjects.HDR_DEADLINE)
    now = now_ms()
    if not raw:
        return now + default_ms
    try:
        deadline = float(raw)
    except ValueError:
        raise ServiceError(
            "bad_request",
            f"Header {subjects.HDR_DEADLINE}={raw!r} is not a number: send the deadline as Unix epoch milliseconds.",
            errors=[FieldError(path=f"headers.{subjects.HDR_DEADLINE}", message="expected epoch milliseconds")],
        ) from None
    return min(deadline, now + max_ms)


def optional_deadline(headers: dict[str, str]) -> float:
    """The deadline header as epoch ms, or +inf when there is none (or it is not a number): messages that are
    not requests (results, advisories, ingested data) have no deadline."""
    raw = headers.get(subjects.HDR_DEADLINE)
    if not raw:
        return math.inf
    try:
        return float(raw)
    except ValueError:
        return math.inf


@dataclass
class Context:
    """What a handler knows about the message it is handling."""

    subject: str
    headers: dict[str, str]
    request_id: str
    deadline_ms: float
    received_ms: float = field(default_factory=now_ms)
    reply: str = ""
    """The requester's reply subject (request-reply endpoints only)."""

    def remaining_s(self) -> float:
        return max(0.0, (self.deadline_ms - now_ms()) / 1000.0)

    def check_deadline(self, step: str) -> None:
        late = now_ms() - self.deadline_ms
        if late >= 0:
            raise DeadlineExceeded(step, late)

    @property
    def has_deadline(self) -> bool:
        return self.deadline_ms != math.inf


@dataclass
class Delivery(Context):
    """A JetStream message being handled: `deliveries` is 1 on the first delivery. The base acks, naks or
    terminates it; a handler only needs `msg` for something unusual."""

    msg: Msg | None = None
    deliveries: int = 1
    stream_seq: int = 0
    rejected: str = ""

    def reject(self, reason: str) -> None:
        """In a micro-batch handler: this one message is poison. It is dead-lettered with `reason` when the
        handler returns; the others are acked."""
        self.rejected = reason


@dataclass(slots=True)
class Delivered(Generic[T]):
    """One decoded message of a micro-batch, with its delivery."""

    message: T
    delivery: Delivery
