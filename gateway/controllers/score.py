"""Scoring routes: `POST /predict` (a batch) and `POST /score/fraud` (one transaction).

Both receive a `Scoring` by dependency injection (`provide_scoring`, one provider on top of `gateway`, so that
Litestar resolves no level of it in a task group): the request's id, deadline, `?ingest=`, and the
one opening both share (`decode`: JSON content type, 413 before item validation, the strict edge rules) and the one
way to score (`score`: the bridge, then "nothing scored" becomes a 504).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Controller, Request, Response, post
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.params import Parameter

from gateway.bridge import BridgeError, NatsBridge
from gateway.compression import GZIP
from gateway.dependencies import Gateway, provide_deadline, provide_request_id
from gateway.idempotency import Idempotency
from gateway.openapi import body_operation
from gateway.openapi_spec import error_responses
from gateway.schemas import FraudScoreResponse, PredictRequest, PredictResponse, StrictTransaction
from gateway.validation import BodyError, check_batch_size, decode_body
from shared.messages import ErrorReply, FieldError, ScoreReply, ScoreRequest, Transaction, TransactionScore
from shared.settings import Settings

T = TypeVar("T", bound=msgspec.Struct)
_predict_decoder = msgspec.json.Decoder(PredictRequest)
_transaction_decoder = msgspec.json.Decoder(StrictTransaction)


IDEMPOTENT_ROUTES = {
    "/score/fraud": "$",
    "/predict": "$.transactions",
    "/score/batch": "$.requests",
    "/predict/batch": "",
}
"""The payment-API routes, where a transaction id names one decision (gateway/idempotency.py), with where their
transactions are in the body (for the paths of a 409; `/predict/batch` flattens its inner batches). Not idempotent:
what-if scoring (`ingest=false`, it changes no history) and the model-serving protocols (MLflow `/invocations` and
`/batch-predict`, Open Inference Protocol `infer`), which are stateless inference by their own conventions."""


IngestParam = Annotated[
    bool,
    Parameter(
        description="Record the transactions in the ledger after scoring (live features); `false` for "
        "what-if scoring that must not change any history."
    ),
]
"""`?ingest=` of every route that scores transactions (`provide_scoring`, `POST /predict/async`)."""


def is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


@dataclass(slots=True)
class Scoring:
    request: Request[Any, Any, Any]
    bridge: NatsBridge
    settings: Settings
    request_id: str
    deadline_ms: float
    ingest: bool
    started: float
    idempotency: Idempotency
    rescore: bool = False
    idempotency_status: str = "off"
    """How idempotency answered (`Idempotency-Status`): new, replayed, partly-replayed, rescored, unchecked, off."""

    @classmethod
    def of(
        cls,
        request: Request[Any, Any, Any],
        gateway: Gateway,
        timeout_ms: int | None,
        *,
        ingest: bool,
        rescore: bool = False,
    ) -> Scoring:
        """The one way to make a request's scoring context (its providers differ only in the query parameters
        they take: `provide_scoring`, and the personalization routes' without `?ingest=`)."""
        settings = gateway.settings
        return cls(
            request=request,
            bridge=gateway.bridge,
            settings=settings,
            request_id=provide_request_id(request),
            deadline_ms=provide_deadline(settings, timeout_ms),
            ingest=ingest,
            started=time.perf_counter(),
            idempotency=gateway.stores.idempotency,
            rescore=rescore,
        )

    async def decode(self, type_: type[T], decoder: msgspec.json.Decoder[T]) -> T:
        media_type = self.request.content_type[0]
        if not is_json(media_type):
            raise HTTPException(
                status_code=415,
                detail=f"The body must be JSON: send Content-Type: application/json (got {media_type or 'none'!r}).",
            )
        body = await self.request.body()
        if type_ is PredictRequest:
            n = check_batch_size(body, self.settings.max_batch_size)
            if n is not None:
                # refused by admission control before its transactions are validated (the costly part)
                self.bridge.refuse_if_overloaded(n, self.deadline_ms, self.request_id)
        return decode_body(body, type_, decoder, self.settings.card_ids_are_tokens)

    async def score(
        self, txs: list[Transaction], request_id: str | None = None, partial_size: int | None = None
    ) -> ScoreReply:
        """Score `txs`: decisions of transaction ids already scored come from the idempotency store (one Redis
        round trip for all of them), the others from the aggregator, merged in order; new decisions are stored."""
        rid = request_id or self.request_id
        if not (self.ingest and self.settings.idempotency_enabled and self.request.scope["path"] in IDEMPOTENT_ROUTES):
            return await self._score(txs, rid, partial_size)
        where = IDEMPOTENT_ROUTES[self.request.scope["path"]]
        plan = await self.idempotency.plan(txs, rescore=self.rescore, request_id=rid, where=where)
        self.idempotency_status = plan.status
        if not plan.replayed:
            reply = await self._score(txs, rid, partial_size)
        elif not plan.to_score:
            reply = ScoreReply(request_id=rid, complete=True, results=[plan.replayed[i] for i in range(len(txs))])
        else:
            for i in plan.to_score:  # named by their place in the whole request, as the aggregator would
                if txs[i].transaction_id is None:
                    txs[i].transaction_id = f"{rid}-{i}"
            fresh = await self._score([txs[i] for i in plan.to_score], rid, partial_size)
            results: list[TransactionScore | None] = [plan.replayed.get(i) for i in range(len(txs))]
            for i, s in zip(plan.to_score, fresh.results, strict=True):
                results[i] = s
            fresh.results = results
            reply = fresh
        self.idempotency.remember(txs, plan, reply.results, self.settings.idempotency_window_s, rid)
        return reply

    def headers(self, request_id: str) -> dict[str, str]:
        """The reply's headers: its request id, and how idempotency answered."""
        return {"X-Request-Id": request_id, "Idempotency-Status": self.idempotency_status}

    async def _score(self, txs: list[Transaction], rid: str, partial_size: int | None) -> ScoreReply:
        req = ScoreRequest(transactions=txs, request_id=rid, partial_size=partial_size, ingest=self.ingest)
        reply = await self.bridge.score(
            req, self.deadline_ms, rid, client_traceparent=self.request.headers.get("traceparent")
        )
        if (error := nothing_scored(reply, rid)) is not None:
            raise error
        return reply

    def latency_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000.0, 3)


async def provide_scoring(
    request: Request[Any, Any, Any],
    gateway: Gateway,
    timeout_ms: int | None = None,
    ingest: IngestParam = True,
    rescore: Annotated[
        bool,
        Parameter(
            description="On /score/fraud, /predict, /score/batch and /predict/batch: score anew even when a "
            "transaction id was scored within the idempotency window, and replace its stored decision (by default "
            "a known id answers its stored decision)."
        ),
    ] = False,
) -> Scoring:
    return Scoring.of(request, gateway, timeout_ms, ingest=ingest, rescore=rescore)


def _check_partials(n: int, partial_size: int | None, limit: int) -> None:
    if partial_size is not None and math.ceil(n / partial_size) > limit:
        raise BodyError(
            [
                FieldError(
                    path="$.partial_size",
                    message=f"partial_size={partial_size} cuts {n} transactions into {math.ceil(n / partial_size)} "
                    f"partials; the limit is {limit} per request: use partial_size >= {math.ceil(n / limit)}.",
                )
            ],
            "The request body is invalid: 1 problem; see `errors`.",
        )


def predict_response(reply: ScoreReply, latency_ms: float) -> PredictResponse:
    """`POST /predict`'s reply (also the result of an async job)."""
    return PredictResponse(
        request_id=reply.request_id,
        complete=reply.complete,
        results=reply.results,
        partials=reply.partials,
        missing_transaction_ids=reply.missing_transaction_ids,
        model_versions=sorted({p.model_version for p in reply.partials if p.model_version}),
        inference_workers=sorted({p.worker_id for p in reply.partials if p.worker_id}),
        features_computed=reply.features_computed,
        oldest_feature_age_s=reply.oldest_feature_age_s,
        latency_ms=latency_ms,
        degraded_reasons=reply.degraded_reasons,
    )


def nothing_scored(reply: ScoreReply, request_id: str) -> BridgeError | None:
    """The 504 for a reply in which no transaction was scored before the deadline (None when some were)."""
    if reply.complete or any(r is not None for r in reply.results):
        return None
    return BridgeError(
        ErrorReply(
            code="deadline_exceeded",
            request_id=request_id,
            retryable=True,
            message=f"No transaction was scored before the deadline: none of the {len(reply.partials)} "
            f"partial(s) came back. Are inference workers running? Retry with a larger timeout_ms.",
            missing_transaction_ids=reply.missing_transaction_ids[:1000],
        )
    )


def fraud_score_response(s: TransactionScore, request_id: str, latency_ms: float) -> FraudScoreResponse:
    """Seed 001's reply for one scored transaction (also each entry of `/score/batch`)."""
    explanation = (
        "; ".join(f.description for f in s.top_risk_factors)
        if s.top_risk_factors
        else "No risk factor stands out for this transaction."
    )
    return FraudScoreResponse(
        request_id=request_id,
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
        latency_ms=latency_ms,
        degraded=s.degraded,
        degraded_reasons=s.degraded_reasons,
    )


class ScoreController(Controller):
    tags = ["scoring"]
    dependencies = {"scoring": Provide(provide_scoring)}

    @post(
        "/predict",
        operation_class=body_operation(PredictRequest),
        summary="Score a batch of up to 10,000 transactions",
        status_code=200,
        middleware=[GZIP],
        responses=error_responses(409, 503, 504),
    )
    async def predict(self, scoring: Scoring) -> Response[PredictResponse]:
        """One result per transaction, in order. Split into partials and scored by inference workers in parallel.

        `complete` is false when the deadline (`timeout_ms`, default 5000) passed before every partial was scored:
        the missing transactions have a null result and are listed in `missing_transaction_ids`.
        """
        body = await scoring.decode(PredictRequest, _predict_decoder)
        _check_partials(len(body.transactions), body.partial_size, scoring.settings.max_partials_per_request)
        reply = await scoring.score(list(body.transactions), body.request_id, body.partial_size)
        out = predict_response(reply, scoring.latency_ms())
        return Response(out, headers=scoring.headers(reply.request_id))

    @post(
        "/score/fraud",
        operation_class=body_operation(StrictTransaction),
        summary="Score one transaction",
        status_code=200,
        responses=error_responses(409, 503, 504),
    )
    async def score_fraud(self, scoring: Scoring) -> Response[FraudScoreResponse]:
        """Seed 001's real-time endpoint: the score, risk level, action, confidence and the reasons."""
        tx = await scoring.decode(StrictTransaction, _transaction_decoder)
        reply = await scoring.score([tx])
        s = reply.results[0]
        assert s is not None  # Scoring.score raised otherwise
        out = fraud_score_response(s, reply.request_id, scoring.latency_ms())
        return Response(out, headers=scoring.headers(reply.request_id))
