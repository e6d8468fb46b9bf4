"""The Litestar application: routes, errors, OpenAPI, metrics, auth, rate limits and CORS.

The gateway talks only to NATS (`NatsBridge`). Every error, ours or Litestar's, leaves as one JSON shape,
`ErrorReply` (`{"type": "error", "code", "message", "request_id", "errors": [{"path", "message"}]}`), with
a status that says what happened: 400 bad input, 401 no or wrong API key, 413 too many transactions,
429 rate limited, 503 a service is down, 504 the deadline passed.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, Router, get, post
from litestar.config.cors import CORSConfig
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from feature_svc.client import FeatureServiceError, get_remote
from gateway.bridge import BridgeError, NatsBridge
from gateway.ingest import IngestController
from gateway.openapi import body_operation
from gateway.schemas import (
    FeaturesResponse,
    FraudScoreResponse,
    HealthResponse,
    PredictRequest,
    PredictResponse,
    ServiceHealth,
)
from gateway.telemetry import otel_plugins
from gateway.validation import BodyError, decode_body
from shared import subjects
from shared.messages import ErrorCode, ErrorReply, FieldError, ScoreReply, ScoreRequest, Transaction
from shared.settings import Settings

log = logging.getLogger("fraudmesh.gateway")

STATUS: dict[ErrorCode, int] = {
    "bad_request": 400,
    "unauthorized": 401,
    "not_found": 404,
    "payload_too_large": 413,
    "rate_limited": 429,
    "internal": 500,
    "unavailable": 503,
    "deadline_exceeded": 504,
    "incomplete": 504,
}
_json = msgspec.json.Encoder()
_predict_decoder = msgspec.json.Decoder(PredictRequest)
_transaction_decoder = msgspec.json.Decoder(Transaction)


def request_id_of(request: Request[Any, Any, Any]) -> str:
    rid = request.scope.get("state", {}).get("request_id")
    if rid is None:
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        request.scope.setdefault("state", {})["request_id"] = rid
    return str(rid)


def error_response(reply: ErrorReply) -> Response[bytes]:
    return Response(
        content=_json.encode(reply),
        status_code=STATUS.get(reply.code, 500),
        media_type="application/json",
        headers={"X-Request-Id": reply.request_id},
    )


# ------------------------------------------------------------------------------------------- errors
def on_bridge_error(request: Request[Any, Any, Any], exc: BridgeError) -> Response[bytes]:
    return error_response(exc.reply)


def on_body_error(request: Request[Any, Any, Any], exc: BodyError) -> Response[bytes]:
    return error_response(
        ErrorReply(
            code="bad_request",
            message=f"{exc.message} {len(exc.errors)} problem(s); see `errors`.",
            request_id=request_id_of(request),
            errors=exc.errors,
        )
    )


_MISSING_PARAM = re.compile(r"Missing required (query|header|path|cookie) parameter '([^']+)'")


def on_http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    rid = request_id_of(request)
    code: ErrorCode = {
        400: "bad_request",
        401: "unauthorized",
        404: "not_found",
        413: "payload_too_large",
        429: "rate_limited",
        503: "unavailable",
    }.get(exc.status_code, "bad_request")
    errors: list[FieldError] = []
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        for item in exc.extra:
            if isinstance(item, dict):
                source = item.get("source", "request")
                where = f"{getattr(source, 'value', source)}.{item.get('key', '')}".rstrip(".")
                errors.append(FieldError(path=where, message=str(item.get("message", ""))))
    if not errors and isinstance(exc, ValidationException):
        m = _MISSING_PARAM.search(str(exc.detail))
        if m:
            errors.append(
                FieldError(path=f"{m.group(1)}.{m.group(2)}", message=f"Missing required parameter `{m.group(2)}`.")
            )
    if exc.status_code >= 500:
        code = "unavailable" if exc.status_code == 503 else "internal"
    status = exc.status_code if exc.status_code in (405, 406, 415) else None
    resp = error_response(ErrorReply(code=code, message=str(exc.detail), request_id=rid, errors=errors))
    if status:
        resp.status_code = status
    if exc.headers:
        resp.headers.update(exc.headers)
    return resp


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    rid = request_id_of(request)
    log.exception("unhandled error", extra={"fields": {"request_id": rid, "path": request.url.path}})
    return error_response(
        ErrorReply(
            code="internal",
            message=f"Internal error ({type(exc).__name__}); quote request id {rid}.",
            request_id=rid,
            retryable=True,
        )
    )


# --------------------------------------------------------------------------------------------- auth
async def api_key_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Installed only when FRAUDMESH_API_KEYS is set (an async guard: a sync one would hop to a thread)."""
    keys: frozenset[str] = connection.app.state.api_keys
    if keys and connection.headers.get("x-api-key") not in keys:
        raise NotAuthorizedException("Missing or unknown API key: send it in the X-API-Key header.")


# ------------------------------------------------------------------------------------------ scoring
def _deadline_ms(settings: Settings, timeout_ms: int | None) -> float:
    if timeout_ms is not None and not 1 <= timeout_ms <= settings.max_request_timeout_ms:
        raise BodyError(
            [
                FieldError(
                    path="query.timeout_ms",
                    message=f"Must be between 1 and {settings.max_request_timeout_ms} ms, got {timeout_ms}.",
                )
            ],
            "The query is invalid.",
        )
    return time.time() * 1000.0 + (timeout_ms or settings.request_timeout_ms)


async def _score(
    request: Request[Any, Any, Any],
    bridge: NatsBridge,
    txs: list[Transaction],
    rid: str,
    deadline: float,
    partial_size: int | None,
) -> ScoreReply:
    answer = await bridge.score(
        ScoreRequest(transactions=txs, request_id=rid, partial_size=partial_size),
        deadline,
        rid,
        client_traceparent=request.headers.get("traceparent"),
    )
    if isinstance(answer, ErrorReply):
        raise BridgeError(answer)
    if not answer.complete and all(r is None for r in answer.results):
        raise BridgeError(
            ErrorReply(
                code="deadline_exceeded",
                request_id=rid,
                retryable=True,
                message=f"No transaction was scored before the deadline: none of the {len(answer.partials)} partial(s) "
                f"came back. Are inference workers running? Retry with a larger timeout_ms.",
                missing_transaction_ids=answer.missing_transaction_ids[:1000],
            )
        )
    return answer


@post(
    "/predict",
    operation_class=body_operation(PredictRequest),
    tags=["scoring"],
    summary="Score a batch of up to 10,000 transactions",
    status_code=200,
)
async def predict(
    request: Request[Any, Any, Any], bridge: NatsBridge, timeout_ms: int | None = None
) -> Response[PredictResponse]:
    """One result per transaction, in order. Split into partials and scored by inference workers in parallel.

    `complete` is false when the deadline (`timeout_ms`, default 5000) passed before every partial was scored:
    the missing transactions have a null result and are listed in `missing_transaction_ids`.
    """
    settings: Settings = request.app.state.settings
    started = time.perf_counter()
    rid = request_id_of(request)
    deadline = _deadline_ms(settings, timeout_ms)
    body = decode_body(await request.body(), PredictRequest, _predict_decoder)
    n = len(body.transactions)
    if n > settings.max_batch_size:
        raise BridgeError(
            ErrorReply(
                code="payload_too_large",
                request_id=rid,
                message=f"{n} transactions in one request; the limit is {settings.max_batch_size}. Split the batch.",
            )
        )
    rid = body.request_id or rid
    reply = await _score(request, bridge, body.transactions, rid, deadline, body.partial_size)
    out = PredictResponse(
        request_id=reply.request_id,
        complete=reply.complete,
        results=reply.results,
        partials=reply.partials,
        missing_transaction_ids=reply.missing_transaction_ids,
        model_versions=sorted({p.model_version for p in reply.partials if p.model_version}),
        inference_workers=sorted({p.worker_id for p in reply.partials if p.worker_id}),
        features_computed=reply.features_computed,
        oldest_feature_age_s=reply.oldest_feature_age_s,
        latency_ms=round((time.perf_counter() - started) * 1000.0, 3),
    )
    return Response(out, headers={"X-Request-Id": reply.request_id})


@post(
    "/score/fraud",
    operation_class=body_operation(Transaction),
    tags=["scoring"],
    summary="Score one transaction",
    status_code=200,
)
async def score_fraud(
    request: Request[Any, Any, Any], bridge: NatsBridge, timeout_ms: int | None = None
) -> Response[FraudScoreResponse]:
    """Seed 001's real-time endpoint: the score, risk level, action, confidence and the reasons."""
    settings: Settings = request.app.state.settings
    started = time.perf_counter()
    rid = request_id_of(request)
    deadline = _deadline_ms(settings, timeout_ms)
    tx = decode_body(await request.body(), Transaction, _transaction_decoder)
    reply = await _score(request, bridge, [tx], rid, deadline, None)
    s = reply.results[0]
    assert s is not None  # _score raised otherwise
    explanation = (
        "; ".join(f.description for f in s.top_risk_factors)
        if s.top_risk_factors
        else "No risk factor stands out for this transaction."
    )
    out = FraudScoreResponse(
        request_id=reply.request_id,
        transaction_id=s.transaction_id,
        fraud_score=s.fraud_score,
        risk_level=s.risk_level,
        recommended_action=s.recommended_action,
        confidence=s.confidence,
        explanation=explanation,
        top_risk_factors=s.top_risk_factors,
        features_used=s.features_used,
        model_version=s.model_version,
        feature_freshness_sec=s.feature_freshness_sec,
        features_computed=s.features_computed,
        latency_ms=round((time.perf_counter() - started) * 1000.0, 3),
    )
    return Response(out, headers={"X-Request-Id": reply.request_id})


# ----------------------------------------------------------------------------------------- features
ENTITY_TYPES = ("card", "merchant", "device", "ip")
_ID = re.compile(r"^[A-Za-z0-9_.:@\-]{1,128}$")


@get("/features", tags=["features"], summary="The online features of one entity (read through Redis)")
async def features(
    request: Request[Any, Any, Any],
    bridge: NatsBridge,
    entity_type: str,
    entity_id: str,
    names: str | None = None,
) -> Response[FeaturesResponse]:
    """`entity_type` is card, merchant, device or ip; `names` is an optional comma-separated list of feature
    names. Missing or stale features are computed on the way (point in time: now)."""
    settings: Settings = request.app.state.settings
    rid = request_id_of(request)
    errors = []
    if entity_type not in ENTITY_TYPES:
        errors.append(
            FieldError(
                path="query.entity_type",
                message=f"Unknown entity type {entity_type!r}; use one of {', '.join(ENTITY_TYPES)}.",
            )
        )
    if not _ID.match(entity_id):
        errors.append(
            FieldError(
                path="query.entity_id",
                message=f"Malformed id {entity_id!r}: 1-128 characters from letters, digits and _ . : @ -.",
            )
        )
    wanted = [n.strip() for n in names.split(",")] if names else None
    if wanted is not None and not all(wanted):
        errors.append(FieldError(path="query.names", message="Empty feature name in the comma-separated list."))
    if errors:
        raise BodyError(errors, "The query is invalid.")
    try:
        reply = await get_remote(
            bridge.require_nc(rid),
            [(entity_type, entity_id)],
            names=wanted,
            max_age_s=settings.feature_max_age_s,
            timeout=settings.request_timeout_ms / 1000.0,
            headers={subjects.HDR_REQUEST_ID: rid},
        )
    except FeatureServiceError as exc:
        err = exc.reply
        err.request_id = rid
        for e in err.errors:
            if e.path.startswith("$.names"):
                e.path = "query.names" + e.path.removeprefix("$.names")
        raise BridgeError(err) from None
    except NoRespondersError:
        raise BridgeError(
            ErrorReply(
                code="unavailable",
                request_id=rid,
                retryable=True,
                message="No feature service is running (features.get has no responders).",
            )
        ) from None
    except (NatsTimeoutError, TimeoutError):
        raise BridgeError(
            ErrorReply(
                code="deadline_exceeded",
                request_id=rid,
                retryable=True,
                message="The feature service did not answer in time.",
            )
        ) from None
    ent = reply.entities[0]
    if not ent.known:
        raise BridgeError(
            ErrorReply(
                code="not_found",
                request_id=rid,
                message=f"No {entity_type} {entity_id!r} in the ledger: it has never transacted.",
            )
        )
    out = FeaturesResponse(
        entity_type=ent.type,
        entity_id=ent.id,
        values=ent.values,
        computed_at=ent.computed_at,
        version=ent.version,
        source=ent.source,
        age_s=round(ent.age_s, 3),
    )
    return Response(out, headers={"X-Request-Id": rid})


# ------------------------------------------------------------------------------------------ health
REQUIRED = ("aggregator", "inference")


async def _service_health(bridge: NatsBridge) -> dict[str, ServiceHealth]:
    replies = await bridge.health()
    out = {}
    for svc, reps in replies.items():
        status = "down" if not reps else ("ok" if all(r.status == "ok" for r in reps) else "degraded")
        out[svc] = ServiceHealth(status=status, instances=len(reps), details={r.instance_id: r.details for r in reps})
    return out


@get("/health", tags=["operations"], summary="Status of NATS and of every service behind it")
async def health(bridge: NatsBridge) -> Response[HealthResponse]:
    services = await _service_health(bridge)
    required_up = bridge.connected and all(services[s].instances > 0 for s in REQUIRED)
    status = (
        "ok"
        if required_up and all(s.status == "ok" for s in services.values())
        else ("degraded" if required_up else "down")
    )
    body = HealthResponse(status=status, nats="connected" if bridge.connected else "disconnected", services=services)
    return Response(body, status_code=200 if required_up else 503)


@get("/healthz", tags=["operations"], summary="Liveness: 200 while the process answers (no dependency checks)")
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@get("/ready", tags=["operations"], summary="Readiness: 200 when requests can be scored")
async def ready(bridge: NatsBridge) -> Response[dict[str, str]]:
    services = await _service_health(bridge)
    missing = [s for s in REQUIRED if services[s].instances == 0]
    if not bridge.connected:
        return Response({"status": "not ready", "reason": "not connected to NATS"}, status_code=503)
    if missing:
        return Response({"status": "not ready", "reason": f"no instance of {', '.join(missing)}"}, status_code=503)
    return Response({"status": "ready"}, status_code=200)


# ------------------------------------------------------------------------------------------ the app
def create_app(settings: Settings, bridge: NatsBridge | None = None) -> Litestar:
    bridge = bridge or NatsBridge(settings, name=settings.instance_id or "gateway")

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await bridge.start()
        try:
            yield
        finally:
            await bridge.stop()

    async def provide_bridge() -> NatsBridge:
        return bridge

    prometheus = PrometheusConfig(
        app_name="fraudmesh-gateway", prefix="fraudmesh_http", group_path=True, exclude=["/metrics"]
    )
    middleware: list[Any] = [prometheus.middleware]
    if settings.rate_limit_per_second:
        middleware.append(
            RateLimitConfig(
                rate_limit=("second", settings.rate_limit_per_second),
                exclude=["/health", "/healthz", "/ready", "/metrics", "/docs"],
            ).middleware
        )
    cors = CORSConfig(allow_origins=settings.cors_origins.split(",")) if settings.cors_origins else None
    return Litestar(
        route_handlers=[
            Router(
                path="/",
                route_handlers=[predict, score_fraud, features, IngestController],
                guards=[api_key_guard] if settings.api_keys else [],
            ),
            health,
            healthz,
            ready,
            PrometheusController,
        ],
        dependencies={"bridge": Provide(provide_bridge)},
        plugins=otel_plugins(settings),
        lifespan=[lifespan],
        middleware=middleware,
        cors_config=cors,
        state=State({"settings": settings, "api_keys": frozenset(k for k in settings.api_keys.split(",") if k)}),
        exception_handlers={
            BridgeError: on_bridge_error,
            BodyError: on_body_error,
            HTTPException: on_http_error,
            Exception: on_unexpected,
        },
        request_max_body_size=32 * 1024 * 1024,
        openapi_config=OpenAPIConfig(
            title="fraudmesh",
            version="0.1.0",
            description="Real-time fraud scoring. The same API is on NATS: see docs/nats-api.md.",
            path="/docs",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
        ),
    )
