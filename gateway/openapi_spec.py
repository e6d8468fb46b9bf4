"""The pieces of an exact OpenAPI document that Litestar does not produce by itself.

- `error_responses(400, 413, ...)`: a route's error statuses, each documented with the project's real error body
  (`ErrorReply`), not Litestar's `{status_code, detail}`; handlers pass it as `responses=`.
- `body_operation_of(Type, example)`: the request body of a handler that decodes its own body (strictly, see
  gateway/validation.py), with the schema msgspec generates for `Type` and the seed's example.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example, Operation

from gateway.openapi import request_schema
from shared.messages import ErrorCode, ErrorReply, FieldError

ERROR_TEXT: dict[int, tuple[str, ErrorCode, str]] = {
    400: ("Bad input: `errors` lists every problem at its JSON path.", "bad_request", "The request body is invalid."),
    401: ("No API key, or an unknown one (X-API-Key).", "unauthorized", "Missing API key: send it in X-API-Key."),
    404: ("Nothing of that name.", "not_found", "Unknown model 'x'."),
    409: (
        "In conflict: a transaction id scored within the idempotency window with a different body (`errors` names "
        "the fields: send the same body, a new transaction_id, or ?rescore=true), or an operation on what is served "
        "(deleting the active model version).",
        "conflict",
        "Transaction id 'tx-1' already names another transaction.",
    ),
    413: ("Too many transactions in one request: split the batch.", "payload_too_large", "Too many transactions."),
    415: ("The body is not declared JSON (Content-Type).", "bad_request", "The body must be JSON."),
    429: ("Rate limited: retry after Retry-After seconds.", "rate_limited", "Rate limit exceeded."),
    503: ("A service behind NATS is down or not ready: retry shortly.", "unavailable", "No aggregator is up."),
    504: ("The deadline (timeout_ms) passed before anything was scored.", "deadline_exceeded", "Deadline passed."),
}


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """`responses=` for a handler: each status with the `ErrorReply` schema, a description and an example."""
    out = {}
    for status in statuses:
        description, code, message = ERROR_TEXT[status]
        example = ErrorReply(
            code=code,
            message=message,
            request_id="3f2c9a0e5d7b4c1a",
            errors=[FieldError(path="$.transaction_amount", message="Expected `number`, got `str`")]
            if status == 400
            else [],
            retryable=status in (429, 503, 504),
        )
        out[status] = ResponseSpec(
            data_container=ErrorReply,
            description=description,
            generate_examples=False,
            examples=[Example(summary=code, value=msgspec.to_builtins(example))],
        )
    return out


def _without_discriminators(node: Any) -> Any:
    """A tagged union's `discriminator` names `$defs` that inlining removed; each member still says its tag."""
    if isinstance(node, dict):
        return {k: _without_discriminators(v) for k, v in node.items() if k != "discriminator"}
    if isinstance(node, list):
        return [_without_discriminators(v) for v in node]
    return node


def body_operation_of(type_: Any, example: Any) -> type[Operation]:
    """An Operation whose request body is `type_`'s msgspec schema (inlined), with `example`."""
    schema = _without_discriminators(request_schema(type_))
    schema["title"] = str(schema.get("title", "Body")).split("[", 1)[0]  # `Request[StrictTransaction]` -> `Request`

    @dataclass
    class BodyOperation(Operation):
        def to_schema(self) -> dict[str, Any]:
            doc = super().to_schema()
            doc["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema, "example": example}},
            }
            return doc

    BodyOperation.__name__ = f"{getattr(type_, '__name__', 'Body')}Operation"
    return BodyOperation
