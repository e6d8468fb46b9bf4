"""The request id and the caller's trace id of each HTTP request: chosen once, before anything else runs.

`X-Request-Id` is the client's correlation id. It becomes part of generated transaction ids, JetStream Msg-Ids and
every log line, so only a short plain token is taken as is (`REQUEST_ID_PATTERN`). Anything else is replaced by a
generated id, and the scoring routes refuse the request with 400 (`request_id` dependency in `dependencies.py`) so
that the client does not lose its correlation silently. Both ids go into the log context (`shared.logs`) for every
line written while the request runs.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from gateway.schemas import REQUEST_ID_PATTERN
from shared.logs import request_id_var, trace_id_of, trace_id_var

_VALID = re.compile(REQUEST_ID_PATTERN)
BAD_REQUEST_ID = "bad_request_id"
"""Scope-state key of an `X-Request-Id` value that was replaced."""


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def request_context(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: picks the request id, and sets the log context for the request."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        given = _header(scope, b"x-request-id")
        if given is not None and _VALID.match(given):
            rid = given
        else:
            rid = uuid.uuid4().hex
            if given is not None:
                state[BAD_REQUEST_ID] = given
        state["request_id"] = rid
        rid_token = request_id_var.set(rid)
        trace_token = trace_id_var.set(trace_id_of(_header(scope, b"traceparent")))
        try:
            await app(scope, receive, send)
        finally:
            request_id_var.reset(rid_token)
            trace_id_var.reset(trace_token)

    return middleware


def request_id_of(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The request id chosen by `request_context` (a fresh one for requests it did not see, such as a 404)."""
    state = connection.scope.setdefault("state", {})
    rid = state.get("request_id")
    if rid is None:
        given = connection.headers.get("x-request-id")
        rid = state["request_id"] = given if given is not None and _VALID.match(given) else uuid.uuid4().hex
    return str(rid)
