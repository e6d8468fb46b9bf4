"""Scoring requests in flight from one gateway, and the watch on the aggregator that took each one.

The gateway's `fraud.score` requests go through one wildcard inbox subscription (a request costs one publish, as
with nats.py's `request`). Each asks for an "accepted" notice (subjects.HDR_ACK): the aggregator that takes the
request names itself (`Fraudmesh-Accepted-By`, `Fraudmesh-Service-Id`) before it answers. While requests older than
WATCH_AFTER_S wait on an aggregator, a watcher pings that instance (`$SRV.PING.aggregator.<id>`, nats.micro) every
WATCH_INTERVAL_S; when it has no responders (its process is gone) or misses MAX_MISSES pings in a row, its requests
fail at once with `AggregatorLost` (503, retryable) instead of waiting out their deadline. A request that no
aggregator confirmed within NO_NOTICE_S fails the same way (its aggregator died before it could say so).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass, field

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from shared import subjects

NO_NOTICE_S = 2.0
"""A request no aggregator confirmed taking within this long is given up (503, retryable): the aggregator it went to
died as it received it, or before its notice left its buffers."""
WATCH_AFTER_S = 0.5
WATCH_INTERVAL_S = 0.5
MAX_MISSES = 2
PING_TIMEOUT_S = 0.5


class AggregatorLost(Exception):
    def __init__(self, instance: str) -> None:
        super().__init__(
            f"aggregator {instance} stopped answering while it held the request"
            if instance
            else f"request was not confirmed by any aggregator within {NO_NOTICE_S:g} s (the one it went to died)"
        )
        self.instance = instance


@dataclass
class Call:
    future: asyncio.Future[Msg]
    started: float = field(default_factory=time.monotonic)
    instance: str = ""
    service_id: str = ""


class ScoreCalls:
    def __init__(self, nc: NATS, service: str = "aggregator") -> None:
        self.nc = nc
        self.service = service
        self.calls: dict[str, Call] = {}
        self.lost = 0
        """Requests failed early because their aggregator disappeared."""
        self._tokens = itertools.count()
        self._prefix = ""
        self._sub: Subscription | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._prefix = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(self._prefix + ".*", cb=self._on_msg)

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def request(self, subject: str, data: bytes, headers: dict[str, str], timeout: float) -> Msg:
        """Like `nc.request`, plus the watch: raises NoRespondersError, TimeoutError or AggregatorLost."""
        token = str(next(self._tokens))
        call = Call(asyncio.get_running_loop().create_future())
        self.calls[token] = call
        headers[subjects.HDR_ACK] = "1"
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch())
        try:
            await self.nc.publish(subject, data, reply=f"{self._prefix}.{token}", headers=headers)
            return await asyncio.wait_for(call.future, timeout)
        finally:
            del self.calls[token]

    async def _on_msg(self, msg: Msg) -> None:
        call = self.calls.get(msg.subject.rpartition(".")[2])
        if call is None or call.future.done():
            return
        headers = msg.headers or {}
        if headers.get("Status") == "503":
            call.future.set_exception(NoRespondersError())
        elif subjects.HDR_ACCEPTED_BY in headers and not msg.data:
            call.instance = headers[subjects.HDR_ACCEPTED_BY]
            call.service_id = headers.get(subjects.HDR_SERVICE_ID, "")
        else:
            call.future.set_result(msg)

    async def _watch(self) -> None:
        misses: dict[str, int] = {}
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            now = time.monotonic()
            watched = {
                c.service_id: c.instance
                for c in self.calls.values()
                if c.service_id and now - c.started >= WATCH_AFTER_S and not c.future.done()
            }
            if not self.calls:
                return
            for call in self.calls.values():
                if not call.instance and now - call.started >= NO_NOTICE_S and not call.future.done():
                    call.future.set_exception(AggregatorLost(""))
                    self.lost += 1
            alive = await asyncio.gather(*(self._ping(sid) for sid in watched))
            for (sid, instance), ok in zip(watched.items(), alive, strict=True):
                if ok is True:
                    misses.pop(sid, None)
                    continue
                misses[sid] = MAX_MISSES if ok is None else misses.get(sid, 0) + 1
                if misses[sid] >= MAX_MISSES:
                    misses.pop(sid)
                    self._fail(sid, instance)

    async def _ping(self, service_id: str) -> bool | None:
        """True: it answered; False: no answer in time; None: no responders (the instance is gone)."""
        try:
            await self.nc.request(f"$SRV.PING.{self.service}.{service_id}", b"", timeout=PING_TIMEOUT_S)
            return True
        except NoRespondersError:
            return None
        except (NatsTimeout, TimeoutError):
            return False
        except Exception:
            return True  # our own connection trouble says nothing about the aggregator

    def _fail(self, service_id: str, instance: str) -> None:
        for call in self.calls.values():
            if call.service_id == service_id and not call.future.done():
                call.future.set_exception(AggregatorLost(instance))
                self.lost += 1
