"""Structured JSON logs: one line per event, carrying the request id and the trace id.

Card numbers and secrets never reach a log line: `redact` masks anything that looks like a PAN, and settings
with secrets are never logged.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time

import msgspec
from opentelemetry import trace

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
trace_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="")
"""The caller's trace id (from its traceparent header) when this process records no span of its own."""

_PAN = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_encoder = msgspec.json.Encoder()


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def looks_like_pan(text: str) -> bool:
    """True for 13-19 digits (nothing else) passing the Luhn check: a card number, not a token."""
    return 13 <= len(text) <= 19 and text.isascii() and text.isdigit() and _luhn_ok(text)


def _mask(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return "[REDACTED-PAN]" if 13 <= len(digits) <= 19 and _luhn_ok(digits) else match.group(0)


def redact(text: str) -> str:
    """Mask digit runs that are card numbers: 13-19 digits (optionally spaced or dashed) passing Luhn."""
    return _PAN.sub(_mask, text)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, instance_id: str) -> None:
        super().__init__()
        self.service = service
        self.instance_id = instance_id

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "service": self.service,
            "instance": self.instance_id,
            "logger": record.name,
            "event": redact(record.getMessage()),
        }
        rid = request_id_var.get()
        if rid:
            doc["request_id"] = rid
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            doc["trace_id"] = format(ctx.trace_id, "032x")
            doc["span_id"] = format(ctx.span_id, "016x")
        elif tid := trace_id_var.get():
            doc["trace_id"] = tid
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for k, v in fields.items():
                doc[k] = redact(v) if isinstance(v, str) else v
        if record.exc_info:
            doc["exception"] = redact(self.formatException(record.exc_info))
        return _encoder.encode(doc).decode()


def configure_logging(service: str, instance_id: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service, instance_id))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("nats", "asyncio", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    logging.Formatter.converter = time.gmtime


def trace_id_of(traceparent: str | None) -> str:
    """The trace id of a W3C traceparent (`00-<trace id>-<span id>-<flags>`), or ""."""
    if traceparent and len(traceparent) >= 55 and traceparent[2] == "-":
        return traceparent[3:35]
    return ""


def log_fields(**fields: object) -> dict[str, object]:
    """`log.info("event", extra=log_fields(k=v))` puts k into the JSON line."""
    return {"fields": fields}
