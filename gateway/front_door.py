"""The gateway's front door: refusing work at the cheapest point, before Litestar parses anything.

Under overload, most requests must be refused, and a refusal must cost far less than a request served, or the
refusals themselves fill the event loop and every answer (200 or 503) comes late. `FrontDoor` is a plain ASGI layer
in front of the Litestar app: for a POST (the routes that score or ingest) it answers 503 + Retry-After at once,
without reading the body, when
- the request waited too long in the gateway's queue before it was seen (gateway/queue_delay.py: CoDel's standing
  queue test against FRAUDMESH_ADMISSION_QUEUE_TARGET_MS, and FRAUDMESH_ADMISSION_MAX_QUEUE_MS as a hard bound), or
- admission control would refuse even a one-transaction request now (gateway/admission.py `refuse_early`: too many
  requests in flight, or a wait estimated past the queue bound).
Everything else (GET routes, probes, docs, metrics) always goes through. The exact, size-aware admission of a scoring
request stays in the bridge, once its transactions are counted (`Admission.try_admit`; a batch is refused before its
transactions are validated).

The HTTP protocol (`door_protocol`: uvicorn's httptools protocol, subclassed) does the cheapest part: it stamps the
time each request's bytes were read off the socket (`RECEIVED_AT`, from which the door measures the delay), and it
answers the admission refusal itself as soon as a POST's headers are parsed, in one write, with no ASGI task: under
a flood of 512 connections most requests are refused, and what each refusal costs decides how long every request,
admitted or not, waits in the event loop. It then reads that connection's next request only REFUSED_READ_PAUSE_S
later: a client that honours Retry-After (at least 1 s) never notices, and one that retries at once cannot keep the
loop busy with refusals while admitted requests wait behind them.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
import uuid
from typing import Any

import msgspec
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.admission import Admission
from gateway.queue_delay import QueueDelay
from gateway.schemas import REQUEST_ID_PATTERN
from shared.messages import ErrorReply

RECEIVED_AT = "fraudmesh.received_at"
"""Scope-state key: `time.monotonic()` when the request's first bytes were parsed."""
GUARDED_METHODS = frozenset({"POST"})
REFUSED_READ_PAUSE_S = 0.2
"""After the protocol refuses a request, how long it waits before reading that connection's next one."""
_VALID_ID = re.compile(REQUEST_ID_PATTERN)
_encode = msgspec.json.Encoder().encode

Scope = dict[str, Any]
ASGIApp = Any


class _Answered:
    """The request cycle of a request the protocol answered itself: complete, so its body (if any) is dropped as it
    arrives and the connection's next request starts as usual."""

    response_complete = True
    disconnected = False
    keep_alive = True

    def __init__(self) -> None:
        self.message_event = asyncio.Event()


_ANSWERED = _Answered()


def door_protocol(door: FrontDoor) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, plus the door's two jobs at the cheapest point there is: it stamps the time each
    request was read (`RECEIVED_AT` in its scope state), and it refuses a POST that admission control would refuse
    anyway (`Admission.refuse_early`) as soon as its headers are parsed: one write, no ASGI task, no app."""

    class DoorHttpToolsProtocol(HttpToolsProtocol):
        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.scope["state"][RECEIVED_AT] = time.monotonic()

        def on_headers_complete(self) -> None:
            if (
                (self.cycle is None or self.cycle.response_complete)
                and self.parser.get_method() == b"POST"
                and not self.parser.should_upgrade()
            ):
                refusal = door.admission.refuse_early()
                if refusal is not None:
                    door.shed_admission()
                    self._answer_503(door.refusal_body(self.headers, refusal.reason, refusal.retry_after_s))
                    return
            super().on_headers_complete()

        def _answer_503(self, answer: tuple[bytes, int, str]) -> None:
            body, retry, rid = answer
            keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
            head = [b"HTTP/1.1 503 Service Unavailable\r\n"]
            for name, value in self.server_state.default_headers:
                head += [name, b": ", value, b"\r\n"]
            head.append(
                b"content-type: application/json\r\ncontent-length: %d\r\nretry-after: %d\r\nx-request-id: %s\r\n"
                % (len(body), retry, rid.encode())
            )
            if not keep_alive:
                head.append(b"connection: close\r\n")
            head += [b"\r\n", body]
            self.transport.write(b"".join(head))
            self.cycle = _ANSWERED  # type: ignore[assignment]
            self.on_response_complete()
            if not keep_alive:
                self.transport.close()
                return
            # the client was told to come back after Retry-After: its next request is not read for a moment, so
            # that clients retrying at once cannot keep the event loop busy with refusals (it is still answered
            # well within a second)
            self.flow.pause_reading()
            self.loop.call_later(REFUSED_READ_PAUSE_S, self.flow.resume_reading)

    return DoorHttpToolsProtocol


def _metric(registry: CollectorRegistry, kind: type[Counter] | type[Gauge], name: str, doc: str, **kw: Any) -> Any:
    existing = registry._names_to_collectors.get(name + ("_total" if kind is Counter else ""))
    return existing if isinstance(existing, kind) else kind(name, doc, registry=registry, **kw)


class FrontDoor:
    """ASGI app: `FrontDoor(litestar_app, admission, queue)` refuses what must be refused, passes the rest on."""

    def __init__(
        self, app: ASGIApp, admission: Admission, queue: QueueDelay, registry: CollectorRegistry = REGISTRY
    ) -> None:
        self.app = app
        self.admission = admission
        self.queue = queue
        shed = _metric(
            registry,
            Counter,
            "fraudmesh_gateway_shed",
            "Requests the gateway's front door refused (503 + Retry-After) before reading them, by reason.",
            labelnames=["reason"],
        )
        self._shed_queue = shed.labels("queue_delay")
        self._shed_admission = shed.labels("admission")
        self._delay = _metric(
            registry,
            Gauge,
            "fraudmesh_gateway_queue_delay_seconds",
            "The smallest time a request waited in the gateway before it was seen, over the last 100 ms interval.",
        )
        self.shed = 0
        for name, doc, value in (
            ("fraudmesh_gateway_admitted_requests", "Scoring requests admitted and not yet answered.", "requests"),
            ("fraudmesh_gateway_admitted_transactions", "Transactions of the admitted requests.", "transactions"),
            ("fraudmesh_gateway_service_rate", "Admission's measured work units answered per second.", "rate"),
        ):
            gauge = _metric(registry, Gauge, name, doc)
            gauge.set_function(lambda attr=value: float(getattr(admission, attr)))

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        now = time.monotonic()
        received = scope.get("state", {}).get(RECEIVED_AT)
        delay = now - received if received is not None else 0.0
        late = self.queue.observe(delay, now)
        self._delay.set(self.queue.last_min_s)
        if scope["method"] in GUARDED_METHODS:
            if late:
                self.shed += 1
                self._shed_queue.inc()
                reason = (
                    f"it waited {delay * 1000:.0f} ms in this gateway's queue before it could be read (target "
                    f"{self.queue.target_s * 1000:.0f} ms, FRAUDMESH_ADMISSION_QUEUE_TARGET_MS)"
                )
                await self._refuse(scope, send, reason, 1.0)
                return
            refusal = self.admission.refuse_early()
            if refusal is not None:
                self.shed_admission()
                await self._refuse(scope, send, refusal.reason, refusal.retry_after_s)
                return
        await self.app(scope, receive, send)

    def shed_admission(self) -> None:
        self.shed += 1
        self._shed_admission.inc()

    def refusal_body(
        self, headers: list[tuple[bytes, bytes]], reason: str, retry_after_s: float
    ) -> tuple[bytes, int, str]:
        """(JSON body, Retry-After seconds, request id) of a 503 refusal."""
        rid = _request_id(headers)
        retry = max(1, math.ceil(retry_after_s))
        body = _encode(
            ErrorReply(
                code="unavailable",
                request_id=rid,
                retryable=True,
                retry_after_s=float(retry),
                message=f"Overloaded: this gateway refuses the request rather than answer it late ({reason}). "
                "Retry after the Retry-After delay.",
            )
        )
        return body, retry, rid

    async def _refuse(self, scope: Scope, send: Any, reason: str, retry_after_s: float) -> None:
        body, retry, rid = self.refusal_body(scope.get("headers", []), reason, retry_after_s)
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", b"%d" % retry),
                    (b"x-request-id", rid.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    for key, value in headers:
        if key == b"x-request-id":
            given = value.decode("latin-1")
            return given if _VALID_ID.match(given) else uuid.uuid4().hex
    return uuid.uuid4().hex
