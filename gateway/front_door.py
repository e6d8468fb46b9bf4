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
request stays in the bridge, once its transactions are decoded (`Admission.try_admit`).

The delay is measured from the moment the request's bytes were read off the socket: `StampedHttpToolsProtocol`
(uvicorn's httptools protocol) stamps `RECEIVED_AT` into the request's scope state as the parser meets the request.
"""

from __future__ import annotations

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
_VALID_ID = re.compile(REQUEST_ID_PATTERN)
_encode = msgspec.json.Encoder().encode

Scope = dict[str, Any]
ASGIApp = Any


class StampedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus the time each request was read (`RECEIVED_AT` in its scope state)."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["state"][RECEIVED_AT] = time.monotonic()


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
                self._shed_queue.inc()
                reason = (
                    f"it waited {delay * 1000:.0f} ms in this gateway's queue before it could be read (target "
                    f"{self.queue.target_s * 1000:.0f} ms, FRAUDMESH_ADMISSION_QUEUE_TARGET_MS)"
                )
                await self._refuse(scope, send, reason, 1.0)
                return
            refusal = self.admission.refuse_early()
            if refusal is not None:
                self._shed_admission.inc()
                await self._refuse(scope, send, refusal.reason, refusal.retry_after_s)
                return
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, send: Any, reason: str, retry_after_s: float) -> None:
        self.shed += 1
        rid = _request_id(scope)
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
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(retry).encode()),
                    (b"x-request-id", rid.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _request_id(scope: Scope) -> str:
    for key, value in scope.get("headers", ()):
        if key == b"x-request-id":
            given = value.decode("latin-1")
            return given if _VALID_ID.match(given) else uuid.uuid4().hex
    return uuid.uuid4().hex
