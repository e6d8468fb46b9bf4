"""Degraded decisions: a score built without some of its inputs says so, and `FRAUDMESH_DEGRADED_POLICY` decides
what the caller gets.

The inference worker marks each affected `TransactionScore` (`degraded: true`, `degraded_reasons`, freshness null);
the aggregator applies the policy to the whole reply, once, for HTTP and NATS callers alike:

| policy   | a degraded score                                                                  |
|----------|-----------------------------------------------------------------------------------|
| `flag`   | returned as scored, flagged (the default)                                         |
| `review` | flagged, and its recommended action is at least `review` (an approve becomes review) |
| `fail`   | the request is refused: `unavailable`, retryable, with the reasons (HTTP 503 + Retry-After) |
"""

from __future__ import annotations

import asyncio

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from shared.messages import ErrorReply, ScoreReply, TransactionScore

FEATURE_STORE_UNAVAILABLE = "feature_store_unavailable"
"""Redis (the online feature store) could not be read: every entity's features were asked of the feature service."""
FEATURES_UNAVAILABLE = "features_unavailable"
"""The feature service answered with an error (e.g. its PostgreSQL ledger or Redis is down): features are missing."""
FEATURES_TIMEOUT = "features_compute_timeout"
"""`features.compute` did not answer before the partial's deadline: features are missing."""
FEATURE_SERVICE_DOWN = "feature_service_unavailable"
"""No feature worker is running (`features.compute` had no responders): features are missing."""

RETRY_AFTER_DEGRADED_S = 2.0


def compute_failure_reason(exc: BaseException) -> str:
    """The reason code of a failed `features.compute` request."""
    if isinstance(exc, NoRespondersError):
        return FEATURE_SERVICE_DOWN
    if isinstance(exc, NatsTimeout | asyncio.TimeoutError | TimeoutError):
        return FEATURES_TIMEOUT
    return FEATURES_UNAVAILABLE


def mark(score: TransactionScore, reasons: list[str]) -> None:
    """Flag one score as built without some inputs."""
    score.degraded = True
    score.degraded_reasons = reasons
    score.feature_freshness_sec = None


def reasons_of(reply: ScoreReply) -> list[str]:
    """Every distinct reason of the reply's degraded scores, in first-seen order."""
    seen: dict[str, None] = {}
    for s in reply.results:
        if s is not None and s.degraded:
            seen.update(dict.fromkeys(s.degraded_reasons))
    return list(seen)


def apply_policy(reply: ScoreReply, policy: str) -> ScoreReply | ErrorReply:
    """The reply the caller gets under `policy` (`flag`, `review` or `fail`); sets `reply.degraded_reasons`."""
    reasons = reasons_of(reply)
    reply.degraded_reasons = reasons
    if not reasons:
        return reply
    if policy == "fail":
        n = sum(1 for s in reply.results if s is not None and s.degraded)
        return ErrorReply(
            code="unavailable",
            message=f"{n} of {len(reply.results)} transaction(s) could only be scored without some of their inputs "
            f"({', '.join(reasons)}) and FRAUDMESH_DEGRADED_POLICY=fail refuses such scores. Retry shortly; "
            f"`/health` names the dependency that is down.",
            request_id=reply.request_id,
            retryable=True,
            retry_after_s=RETRY_AFTER_DEGRADED_S,
        )
    if policy == "review":
        for s in reply.results:
            if s is not None and s.degraded and s.recommended_action == "approve":
                s.recommended_action = "review"
    return reply
