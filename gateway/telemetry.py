"""Tracing for the gateway with Litestar's own OpenTelemetry plugin (`litestar.plugins.opentelemetry`).

The plugin wraps the whole ASGI app in OpenTelemetry's ASGI middleware (package
`opentelemetry-instrumentation-asgi`; `opentelemetry-instrumentation-litestar` is NOT Litestar's and is not used).
For every HTTP request it continues the caller's W3C `traceparent` (or starts a trace) with a SERVER span named
`POST /predict` and keeps that span *current* while the route handler runs. `NatsBridge.score` injects the current
context into the NATS headers of `fraud.score`, so the aggregator's span is a child of the gateway's span.

Enabled only when an OTLP endpoint is configured, like `shared.telemetry.setup_tracing`, which installs the SDK
provider that the plugin's tracer records into. With no endpoint there is no plugin and no span at all.
"""

from __future__ import annotations

import os
from typing import Any

from shared.settings import Settings

UNTRACED_PATHS = ("/metrics", "/health", "/healthz", "/ready")
"""Scrapes and probes: frequent, uninteresting, and they would drown the traces of real requests."""

ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def otlp_endpoint_configured() -> bool:
    """The same test as `shared.telemetry.setup_tracing`: an empty value counts as unset."""
    return any(os.environ.get(var) for var in ENDPOINT_VARS)


def otel_config(tracer_provider: Any = None) -> Any:
    """Litestar's `OpenTelemetryConfig` for the gateway (imports the plugin lazily: it needs the ASGI package).
    `tracer_provider` defaults to the global one, which `setup_tracing` installed."""
    from litestar.plugins.opentelemetry import OpenTelemetryConfig

    return OpenTelemetryConfig(
        tracer_provider=tracer_provider,
        # anchored: `exclude` patterns are searched in the path, and "/health" alone would also hide "/healthz"
        exclude=[f"^{path}/?$" for path in UNTRACED_PATHS],
        # one span per request: the per-ASGI-message "http receive" / "http send" spans add nothing here
        exclude_spans=["receive", "send"],
    )


def otel_plugins(settings: Settings | None = None, tracer_provider: Any = None) -> list[Any]:
    """`Litestar(plugins=[*otel_plugins(settings), ...])`: the OpenTelemetry plugin when an OTLP endpoint is
    configured, else nothing. `settings` is accepted for symmetry with the rest of `create_app`; the endpoint comes
    from the standard OpenTelemetry environment variables, which the exporter itself reads."""
    del settings
    if not otlp_endpoint_configured():
        return []
    from litestar.plugins.opentelemetry import OpenTelemetryPlugin

    return [OpenTelemetryPlugin(otel_config(tracer_provider))]
