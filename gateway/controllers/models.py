"""Model information, from the inference fleet over `fraud.model.info` (and `personalization.model.info` for the
second family): seed 001's `GET /models`, seed 003's
`GET /model/metadata` and `GET /model/features`."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get
from litestar.di import Provide

from gateway.bridge import BridgeError, NatsBridge
from gateway.compression import GZIP
from gateway.openapi_spec import error_responses
from gateway.request_context import request_id_of
from gateway.seed_schemas import (
    ModelFamily,
    ModelFeaturesResponse,
    ModelMetadataView,
    ModelsResponse,
    ModelView,
    TransactionField,
)
from shared.messages import Transaction
from shared.model_messages import ModelSummary

MODEL_ERRORS = error_responses(401, 429, 503, 504)
_FIELD_DOCS = {
    "card_id": "Card token (never a card number).",
    "transaction_amount": "Amount in major currency units, finite and >= 0.",
    "merchant_id": "Merchant id.",
    "mcc_code": "ISO 18245 merchant category code, 4 digits.",
    "country_code": "ISO 3166-1 alpha-2 country of the transaction.",
    "transaction_id": "The client's transaction id (generated when absent).",
    "timestamp": "When it happened, ISO 8601 (default: now).",
    "device_id": "Device id.",
    "ip_address": "IPv4 or IPv6 address.",
    "currency": "ISO 4217 currency code.",
    "channel": "pos, ecom, atm, moto, p2p or other.",
}


def lenient_request_id(request: Request[Any, Any, Any]) -> str:
    """The request id of a read-only route: an unusable X-Request-Id is replaced, not refused (the scoring routes
    refuse it because it becomes part of transaction ids; nothing is built from it here)."""
    return request_id_of(request)


READ_ONLY = {"request_id": Provide(lenient_request_id, sync_to_thread=False)}


def _view(s: ModelSummary) -> ModelView:
    return ModelView(
        version=s.version, kind=s.kind, created_at=s.created_at, metrics=s.metrics, thresholds=s.thresholds
    )


async def _personalization(bridge: NatsBridge, request_id: str) -> ModelFamily:
    """The personalization family as the fleet reports it; `not_served` when no worker has a model of it (or none
    answers: the fraud family's answer is not held back by it)."""
    try:
        info = await bridge.personalization_info(request_id)
    except BridgeError:
        info = None
    if info is None or not info.version:
        return ModelFamily(
            name="personalization",
            status="not_served",
            active=None,
            candidate=None,
            candidate_share=0.0,
            versions=info.versions if info is not None else [],
        )
    active = ModelView(
        version=info.version, kind=info.kind, created_at=info.created_at, metrics=dict(info.metrics), thresholds={}
    )
    return ModelFamily(
        name="personalization",
        status="serving",
        active=active,
        candidate=None,
        candidate_share=0.0,
        versions=info.versions,
    )


def input_fields() -> list[TransactionField]:
    out = []
    for f in msgspec.structs.fields(Transaction):
        kind = "number" if f.name == "transaction_amount" else "string"
        out.append(TransactionField(name=f.name, type=kind, required=f.required, description=_FIELD_DOCS[f.name]))
    return out


class ModelsController(Controller):
    dependencies = READ_ONLY
    middleware = [GZIP]
    tags = ["models"]

    @get(
        "/models",
        operation_id="listModels",
        summary="Model families, their versions, the active and candidate ones and their metrics",
        responses=MODEL_ERRORS,
    )
    async def models(self, bridge: NatsBridge, request_id: str) -> ModelsResponse:
        info = await bridge.model_info(request_id)
        fraud = ModelFamily(
            name="fraud",
            status="serving",
            active=_view(info.active),
            candidate=_view(info.candidate) if info.candidate is not None else None,
            candidate_share=info.candidate_share,
            versions=info.versions,
        )
        return ModelsResponse(families=[fraud, await _personalization(bridge, request_id)])

    @get(
        "/model/metadata",
        operation_id="modelMetadata",
        summary="The active model: version, metrics, thresholds, feature count, training data range",
        responses=MODEL_ERRORS,
    )
    async def metadata(self, bridge: NatsBridge, request_id: str) -> ModelMetadataView:
        a = (await bridge.model_info(request_id)).active
        split = a.training.get("split")
        return ModelMetadataView(
            name="fraud",
            version=a.version,
            kind=a.kind,
            created_at=a.created_at,
            metrics=a.metrics,
            thresholds=a.thresholds,
            feature_count=len(a.feature_names),
            training=a.training,
            training_data_range={str(k): str(v) for k, v in split.items()} if isinstance(split, dict) else None,
        )

    @get(
        "/model/features",
        operation_id="modelFeatures",
        summary="The input fields a transaction may have, and the active model's feature names",
        responses=MODEL_ERRORS,
    )
    async def features(self, bridge: NatsBridge, request_id: str) -> ModelFeaturesResponse:
        a = (await bridge.model_info(request_id)).active
        return ModelFeaturesResponse(
            model_version=a.version,
            input_fields=input_fields(),
            feature_names=a.feature_names,
            feature_count=len(a.feature_names),
        )
