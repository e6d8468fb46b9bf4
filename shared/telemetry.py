"""OpenTelemetry: W3C trace context in NATS headers, and OTLP export when OTEL_EXPORTER_OTLP_ENDPOINT is set.

With no endpoint, no SDK is installed: spans are non-recording and cost next to nothing, but incoming trace
context is still carried through, so a trace started upstream stays whole across hops.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context

_provider_installed = False


def setup_tracing(service_name: str, instance_id: str) -> None:
    """Install the SDK tracer provider with an OTLP/HTTP exporter, if an endpoint is configured."""
    global _provider_installed
    if _provider_installed or not (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME", service_name),
            "service.instance.id": instance_id,
        }
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(), schedule_delay_millis=500))
    trace.set_tracer_provider(provider)
    _provider_installed = True
    instrument_clients()


def instrument_clients() -> None:
    """Client spans for Redis commands (opentelemetry-instrumentation-redis), only when tracing is on: with tracing
    off the commands stay unwrapped, so the hot path pays nothing. (asyncpg has no instrumentation release that
    matches this OpenTelemetry version; the feature service's SQL has its own `postgres <group>` spans.)"""
    try:
        from opentelemetry.instrumentation.redis import RedisInstrumentor
    except ImportError:  # pragma: no cover - an optional extra in a slim image
        return
    instrumentor = RedisInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()


def tracing_enabled() -> bool:
    """True when spans are recorded and exported. When False, services skip span creation (it costs ~10% of a
    hot handler's CPU for spans nobody sees) and pass the caller's trace headers through unchanged instead."""
    return _provider_installed


TRACE_HEADERS = ("traceparent", "tracestate")


def pass_through(incoming: Mapping[str, str] | None, outgoing: dict[str, str]) -> dict[str, str]:
    """Copy the W3C trace headers from an incoming message to an outgoing one (tracing disabled here)."""
    if incoming:
        for h in TRACE_HEADERS:
            v = incoming.get(h)
            if v is not None:
                outgoing[h] = v
    return outgoing


def shutdown_tracing() -> None:
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if callable(shutdown):
        shutdown()


def extract(headers: Mapping[str, str] | None) -> Context:
    """The trace context carried in NATS (or HTTP) headers."""
    return propagate.extract(headers or {})


def inject(headers: dict[str, str], ctx: Context | None = None) -> dict[str, str]:
    """Write the current (or given) trace context into headers, W3C traceparent/tracestate."""
    propagate.inject(headers, context=ctx if ctx is not None else otel_context.get_current())
    return headers


MODEL_FAMILY = "fraudmesh.model_family"
"""Span attribute: the model family (`fraud`, `personalization`) a span scores for (shared/messages.py
`ModelFamily`); the metrics carry the same label."""


def label_family(family: str) -> None:
    """Label the current span (a handler's consumer span, the gateway's server span) with the model family it
    serves; nothing when tracing is off (the span does not record)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(MODEL_FAMILY, family)


def current_trace_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""
