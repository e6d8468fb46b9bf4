"""The one dispatch core every incoming message goes through, whatever form it arrived in (request-reply
endpoint, JetStream consumer, plain listener, KV watch): log context (request id, trace id), a consumer span
that follows the OpenTelemetry messaging conventions, the form's own handling, and the handler metric.

With tracing off no span is made and nothing is allocated for one; the caller's trace id still reaches the
logs, and outgoing messages carry the trace headers through (`Service.outgoing_headers`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from opentelemetry.trace import Span, SpanKind, Tracer

from shared import subjects
from shared.logs import log_fields, request_id_var, trace_id_of, trace_id_var
from shared.metrics import HandlerMetrics
from shared.telemetry import extract, tracing_enabled

MESSAGING_SYSTEM = "nats"
log = logging.getLogger("fraudmesh.dispatch")


def messaging_attributes(operation: str, destination: str, **extra: Any) -> dict[str, Any]:
    """OpenTelemetry messaging semantic-convention attributes of a NATS span."""
    attributes: dict[str, Any] = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": destination,
    }
    attributes.update({k: v for k, v in extra.items() if v not in (None, "")})
    return attributes


class Route:
    """One way in: a named handler on a destination. Subclasses implement `handle` (decode, deadline, call,
    and what the form does with the outcome). The counters feed `$SRV.STATS`."""

    kind = "listener"

    def __init__(self, name: str, destination: str, group: str = "") -> None:
        self.name = name
        self.destination = destination
        self.group = group
        self.span_name = f"process {destination}"
        self.attributes = messaging_attributes("process", destination, **{"messaging.consumer.group.name": group})
        self.requests = 0
        self.errors = 0
        self.processing_ns = 0
        self.last_error = ""

    async def handle(self, item: Any, subject: str, headers: dict[str, str], span: Span | None) -> str:
        """Handle one message; returns the outcome label ('ok' or why not). Never raises."""
        raise NotImplementedError

    def stats_metadata(self) -> dict[str, str]:
        return {"kind": self.kind}


class Dispatcher:
    def __init__(self, tracer: Tracer, metrics: HandlerMetrics) -> None:
        self.tracer = tracer
        self.metrics = metrics
        self.tracing = tracing_enabled()
        """Make spans: set by the service when it starts (after tracing was set up)."""

    async def run(self, route: Route, item: Any, subject: str, headers: dict[str, str], size: int = 0) -> str:
        started = time.perf_counter_ns()
        rid_token = request_id_var.set(headers.get(subjects.HDR_REQUEST_ID, ""))
        trace_token = trace_id_var.set(trace_id_of(headers.get("traceparent")))
        outcome = "error"
        try:
            if self.tracing:
                attributes = dict(route.attributes)
                attributes["messaging.destination.name"] = subject
                msg_id = headers.get(subjects.HDR_MSG_ID)
                if msg_id:
                    attributes["messaging.message.id"] = msg_id
                if size:
                    attributes["messaging.message.body.size"] = size
                with self.tracer.start_as_current_span(
                    route.span_name, context=extract(headers), kind=SpanKind.CONSUMER, attributes=attributes
                ) as span:
                    outcome = await route.handle(item, subject, headers, span)
            else:
                outcome = await route.handle(item, subject, headers, None)
        except Exception:  # a form's handle() never raises; if one does, say so instead of losing it in a task
            log.exception("dispatch failed", extra=log_fields(handler=route.name, subject=subject))
        finally:
            elapsed = time.perf_counter_ns() - started
            route.requests += 1
            route.processing_ns += elapsed
            if outcome != "ok":
                route.errors += 1
                route.last_error = outcome
            self.metrics.observe(route.name, outcome, elapsed / 1e9)
            request_id_var.reset(rid_token)
            trace_id_var.reset(trace_token)
        return outcome
