"""Admission control of one aggregator: a bound on the transactions it has in flight, and the "accepted" notice.

A request that would take the aggregator past FRAUDMESH_AGGREGATOR_MAX_IN_FLIGHT_TRANSACTIONS is refused at once
(`unavailable`, retryable, with a Retry-After estimated from the recent rate of answered transactions) rather than
queued to miss its deadline. Plain counters: nothing is held across an await.
"""

from __future__ import annotations

import math
import time

from shared.context import ServiceError


class AggregatorAdmission:
    def __init__(self, max_transactions: int) -> None:
        self.max_transactions = max_transactions
        self.in_flight = 0
        self.refused = 0
        self._done = 0
        self._rate = 0.0
        self._since = time.monotonic()

    def admit(self, n: int) -> None:
        """Count `n` transactions in, or raise ServiceError(`unavailable`) when they would exceed the bound."""
        if self.in_flight and self.in_flight + n > self.max_transactions:
            self.refused += 1
            wait = (self.in_flight / self._rate) if self._rate > 0 else 1.0
            raise ServiceError(
                "unavailable",
                f"This aggregator has {self.in_flight} transactions in flight (the limit is {self.max_transactions}, "
                f"FRAUDMESH_AGGREGATOR_MAX_IN_FLIGHT_TRANSACTIONS); retry after the Retry-After delay.",
                retryable=True,
                retry_after_s=max(1.0, math.ceil(min(wait, 30.0))),
            )
        self.in_flight += n

    def release(self, n: int) -> None:
        self.in_flight -= n
        self._done += n
        now = time.monotonic()
        if now - self._since >= 1.0:
            self._rate = 0.5 * self._rate + 0.5 * self._done / (now - self._since)
            self._done, self._since = 0, now
