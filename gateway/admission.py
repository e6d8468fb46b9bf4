"""Admission control of one gateway process, in the manner of Triton's queue policy: bounded work in flight, and a
request that cannot meet its deadline refused at once (503 + Retry-After) instead of queued to time out.

Work is counted in transactions plus a fixed per-request cost (REQUEST_COST, so a flood of single transactions is
weighed by what it costs). The service rate is measured from completions over the intervals in which work was in
flight (so an idle gateway does not think the system slow); a request is refused when
- FRAUDMESH_GATEWAY_MAX_IN_FLIGHT requests or FRAUDMESH_GATEWAY_MAX_IN_FLIGHT_TRANSACTIONS are already in flight, or
- the estimated wait, (work in flight + its own) / rate, exceeds FRAUDMESH_ADMISSION_MAX_QUEUE_MS or half of its own
  remaining deadline (the other half is for its own scoring).
At least MIN_IN_FLIGHT requests are always admitted, and after a window with idle time the estimate probes upwards
(PROBE_UP), so a low estimate made while a store was down cannot keep refusing work once the system is fast again.
Plain counters, no lock, nothing held across an await: the cost per request is a few additions.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

REQUEST_COST = 25.0
"""The cost of a request beyond its transactions, in transaction-equivalents (parsing, NATS, the reply): about 1 ms of
CPU across the services for a request, against ~40 us per transaction of a batch, measured on the development box."""
MIN_IN_FLIGHT = 4
RATE_WINDOW_S = 0.25
RATE_SMOOTHING = 0.3
PROBE_UP = 1.25
"""After a window with idle time, the rate estimate grows by this factor (at least to what was measured)."""


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str
    retry_after_s: float


class Admission:
    def __init__(self, max_requests: int, max_transactions: int, max_queue_s: float) -> None:
        self.max_requests = max_requests
        self.max_transactions = max_transactions
        self.max_queue_s = max_queue_s
        self.requests = 0
        self.transactions = 0
        self.work = 0.0
        self.rate = 0.0
        """Work units per second while busy (0 until measured)."""
        self.refused = 0
        self._window_start = time.monotonic()
        self._window_done = 0.0
        self._window_idle = True  # the first window starts before any work: it measures nothing

    def try_admit(self, n: int, remaining_s: float) -> Refusal | None:
        """Count a request of `n` transactions in (None), or say why not (its caller answers 503)."""
        cost = n + REQUEST_COST
        if self.requests >= MIN_IN_FLIGHT:
            refusal = self._check(n, cost, remaining_s)
            if refusal is not None:
                self.refused += 1
                return refusal
        self.requests += 1
        self.transactions += n
        self.work += cost
        return None

    def _check(self, n: int, cost: float, remaining_s: float) -> Refusal | None:
        wait = (self.work + cost) / self.rate if self.rate > 0 else 0.0
        retry = max(1.0, math.ceil(min(wait, 30.0)))
        if self.requests >= self.max_requests:
            return Refusal(f"{self.requests} requests in flight (FRAUDMESH_GATEWAY_MAX_IN_FLIGHT)", retry)
        if self.transactions + n > self.max_transactions:
            return Refusal(
                f"{self.transactions} transactions in flight (FRAUDMESH_GATEWAY_MAX_IN_FLIGHT_TRANSACTIONS)", retry
            )
        if wait > self.max_queue_s or wait > remaining_s / 2:
            return Refusal(
                f"the estimated wait ({wait * 1000:.0f} ms at the recent rate of {self.rate:.0f} transactions/s) "
                f"exceeds the queue bound ({self.max_queue_s * 1000:.0f} ms, FRAUDMESH_ADMISSION_MAX_QUEUE_MS) or "
                f"half the request's remaining deadline ({remaining_s * 1000:.0f} ms)",
                retry,
            )
        return None

    def release(self, n: int) -> None:
        cost = n + REQUEST_COST
        self.requests -= 1
        self.transactions -= n
        self.work -= cost
        self._window_done += cost
        if self.requests == 0:
            self._window_idle = True  # an interval with idle time measures the offered load, not the capacity
        now = time.monotonic()
        elapsed = now - self._window_start
        if elapsed >= RATE_WINDOW_S:
            measured = self._window_done / elapsed
            if not self._window_idle:
                self.rate = measured if self.rate == 0 else (1 - RATE_SMOOTHING) * self.rate + RATE_SMOOTHING * measured
            elif self.rate > 0:
                # the gateway ran out of work: the rate may be higher than believed (refusals leave no busy window to
                # measure it in), so probe upwards rather than stay stuck on an old, low estimate
                self.rate = max(self.rate * PROBE_UP, measured)
            self._window_start, self._window_done, self._window_idle = now, 0.0, self.requests == 0
