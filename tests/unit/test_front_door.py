"""The gateway's front door (gateway/front_door.py) and its queue-delay test (gateway/queue_delay.py): what is
refused before Litestar reads a request, with what answer; no servers (a recording ASGI app stands for Litestar)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from prometheus_client import CollectorRegistry

from gateway.admission import MIN_IN_FLIGHT, Admission
from gateway.front_door import RECEIVED_AT, FrontDoor
from gateway.queue_delay import INTERVAL_S, QueueDelay


def test_a_queue_that_drains_is_not_overload_a_standing_one_is() -> None:
    q = QueueDelay(target_s=0.05, max_s=0.2)
    t = 100.0
    # a burst: some requests wait 150 ms, but one of the interval did not wait: no standing queue
    assert not q.observe(0.15, t) and not q.observe(0.0, t + 0.01)
    assert not q.observe(0.15, t + INTERVAL_S + 0.01)  # the next interval judges the last: not overloaded
    assert not q.overloaded
    # a whole interval in which every request waited more than the target
    for k in range(5):
        q.observe(0.08, t + 2 * INTERVAL_S + 0.02 * k)
    assert q.observe(0.15, t + 3 * INTERVAL_S + 0.1)  # overloaded: waited past twice the target, refused
    assert q.overloaded and not q.observe(0.07, t + 3 * INTERVAL_S + 0.11)  # below twice the target: served
    assert q.observe(0.25, t + 3 * INTERVAL_S + 0.12)  # past the hard bound: refused whatever the state


def test_an_idle_interval_ends_the_overload() -> None:
    q = QueueDelay(target_s=0.05, max_s=1.0)
    for k in range(5):
        q.observe(0.2, 10.0 + 0.02 * k)
    assert q.observe(0.2, 10.0 + INTERVAL_S + 0.01)
    assert not q.observe(0.2, 60.0)  # nothing was seen for a long time: the next interval starts clean


class Recorder:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _call(door: FrontDoor, method: str, path: str, waited_s: float, headers: list[tuple[bytes, bytes]]) -> list[Any]:
    import time

    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the front door never reads the body")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": headers,
        "state": {RECEIVED_AT: time.monotonic() - waited_s},
    }
    asyncio.run(door(scope, receive, send))
    return sent


def test_the_front_door_refuses_work_it_cannot_serve_and_never_a_probe() -> None:
    app = Recorder()
    admission = Admission(max_requests=MIN_IN_FLIGHT, max_transactions=100, max_queue_s=0.2)
    admission.rate = 1e6
    door = FrontDoor(app, admission, QueueDelay(0.05, 0.2), registry=CollectorRegistry())
    assert _call(door, "POST", "/score/fraud", 0.0, [])[0]["status"] == 200
    for _ in range(MIN_IN_FLIGHT):
        admission.try_admit(1, 5.0)  # the in-flight bound is reached
    sent = _call(door, "POST", "/predict", 0.0, [(b"x-request-id", b"abc-1")])
    start, body = sent[0], json.loads(sent[1]["body"])
    headers = dict(start["headers"])
    assert start["status"] == 503 and headers[b"retry-after"] == b"1" and headers[b"x-request-id"] == b"abc-1"
    assert body["code"] == "unavailable" and body["retryable"] and body["request_id"] == "abc-1"
    assert "FRAUDMESH_GATEWAY_MAX_IN_FLIGHT" in body["message"]
    # a POST that waited past the hard bound in the gateway's queue: refused, naming the wait
    for _ in range(MIN_IN_FLIGHT):
        admission.release(1)
    body = json.loads(_call(door, "POST", "/predict", 0.5, [(b"x-request-id", b"bad id/")])[1]["body"])
    assert "waited" in body["message"] and body["request_id"] != "bad id/"
    # probes and reads always pass, however long they waited
    assert _call(door, "GET", "/ready", 0.5, [])[0]["status"] == 200
    assert app.seen == ["/score/fraud", "/ready"] and door.shed == 2
