"""Prometheus metrics. Each service owns a CollectorRegistry (no process-global mutable registry), and
non-HTTP services serve it with their liveness and readiness on one small port:
`/metrics`, `/healthz` (the process answers) and `/readyz` (connected to NATS and subscribed).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import make_wsgi_app

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HandlerMetrics:
    """Counters and a latency histogram for every request-reply handler of a service."""

    def __init__(self, registry: CollectorRegistry, service: str) -> None:
        self.service = service
        self.messages = Counter(
            "fraudmesh_handler_messages",
            "Messages handled, by handler and outcome (ok, bad_request, deadline_exceeded, error).",
            ["service", "handler", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "fraudmesh_handler_duration_seconds",
            "Time from receipt to reply, by handler.",
            ["service", "handler"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.reconnects = Counter(
            "fraudmesh_nats_reconnects", "NATS reconnections of this process.", ["service"], registry=registry
        )
        self.disconnects = Counter(
            "fraudmesh_nats_disconnects",
            "NATS disconnections of this process.",
            ["service"],
            registry=registry,
        )

        self._children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        # expose 0 from the start, so that increase() sees the first reconnect
        self.reconnects.labels(service)
        self.disconnects.labels(service)

    def observe(self, handler: str, outcome: str, seconds: float) -> None:
        key = (handler, outcome)
        pair = self._children.get(key)
        if pair is None:  # labels() costs a lock and a dict lookup per call; resolve each pair once
            pair = self._children[key] = (
                self.messages.labels(self.service, handler, outcome),
                self.duration.labels(self.service, handler),
            )
        pair[0].inc()
        pair[1].observe(seconds)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


def serve_metrics(
    registry: CollectorRegistry, port: int, ready: Callable[[], bool], host: str = "0.0.0.0"
) -> Callable[[], None]:
    """Serve /metrics, /healthz and /readyz on `port` in a daemon thread. Returns a function that stops it."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, object], start_response: Callable[..., object]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if path == "/readyz":
            ok = ready()
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"ready\n" if ok else b"not ready\n"]
        return metrics_app(environ, start_response)  # type: ignore[no-any-return]  # prometheus_client is untyped

    server = make_server(host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return stop
