"""How long requests wait in the gateway before the application sees them, and when that means overload: CoDel's
test (Nichols and Jacobson, "Controlling Queue Delay"; the form used by Folly's and gRPC's servers).

The delay of a request is the time from when its bytes were read off the socket (`RECEIVED_AT`, stamped by the HTTP
protocol in gateway/front_door.py) to when the front door sees it: the time it spent in the event loop's queue behind
other requests. A queue that drains between bursts is fine; a standing queue is not. So, per INTERVAL_S, the
smallest delay seen is kept: when even the smallest delay of the last interval exceeded the target, the gateway is
overloaded and, until an interval shows otherwise, requests that waited more than twice the target are refused
(their waiting is already most of a client's patience, and serving them would make every request behind them wait
longer too). Any request that waited longer than the hard bound is refused whatever the interval said.
Plain arithmetic per request, no lock, nothing held across an await.
"""

from __future__ import annotations

import math

INTERVAL_S = 0.1
"""CoDel's interval: a standing queue is one that did not drain below the target once in this long."""
SLOUGH_FACTOR = 2.0
"""While overloaded, requests that waited more than this many targets are refused."""


class QueueDelay:
    def __init__(self, target_s: float, max_s: float) -> None:
        self.target_s = target_s
        self.max_s = max_s
        self.overloaded = False
        self.last_min_s = 0.0
        """The smallest delay of the last complete interval (0 when it saw no request)."""
        self._min = math.inf
        self._interval_end = 0.0

    def observe(self, delay_s: float, now: float) -> bool:
        """Record one request's delay; True when it should be refused."""
        if now >= self._interval_end:
            seen = self._min != math.inf
            self.last_min_s = self._min if seen else 0.0
            # an interval that ended long ago was followed by idle time: the queue drained since
            recent = now < self._interval_end + INTERVAL_S
            self.overloaded = seen and recent and self._min > self.target_s
            self._min = math.inf
            self._interval_end = now + INTERVAL_S
        if delay_s < self._min:
            self._min = delay_s
        if delay_s > self.max_s:
            return True
        return self.overloaded and delay_s > SLOUGH_FACTOR * self.target_s
