"""Open Inference Protocol v2 routes (KServe, Triton) for the models `fraud` and `personalization` (one per model
family, gateway/oip.py `MODELS`); errors in OIP's `{"error": "..."}`.

`OipHealthController` (server metadata, live, ready) is open like the other probes; `OipModelController` (model
metadata, readiness, inference) is behind the API keys. Tensors and bodies: gateway/oip.py.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import ExceptionHandlersMap

from gateway.bridge import BridgeError, NatsBridge
from gateway.compression import GZIP
from gateway.controllers.health import unready_reason
from gateway.controllers.info import VERSION
from gateway.controllers.mlflow import all_scored
from gateway.controllers.models import READ_ONLY
from gateway.controllers.score import Scoring, provide_scoring
from gateway.envelope import check_count, decode_envelope, json_body
from gateway.errors import STATUS
from gateway.oip import (
    BINARY_HEADER,
    FRAUD,
    INFER_EXAMPLE,
    MODELS,
    PERSONALIZATION,
    DocumentedInferRequest,
    InferInput,
    InferRequest,
    InferResponse,
    LiveResponse,
    ModelMetadataResponse,
    OipError,
    OipModel,
    ReadyResponse,
    ServerMetadata,
    error_text,
    model_metadata,
    outputs,
    personalization_outputs,
    split_binary,
    tensors,
    to_items,
    to_transactions,
)
from gateway.openapi_spec import body_operation_of, error_responses
from gateway.validation import BodyError, TooManyTransactions, echo
from shared.model_messages import ModelInfo
from shared.personalization_messages import PersonalizationScoreRequest

_infer_decoder = msgspec.json.Decoder(InferRequest[InferInput])
INFER_BODY = body_operation_of(DocumentedInferRequest, INFER_EXAMPLE)
_json = msgspec.json.Encoder()
OIP_TEXT = {
    400: "Bad input, in OIP's error shape.",
    401: "No API key, or an unknown one (X-API-Key), in OIP's error shape.",
    404: "Unknown model or version.",
    413: "Too many rows (transactions, pairs) in one request.",
    503: "The model cannot serve now (a service is down): retry shortly.",
    504: "The deadline passed before everything was scored.",
}


def oip_errors(*statuses: int) -> dict[int, ResponseSpec]:
    """OIP's error shape for `statuses`; a 429 (sent by the rate limiter, before any route) keeps the project's."""
    out = {s: ResponseSpec(data_container=OipError, description=OIP_TEXT[s]) for s in statuses if s != 429}
    return {**out, **(error_responses(429) if 429 in statuses else {})}


def _oip(status: int, message: str, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(
        _json.encode(OipError(error=message)), status_code=status, media_type="application/json", headers=headers
    )


def _on_bridge(_: Request[Any, Any, Any], exc: BridgeError) -> Response[bytes]:
    return _oip(STATUS.get(exc.reply.code, 500), exc.reply.message, {"X-Request-Id": exc.reply.request_id})


def _on_body(_: Request[Any, Any, Any], exc: BodyError) -> Response[bytes]:
    return _oip(400, error_text(exc))


def _on_too_many(_: Request[Any, Any, Any], exc: TooManyTransactions) -> Response[bytes]:
    return _oip(413, str(exc))


def _on_http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    return _oip(exc.status_code, str(exc.detail), dict(exc.headers or {}))


OIP_HANDLERS: ExceptionHandlersMap = {
    BridgeError: _on_bridge,
    BodyError: _on_body,
    TooManyTransactions: _on_too_many,
    HTTPException: _on_http,
}


async def _ready(bridge: NatsBridge) -> str:
    """Why inference cannot be served now ("" when it can)."""
    return await unready_reason(bridge)


class OipHealthController(Controller):
    path = "/v2"
    tags = ["open inference protocol"]
    exception_handlers = OIP_HANDLERS

    @get("/", operation_id="oipServerMetadata", summary="OIP server metadata")
    async def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(name="fraudmesh", version=VERSION, extensions=["binary_tensor_data"])

    @get("/health/live", operation_id="oipServerLive", summary="OIP liveness: 200 while the process answers")
    async def live(self) -> LiveResponse:
        return LiveResponse(live=True)

    @get(
        "/health/ready",
        operation_id="oipServerReady",
        summary="OIP readiness: 200 when inference can be served",
        responses=oip_errors(503),
    )
    async def ready(self, bridge: NatsBridge) -> ReadyResponse:
        """200 `{"ready": true}`; 503 with the reason when NATS, the aggregator or the inference workers are missing."""
        if why := await _ready(bridge):
            raise HTTPException(status_code=503, detail=f"Not ready: {why}.")
        return ReadyResponse(ready=True)


class OipModelController(Controller):
    middleware = [GZIP]
    path = "/v2/models"
    tags = ["open inference protocol"]
    exception_handlers = OIP_HANDLERS
    dependencies = {"scoring": Provide(provide_scoring), **READ_ONLY}

    async def _info(self, bridge: NatsBridge, request_id: str, name: str, version: str | None) -> list[str]:
        """The versions `name` serves (active first, then any A/B candidate); 404 for an unknown model, or for a
        `version` not in service."""
        model = _model(name)
        served = await _served(bridge, request_id, model)
        if version is not None and version not in served:
            raise HTTPException(
                status_code=404,
                detail=f"Model {model.name!r} has no version {echo(version)} in service; it serves "
                f"{', '.join(served) or 'none'}.",
            )
        return served

    @get(
        "/{name:str}",
        operation_id="oipModelMetadata",
        summary="OIP model metadata: the inputs (the fields of the model's request row) and outputs",
        responses=oip_errors(401, 404, 429, 503, 504),
    )
    async def metadata(self, bridge: NatsBridge, request_id: str, name: str) -> ModelMetadataResponse:
        served = await self._info(bridge, request_id, name, None)
        return model_metadata(MODELS[name], served)

    @get(
        "/{name:str}/versions/{version:str}",
        operation_id="oipModelVersionMetadata",
        summary="OIP model metadata of one version in service",
        responses=oip_errors(401, 404, 429, 503, 504),
    )
    async def version_metadata(
        self, bridge: NatsBridge, request_id: str, name: str, version: str
    ) -> ModelMetadataResponse:
        await self._info(bridge, request_id, name, version)
        return model_metadata(MODELS[name], [version])

    @get(
        "/{name:str}/ready",
        operation_id="oipModelReady",
        summary="OIP model readiness",
        responses=oip_errors(401, 404, 429, 503, 504),
    )
    async def model_ready(self, bridge: NatsBridge, request_id: str, name: str) -> ReadyResponse:
        if not await self._info(bridge, request_id, name, None):
            raise HTTPException(status_code=503, detail=f"Not ready: no inference worker serves a {name} model.")
        if why := await _ready(bridge):
            raise HTTPException(status_code=503, detail=f"Not ready: {why}.")
        return ReadyResponse(ready=True)

    @get(
        "/{name:str}/versions/{version:str}/ready",
        operation_id="oipModelVersionReady",
        summary="OIP readiness of one model version",
        responses=oip_errors(401, 404, 429, 503, 504),
    )
    async def version_ready(self, bridge: NatsBridge, request_id: str, name: str, version: str) -> ReadyResponse:
        await self._info(bridge, request_id, name, version)
        if why := await _ready(bridge):
            raise HTTPException(status_code=503, detail=f"Not ready: {why}.")
        return ReadyResponse(ready=True)

    @post(
        "/{name:str}/infer",
        operation_id="oipInfer",
        operation_class=INFER_BODY,
        summary="OIP inference: request rows (transactions, (user, item) pairs) as named tensors in, scores out",
        status_code=200,
        responses=oip_errors(400, 401, 404, 413, 429, 503, 504),
    )
    async def infer(self, scoring: Scoring, name: str) -> Response[InferResponse]:
        """One element per row in every input tensor (`fraud`: a transaction; `personalization`: a (user, item)
        pair); JSON `data` or binary tensor data."""
        return await self._infer(scoring, name, None)

    @post(
        "/{name:str}/versions/{version:str}/infer",
        operation_id="oipInferVersion",
        operation_class=INFER_BODY,
        summary="OIP inference on a version in service",
        status_code=200,
        responses=oip_errors(400, 401, 404, 413, 429, 503, 504),
    )
    async def infer_version(self, scoring: Scoring, name: str, version: str) -> Response[InferResponse]:
        """404 unless `version` is in service (the active version or the A/B candidate); `model_version` in the
        reply says which version scored."""
        return await self._infer(scoring, name, version)

    async def _infer(self, scoring: Scoring, name: str, version: str | None) -> Response[InferResponse]:
        model = _model(name)
        if version is not None:
            await self._info(scoring.bridge, scoring.request_id, name, version)
        request = scoring.request
        header, binary = split_binary(await json_body(request, require_type=False), request.headers.get(BINARY_HEADER))
        req = decode_envelope(header, _infer_decoder)
        columns = tensors(model, req, binary)
        check_count(len(next(iter(columns.values()))), scoring.settings.max_batch_size)
        if model is PERSONALIZATION:
            return await _infer_personalization(scoring, req, columns)
        txs = to_transactions(req, columns, scoring.settings.card_ids_are_tokens)
        reply = await scoring.score(txs)
        all_scored(reply, "transactions")
        scores = [s for s in reply.results if s is not None]
        out = InferResponse(
            model_name=FRAUD.name,
            model_version=",".join(sorted({s.model_version for s in scores})),
            id=req.id if req.id is not None else reply.request_id,
            outputs=outputs(req, scores),
        )
        return Response(out, headers={"X-Request-Id": reply.request_id})


async def _infer_personalization(
    scoring: Scoring, req: InferRequest[InferInput], columns: dict[str, list[Any]]
) -> Response[InferResponse]:
    """Every pair in one `personalization.score` request: one worker scores them all with one version."""
    items = to_items(req, columns)
    request_id = scoring.request_id
    reply = await scoring.bridge.personalize(
        PersonalizationScoreRequest(items=items, request_id=request_id), scoring.deadline_ms, request_id
    )
    out = InferResponse(
        model_name=PERSONALIZATION.name,
        model_version=reply.model_version,
        id=req.id if req.id is not None else request_id,
        outputs=personalization_outputs(req, reply.scores),
    )
    return Response(out, headers={"X-Request-Id": request_id})


def _model(name: str) -> OipModel:
    model = MODELS.get(name)
    if model is None:
        raise HTTPException(
            status_code=404,
            detail=f"Unknown model {echo(name)}: this server serves {', '.join(repr(m) for m in MODELS)}.",
        )
    return model


async def _served(bridge: NatsBridge, request_id: str, model: OipModel) -> list[str]:
    if model is PERSONALIZATION:
        pers = await bridge.personalization_info(request_id)
        return [pers.version] if pers.version else []
    info: ModelInfo = await bridge.model_info(request_id)
    return [info.active.version] + ([info.candidate.version] if info.candidate is not None else [])
