"""An in-process OTLP/HTTP trace receiver for tests: what Jaeger's port 4318 does, minus the storage and UI.

It listens on a free loopback port in a daemon thread, accepts `POST /v1/traces` with a protobuf
`ExportTraceServiceRequest` (optionally gzip-compressed), answers 200 with an empty `ExportTraceServiceResponse`,
and keeps every span as a flat `SpanRecord`. Point services at it with
`OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint`.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class SpanRecord:
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    name: str
    kind: str  # "SERVER", "CONSUMER", "INTERNAL", ...
    service: str  # the resource's service.name
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)
    start_ns: int = 0
    end_ns: int = 0
    status_code: str = "UNSET"

    def __str__(self) -> str:
        parent = self.parent_span_id or "-"
        return f"{self.service:<22} {self.kind:<9} {self.name!r} span={self.span_id} parent={parent}"


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return _attributes(v.kvlist_value.values)
    return getattr(v, kind)


def _attributes(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kv: KeyValue
    for kv in kvs:
        out[kv.key] = _value(kv.value)
    return out


def decode_spans(body: bytes) -> list[SpanRecord]:
    """The spans of one `ExportTraceServiceRequest`, flattened."""
    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    out = []
    for rs in req.resource_spans:
        resource = _attributes(rs.resource.attributes)
        service = str(resource.get("service.name", ""))
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(
                    SpanRecord(
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(),
                        name=s.name,
                        kind=Span.SpanKind.Name(s.kind).removeprefix("SPAN_KIND_"),
                        service=service,
                        attributes=_attributes(s.attributes),
                        resource=resource,
                        start_ns=s.start_time_unix_nano,
                        end_ns=s.end_time_unix_nano,
                        status_code=s.status.StatusCode.Name(s.status.code).removeprefix("STATUS_CODE_"),
                    )
                )
    return out


class OtlpReceiver:
    """`with OtlpReceiver() as rx:` ... `rx.endpoint`, `rx.spans()`, `rx.wait_for(predicate)`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Lock()
        self._spans: list[SpanRecord] = []
        self.requests = 0
        self.rejected: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _answer(self, status: int, body: bytes, ctype: str = PROTOBUF) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.rstrip("/") != "/v1/traces":
                    receiver._reject(f"POST {self.path}")
                    self._answer(404, b"only /v1/traces here\n", "text/plain")
                    return
                ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
                if ctype != PROTOBUF:
                    receiver._reject(f"content-type {ctype!r}")
                    self._answer(415, b"only application/x-protobuf here\n", "text/plain")
                    return
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                try:
                    if encoding == "gzip":
                        body = gzip.decompress(body)
                    elif encoding == "deflate":
                        body = zlib.decompress(body)
                    spans = decode_spans(body)
                except Exception as exc:
                    receiver._reject(f"undecodable body: {exc!r}")
                    self._answer(400, f"cannot decode: {exc}\n".encode(), "text/plain")
                    return
                receiver._add(spans)
                self._answer(200, ExportTraceServiceResponse().SerializeToString())

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.host, self.port = self._server.server_address[:2]
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """The base URL for OTEL_EXPORTER_OTLP_ENDPOINT (the exporter appends /v1/traces)."""
        return f"http://{self.host}:{self.port}"

    def _add(self, spans: list[SpanRecord]) -> None:
        with self._lock:
            self.requests += 1
            self._spans.extend(spans)

    def _reject(self, why: str) -> None:
        with self._lock:
            self.rejected.append(why)

    def spans(self, trace_id: str | None = None) -> list[SpanRecord]:
        with self._lock:
            return [s for s in self._spans if trace_id is None or s.trace_id == trace_id]

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()
            self.requests = 0
            self.rejected.clear()

    def wait_for(
        self, predicate: Callable[[list[SpanRecord]], bool], timeout: float = 15.0, trace_id: str | None = None
    ) -> list[SpanRecord]:
        """Poll until `predicate(spans)` holds, or `timeout` passes; returns the spans either way."""
        end = time.monotonic() + timeout
        while True:
            spans = self.spans(trace_id)
            if predicate(spans) or time.monotonic() >= end:
                return spans
            time.sleep(0.1)

    def start(self) -> OtlpReceiver:
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
