"""OpenAPI request bodies for handlers that decode their own body (strictly, with every error reported).

Litestar documents a body it decodes itself; ours is read raw and decoded by msgspec in strict mode, so we
attach the schema msgspec generates for the same Struct.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.openapi.spec import Operation


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def request_schema(type_: type) -> dict[str, Any]:
    schema = msgspec.json.schema(type_)
    inlined: dict[str, Any] = _inline(schema, schema.get("$defs", {}))
    return inlined


def body_operation(type_: type) -> type[Operation]:
    schema = request_schema(type_)

    @dataclass
    class BodyOperation(Operation):
        def to_schema(self) -> dict[str, Any]:
            doc = super().to_schema()
            doc["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
            return doc

    BodyOperation.__name__ = f"{type_.__name__}Operation"
    return BodyOperation
