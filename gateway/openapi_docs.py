"""The OpenAPI document and its UI: exact where Litestar's defaults are not, and served without any CDN.

`OpenAPIFinish` completes Litestar's generated document once, before any render plugin serves it:
- every error response carries the project's `ErrorReply` schema (Litestar documents `{status_code, detail}`),
  and the statuses every route of a kind can return are listed: 401 and 429 behind the API keys, 400, 413 and 415
  where there is a body (a route's own statuses, such as 503 or 504, are in its `responses=`);
- query constraints Litestar cannot know: `timeout_ms` within 1..FRAUDMESH_MAX_REQUEST_TIMEOUT_MS, the
  `entity_type` enum;
- the `X-API-Key` security scheme (the API router names it; `create_app`);
- a description (and an example) for every field (gateway/openapi_fields.py).

The UI is Swagger UI from the `swagger-ui-bundle` wheel, served by the gateway under `/docs/static`.
"""

from __future__ import annotations

import copy
from typing import Any

import msgspec
import swagger_ui_bundle
from litestar import Request, Router
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, OpenAPIRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router

from gateway.compression import GZIP
from gateway.openapi_fields import describe
from gateway.openapi_spec import ERROR_TEXT
from shared.feature_messages import ENTITY_TYPES
from shared.messages import ErrorReply
from shared.settings import Settings

DOCS = "/docs"
STATIC = f"{DOCS}/static"
SECURITY_SCHEME = "ApiKey"
SECURITY: list[dict[str, list[str]]] = [{SECURITY_SCHEME: []}]
ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorReply"}
DESCRIPTION = """Real-time fraud scoring of payment transactions. The same API is on NATS (docs/nats-api.md).

Every error has one JSON shape, `ErrorReply`: `code`, `message`, `request_id`, and `errors` listing each problem
at its JSON path. Send `X-API-Key` when the operator set API keys (FRAUDMESH_API_KEYS); the probes, `/metrics` and
`/docs` never need one. `X-Request-Id` (1-64 of letters, digits, `_ . : -`) is echoed and becomes part of generated
transaction ids; another value is refused with 400 by the scoring routes. Replies over 1 KB are gzipped when the
client sends `Accept-Encoding: gzip`. The Open Inference Protocol routes (`/v2/...`) answer errors in OIP's own
`{"error": "..."}` shape."""


SEED_TX = {
    "card_id": "card_00001234",
    "transaction_amount": 150.0,
    "merchant_id": "merchant_12345",
    "mcc_code": "5411",
    "country_code": "US",
}
BODY_EXAMPLES: dict[str, Any] = {
    "/score/fraud": SEED_TX,
    "/predict": {"transactions": [SEED_TX, {"card_id": "card_2", "transaction_amount": 500.0}]},
    "/transactions": {"transactions": [{**SEED_TX, "transaction_id": "tx-1", "timestamp": "2026-11-01T14:00:00Z"}]},
    "/labels": {"labels": [{"transaction_id": "tx-1", "label": "fraud", "fraud_kind": "card_testing"}]},
    "/events": {
        "events": [
            {
                "event_id": "ev-1",
                "user_id": "user_00005678",
                "item_id": "item_electronics_001",
                "session_id": "session_abc123",
                "event_type": "view",
                "timestamp": "2026-11-01T14:00:00Z",
                "item_category": "electronics",
                "item_price": 299.99,
            }
        ]
    },
}
"""Request body examples of the routes whose handlers do not give one."""


class OpenAPIFinish:
    """Completes the generated document (see the module doc); the result is computed once and shared."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._done: tuple[int, dict[str, Any]] | None = None

    def __call__(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self._done is None or self._done[0] != id(schema):
            self._done = (id(schema), self.finish(schema))
        return self._done[1]

    def finish(self, schema: dict[str, Any]) -> dict[str, Any]:
        doc = copy.deepcopy(schema)
        components = doc.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault("ErrorReply", _error_reply_schema())
        for path, item in doc.get("paths", {}).items():
            for method, op in item.items():
                if isinstance(op, dict) and "responses" in op:
                    self._operation(path, method, op)
        describe(doc)
        return doc

    def _operation(self, path: str, method: str, op: dict[str, Any]) -> None:
        responses: dict[str, Any] = op["responses"]
        if path == "/metrics":
            responses["200"]["content"] = {"text/plain": {"schema": {"type": "string"}}}
            responses["200"]["description"] = "Prometheus text exposition format."
        for status, resp in responses.items():
            if _is_litestar_error(resp):
                responses[status] = _error_response(int(status))
        wanted: list[int] = []
        if op.get("security"):
            wanted += [401, 429]
        if "requestBody" in op:
            wanted += [400, 413, 415]
        for code in wanted:
            responses.setdefault(str(code), _error_response(code))
        op["responses"] = dict(sorted(responses.items()))
        body = op.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None and "example" not in body and path in BODY_EXAMPLES:
            body["example"] = BODY_EXAMPLES[path]
        for param in op.get("parameters", []):
            self._parameter(param)

    def _parameter(self, param: dict[str, Any]) -> None:
        name = param.get("name")
        if name == "timeout_ms":
            param["schema"] = {"type": "integer", "minimum": 1, "maximum": self.settings.max_request_timeout_ms}
            param["description"] = (
                f"Deadline of the request in ms, end to end (default {self.settings.request_timeout_ms}); "
                "transactions not scored by then come back missing (or the request fails with 504)."
            )
            param["example"] = 2000
        elif name == "entity_type":
            param["schema"] = {"type": "string", "enum": list(ENTITY_TYPES)}
            param["description"] = "The kind of entity."
        elif name == "entity_id":
            param["schema"] = {"type": "string", "pattern": r"^[A-Za-z0-9_.:@\-]{1,128}$"}
            param["description"] = "The entity's id (a card token, a merchant id, ...)."
            param["example"] = "card_00001234"
        elif name == "names":
            param["description"] = "Comma-separated feature names (default: all)."
        elif name == "name" and param.get("in") == "path":
            param["description"] = "Model name: `fraud`."
            param["example"] = "fraud"
        elif name == "version" and param.get("in") == "path":
            param["description"] = "A model version in service (see the model metadata's `versions`)."


def _error_reply_schema() -> dict[str, Any]:
    schema = msgspec.json.schema(ErrorReply)
    defs = schema.get("$defs", {})
    out: dict[str, Any] = defs.get("ErrorReply", schema)
    return out


def _is_litestar_error(resp: dict[str, Any]) -> bool:
    for media in resp.get("content", {}).values():
        props = media.get("schema", {}).get("properties", {})
        if "status_code" in props and "detail" in props:
            return True
    return False


def _error_response(status: int) -> dict[str, Any]:
    description, code, message = ERROR_TEXT[status]
    example = {"type": "error", "code": code, "message": message, "request_id": "3f2c9a0e5d7b4c1a"}
    return {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA, "example": example}}}


class _Finished:
    """A render plugin mix-in: renders the finished document, not Litestar's raw one."""

    finish: OpenAPIFinish

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        plugin: Any = super()
        return bytes(plugin.render(request, self.finish(openapi_schema)))


class FinishedJson(_Finished, JsonRenderPlugin):
    def __init__(self, finish: OpenAPIFinish) -> None:
        super().__init__()
        self.finish = finish


class FinishedSwagger(_Finished, SwaggerRenderPlugin):
    def __init__(self, finish: OpenAPIFinish) -> None:
        super().__init__(
            path=["/", "/swagger"],
            js_url=f"{STATIC}/swagger-ui-bundle.js",
            css_url=f"{STATIC}/swagger-ui.css",
            standalone_preset_js_url=f"{STATIC}/swagger-ui-standalone-preset.js",
            favicon=f"<link rel='icon' type='image/png' href='{STATIC}/favicon-32x32.png'>",
        )
        self.finish = finish


def openapi_config(settings: Settings, version: str) -> OpenAPIConfig:
    finish = OpenAPIFinish(settings)
    plugins: list[OpenAPIRenderPlugin] = [FinishedSwagger(finish), FinishedJson(finish)]
    return OpenAPIConfig(
        title="fraudmesh",
        version=version,
        description=DESCRIPTION,
        path=DOCS,
        render_plugins=plugins,
        openapi_router=Router(DOCS, route_handlers=[], include_in_schema=False, middleware=[GZIP]),
        components=Components(
            security_schemes={
                SECURITY_SCHEME: SecurityScheme(
                    type="apiKey",
                    name="X-API-Key",
                    security_scheme_in="header",
                    description="One of FRAUDMESH_API_KEYS (only when the operator configured keys).",
                )
            }
        ),
        operation_id_creator=operation_id,
    )


def operation_id(route_handler: Any, http_method: Any, path_components: list[str | Any]) -> str:
    """`scoreFraud` from the handler `score_fraud`: camelCase of the handler's name (unique: a test checks)."""
    name: str = route_handler.handler_name
    if name in ("get", "post", "__call__", "_handler"):
        name = "_".join(str(p) for p in path_components if str(p)) or "root"
    head, *rest = [w for w in name.replace("/", "_").replace("-", "_").split("_") if w]
    return head.lower() + "".join(w.capitalize() for w in rest)


def static_docs() -> Router:
    """Swagger UI's JS, CSS and icons from the swagger-ui-bundle wheel (no CDN)."""
    return create_static_files_router(
        path=STATIC, directories=[swagger_ui_bundle.swagger_ui_path], include_in_schema=False, send_as_attachment=False
    )
