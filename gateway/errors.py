"""Every error, ours or Litestar's, leaves as one JSON shape with a status that says what happened.

`ErrorReply` (`{"type": "error", "code", "message", "request_id", "errors": [{"path", "message"}]}`): 400 bad input,
401 no or wrong API key, 413 too many transactions, 415 not JSON, 429 rate limited (with Retry-After), 503 a service
is down, 504 the deadline passed. Refusals are logged at INFO (path, query, status, the error paths; not 401 and 429):
the log formatter masks any card number in them.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from gateway.bridge import BridgeError
from gateway.request_context import request_id_of
from gateway.validation import MAX_ERRORS, BodyError, TooManyTransactions
from shared.logs import log_fields
from shared.messages import ErrorCode, ErrorReply, FieldError

log = logging.getLogger("fraudmesh.gateway")

STATUS: dict[ErrorCode, int] = {
    "bad_request": 400,
    "unauthorized": 401,
    "not_found": 404,
    "conflict": 409,
    "payload_too_large": 413,
    "rate_limited": 429,
    "internal": 500,
    "unavailable": 503,
    "deadline_exceeded": 504,
    "incomplete": 504,
}
CODE_OF_STATUS: dict[int, ErrorCode] = {
    400: "bad_request",
    401: "unauthorized",
    403: "unauthorized",
    404: "not_found",
    409: "conflict",
    413: "payload_too_large",
    429: "rate_limited",
    503: "unavailable",
}
KEPT_STATUS = (403, 405, 406, 415)
"""Statuses with no code of their own: the reply keeps the status and says `bad_request` (or `unauthorized`)."""
UNLOGGED = (401, 429)
"""Refusals without a `request refused` line: 401 has its own (`authentication failed`), and a 429 flood must not
become a log flood (both are counted in `fraudmesh_http_requests_total` by status)."""
_json = msgspec.json.Encoder()
_MISSING_PARAM = re.compile(r"Missing required (query|header|path|cookie) parameter '([^']+)'")


def error_response(reply: ErrorReply, status: int | None = None) -> Response[bytes]:
    status = status or STATUS.get(reply.code, 500)
    headers = {"X-Request-Id": reply.request_id}
    if reply.retryable and status in (429, 503):  # say when to come back (admission control, degraded `fail`)
        headers["Retry-After"] = str(max(1, math.ceil(reply.retry_after_s)))
    return Response(content=_json.encode(reply), status_code=status, media_type="application/json", headers=headers)


def _refused(request: Request[Any, Any, Any], reply: ErrorReply, status: int) -> None:
    log.info(
        "request refused",
        extra=log_fields(
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            status=status,
            code=reply.code,
            error_paths=[e.path for e in reply.errors[:10]],
        ),
    )


def reply_with(request: Request[Any, Any, Any], reply: ErrorReply, status: int | None = None) -> Response[bytes]:
    status = status or STATUS.get(reply.code, 500)
    if status < 500 and status not in UNLOGGED:
        _refused(request, reply, status)
    return error_response(reply, status)


def on_bridge_error(request: Request[Any, Any, Any], exc: BridgeError) -> Response[bytes]:
    return reply_with(request, exc.reply)


def on_body_error(request: Request[Any, Any, Any], exc: BodyError) -> Response[bytes]:
    return reply_with(
        request,
        ErrorReply(
            code="bad_request",
            message=exc.message,
            request_id=request_id_of(request),
            errors=exc.errors,
            error_count=exc.total if exc.total > MAX_ERRORS else 0,
        ),
    )


def on_too_many(request: Request[Any, Any, Any], exc: TooManyTransactions) -> Response[bytes]:
    return reply_with(
        request, ErrorReply(code="payload_too_large", message=str(exc), request_id=request_id_of(request))
    )


def on_http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    code: ErrorCode = CODE_OF_STATUS.get(exc.status_code, "bad_request")
    if exc.status_code >= 500:
        code = "unavailable" if exc.status_code == 503 else "internal"
    errors = _validation_errors(exc) if isinstance(exc, ValidationException) else []
    reply = ErrorReply(code=code, message=str(exc.detail), request_id=request_id_of(request), errors=errors)
    resp = reply_with(request, reply, exc.status_code if exc.status_code in KEPT_STATUS else None)
    if exc.headers:
        resp.headers.update(exc.headers)
    return resp


def _validation_errors(exc: ValidationException) -> list[FieldError]:
    errors: list[FieldError] = []
    if isinstance(exc.extra, list):
        for item in exc.extra:
            if isinstance(item, dict):
                source = item.get("source", "request")
                where = f"{getattr(source, 'value', source)}.{item.get('key', '')}".rstrip(".")
                errors.append(FieldError(path=where, message=str(item.get("message", ""))))
    if not errors and (m := _MISSING_PARAM.search(str(exc.detail))):
        errors.append(
            FieldError(path=f"{m.group(1)}.{m.group(2)}", message=f"Missing required parameter `{m.group(2)}`.")
        )
    return errors


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    rid = request_id_of(request)
    log.exception("unhandled error", extra=log_fields(path=request.url.path))
    return error_response(
        ErrorReply(
            code="internal",
            message=f"Internal error ({type(exc).__name__}); quote request id {rid}.",
            request_id=rid,
            retryable=True,
        )
    )


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    BridgeError: on_bridge_error,
    BodyError: on_body_error,
    TooManyTransactions: on_too_many,
    HTTPException: on_http_error,
    Exception: on_unexpected,
}
