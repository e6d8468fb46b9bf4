"""Admission control of one gateway process, in the manner of Triton's queue policy: bounded work in flight, and a
request that cannot meet its deadline refused at once (503 + Retry-After) instead of queued to time out.

Work is counted in transactions plus a fixed per-request cost (REQUEST_COST, so a flood of single transactions is
weighed by what it costs). The service rate is measured from completions over the intervals in which work was in
flight (so an idle gateway does not think the system slow); a request is refused when
- FRAUDMESH_GATEWAY_MAX_IN_FLIGHT requests or FRAUDMESH_GATEWAY_MAX_IN_FLIGHT_TRANSACTIONS are already in flight, or
- the estimated wait, (work in flight + its own) / rate, exceeds FRAUDMESH_ADMISSION_MAX_QUEUE_MS or half of its own
  remaining deadline (the other half is for its own scoring).
At least MIN_IN_FLIGHT requests are always admitted. Until a rate has been measured, no more than INITIAL_WORK is (a
slow start: a burst on a fresh gateway must not all be admitted on an estimate of zero wait). A window with idle time
measures the offered load, not the capacity: it only raises the estimate to what it measured; when that window also
refused work, the estimate probes upwards (PROBE_UP, at most PROBE_CAP times the last rate measured while busy), so
a low estimate made while a store was down cannot keep refusing work once the system is fast again, and an idle
gateway's estimate does not grow without bound.
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
"""After a window with idle time and refusals, the rate estimate grows by this factor (at least to what was
measured)."""
INITIAL_WORK = 2500.0
"""Until a rate is measured, the work admitted at once (about 10 batches of 200 transactions, or 96 single ones)."""
HOLD_S = 0.25
"""How long room is kept for a large refused request (its client retries after Retry-After; others like it come)."""
PROBE_CAP = 2.0
"""Probing never takes the estimate past this multiple of the last rate measured while busy."""


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
        self._window_refused = 0
        self._busy_rate = 0.0
        self._held_cost = 0.0
        """The cost of a large request refused for lack of room: until HOLD_S after that refusal, a smaller request
        is admitted only if room for it stays free too."""
        self._held_until = 0.0

    def try_admit(self, n: int, remaining_s: float) -> Refusal | None:
        """Count a request of `n` transactions in (None), or say why not (its caller answers 503)."""
        refusal = self.check(n, remaining_s)
        if refusal is not None:
            return refusal
        cost = n + REQUEST_COST
        if cost >= self._held_cost:
            self._held_cost = 0.0  # a request as large as the one the room was kept for got in
        self.requests += 1
        self.transactions += n
        self.work += cost
        return None

    def check(self, n: int, remaining_s: float) -> Refusal | None:
        """Would a request of `n` transactions be refused now? Counts the refusal, not the request (`try_admit`
        counts it in)."""
        if self.requests < MIN_IN_FLIGHT:
            return None
        refusal = self._check(n, n + REQUEST_COST, remaining_s)
        if refusal is not None:
            self.refused += 1
            self._window_refused += 1
        return refusal

    def refuse_early(self) -> Refusal | None:
        """The front door's check, before a request is read (gateway/front_door.py): would even a request of one
        transaction be refused now? `try_admit` decides once the request's size is known."""
        return self.check(1, math.inf)

    def _check(self, n: int, cost: float, remaining_s: float) -> Refusal | None:
        if self.rate <= 0:
            if self.work + cost <= INITIAL_WORK:
                return None
            return Refusal(
                f"{self.work + cost:.0f} work units would be in flight and no service rate is measured yet (admission "
                f"starts with at most {INITIAL_WORK:.0f})",
                1.0,
            )
        wait = (self.work + cost) / self.rate
        retry = max(1.0, math.ceil(min(wait, 30.0)))
        if self.requests >= self.max_requests:
            return Refusal(f"{self.requests} requests in flight (FRAUDMESH_GATEWAY_MAX_IN_FLIGHT)", retry)
        if self.transactions + n > self.max_transactions:
            return Refusal(
                f"{self.transactions} transactions in flight (FRAUDMESH_GATEWAY_MAX_IN_FLIGHT_TRANSACTIONS)", retry
            )
        now = time.monotonic()
        held = self._held_cost if now < self._held_until else 0.0
        if wait > self.max_queue_s:
            if cost > held:  # room for a request this large will be kept: smaller ones may not take it meanwhile
                self._held_cost, self._held_until = cost, now + HOLD_S
        elif cost < held and self.work + cost + held > self.max_queue_s * self.rate:
            return Refusal(
                "the room left is kept for a larger request refused moments ago (admission by cost: small requests "
                "do not overtake large ones)",
                retry,
            )
        if wait > self.max_queue_s or wait > remaining_s / 2:
            return Refusal(
                f"the estimated wait ({wait * 1000:.0f} ms at the recent rate of {self.rate:.0f} work units/s) "
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
                self._busy_rate = self.rate
            elif self._window_refused and self.rate > 0:
                # work was refused, yet the gateway ran out of work: the rate may be higher than believed (refusals
                # leave no busy window to measure it in), so probe upwards rather than stay stuck on a low estimate
                cap = PROBE_CAP * max(self._busy_rate, measured)
                self.rate = max(self.rate, min(max(self.rate * PROBE_UP, measured), cap))
            elif self.rate > 0:
                self.rate = max(self.rate, measured)  # it served this much without queueing: a floor, not a measure
            self._window_start, self._window_done, self._window_idle = now, 0.0, self.requests == 0
            self._window_refused = 0
