"""Batch routes of the seeds, each one NATS request (`fraud.score`) for the whole body:
seed 001's `POST /score/batch` and seed 004's `POST /predict/batch`."""

from __future__ import annotations

import datetime as dt

import msgspec
from litestar import Controller, Response, post
from litestar.di import Provide

from gateway.bridge import BridgeError
from gateway.compression import GZIP
from gateway.controllers import personalization
from gateway.controllers.score import Scoring, fraud_score_response, provide_scoring
from gateway.envelope import at, check_count, decode_envelope, decode_transactions, json_body
from gateway.openapi_spec import body_operation_of, error_responses
from gateway.personalization_schemas import PersonalizationBatchResponse
from gateway.schemas import StrictTransaction
from gateway.seed_schemas import (
    SEED_TRANSACTION,
    BatchItemError,
    BatchResult,
    PredictBatchRequest,
    PredictBatchResponse,
    ScoreBatchRequest,
    ScoreBatchResponse,
)
from shared.messages import ErrorReply, FieldError, TransactionScore

_score_batch = msgspec.json.Decoder(ScoreBatchRequest[msgspec.Raw])
_predict_batch = msgspec.json.Decoder(PredictBatchRequest[msgspec.Raw])
BATCH_ERRORS = error_responses(400, 401, 409, 413, 415, 429, 503, 504)
NOT_SCORED = "Not scored before the deadline; retry it (alone or with a larger timeout_ms)."


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class BatchController(Controller):
    middleware = [GZIP]
    tags = ["scoring"]
    dependencies = {"scoring": Provide(provide_scoring)}

    @post(
        "/score/batch",
        operation_id="scoreBatch",
        operation_class=body_operation_of(
            ScoreBatchRequest[StrictTransaction],
            {
                "model_type": "fraud_detection",
                "requests": [
                    {"card_id": "card_1", "transaction_amount": 100},
                    {"card_id": "card_2", "transaction_amount": 500},
                ],
                "batch_id": "batch_20240902_001",
            },
        ),
        summary="Score a batch (seed 001): one /score/fraud reply per request",
        status_code=200,
        responses=BATCH_ERRORS,
    )
    async def score_batch(self, scoring: Scoring) -> Response[ScoreBatchResponse | PersonalizationBatchResponse]:
        """Scores `requests` together (one NATS request, split into partials by the aggregator) and answers one
        `/score/fraud`-shaped reply per request, in order. A transaction whose partial missed the deadline gets an
        error entry and counts in `failed_responses`. With `model_type: "personalization"`, `requests` are
        `/score/personalization` bodies and each entry of `responses` is its reply (one inference worker scores
        the whole batch with one model version)."""
        body = decode_envelope(await json_body(scoring.request), _score_batch)
        if body.model_type == "personalization":
            batch = await personalization.score_batch(scoring, body.requests, body.batch_id or scoring.request_id)
            return Response(batch, headers={"X-Request-Id": scoring.request_id})
        check_count(len(body.requests), scoring.settings.max_batch_size)
        txs = decode_transactions(body.requests, at("$.requests"), scoring.settings.card_ids_are_tokens)
        batch_id = body.batch_id or scoring.request_id
        reply = await scoring.score(txs, batch_id)
        latency = scoring.latency_ms()
        responses = [fraud_score_response(s, batch_id, latency) if s is not None else None for s in reply.results]
        failures = [
            BatchItemError(index=i, transaction_id=tx.transaction_id or f"{batch_id}-{i}", error=NOT_SCORED)
            for i, (s, tx) in enumerate(zip(reply.results, txs, strict=True))
            if s is None
        ]
        failed = len(failures)
        out = ScoreBatchResponse(
            batch_id=batch_id,
            model_type=body.model_type,
            total_requests=len(txs),
            successful_responses=len(txs) - failed,
            failed_responses=failed,
            responses=responses,
            failures=failures,
            latency_ms=latency,
        )
        return Response(out, headers=scoring.headers(scoring.request_id))

    @post(
        "/predict/batch",
        operation_id="predictBatch",
        operation_class=body_operation_of(
            PredictBatchRequest[StrictTransaction],
            {
                "batch": [[SEED_TRANSACTION], [{"card_id": "card_2", "transaction_amount": 500}]],
                "request_ids": ["id1", "id2"],
            },
        ),
        summary="Score several batches at once (seed 004): one result per inner batch",
        status_code=200,
        responses=BATCH_ERRORS,
    )
    async def predict_batch(self, scoring: Scoring) -> Response[PredictBatchResponse]:
        """Every inner batch is scored in one NATS request for the whole body; `results[i]` answers `batch[i]`,
        with `success` false (and the reason in `error`) when some of its transactions missed the deadline.
        Transactions without a `transaction_id` get `{request_id}-{j}` of their inner batch."""
        body = decode_envelope(await json_body(scoring.request), _predict_batch)
        rid = scoring.request_id
        ids = body.request_ids or [f"{rid}-{i}" for i in range(len(body.batch))]
        if len(ids) != len(body.batch):
            raise BridgeError(
                ErrorReply(
                    code="bad_request",
                    request_id=rid,
                    message="The request body is invalid: 1 problem; see `errors`.",
                    errors=[
                        FieldError(
                            path="$.request_ids",
                            message=f"{len(ids)} request ids for {len(body.batch)} inner batches: send one per "
                            "inner batch, or none.",
                        )
                    ],
                )
            )
        flat = [raw for inner in body.batch for raw in inner]
        check_count(len(flat), scoring.settings.max_batch_size)
        where = [(i, j) for i, inner in enumerate(body.batch) for j in range(len(inner))]
        txs = decode_transactions(
            flat, lambda k, rest: f"$.batch[{where[k][0]}][{where[k][1]}]{rest}", scoring.settings.card_ids_are_tokens
        )
        for tx, (i, j) in zip(txs, where, strict=True):
            if tx.transaction_id is None:
                tx.transaction_id = f"{ids[i]}-{j}"
        reply = await scoring.score(txs)
        total_ms = scoring.latency_ms()
        now = utc_now()
        results = [
            _inner_result(ids[i], reply.results[start : start + len(inner)], now)
            for i, (start, inner) in enumerate(_starts(body.batch))
        ]
        ok = sum(1 for r in results if r.success)
        out = PredictBatchResponse(
            batch_id=rid,
            results=results,
            metadata={
                "total_time_ms": total_ms,
                "batch_size": len(results),
                "success_rate": round(ok / len(results), 6),
                "avg_time_per_item_ms": round(total_ms / len(txs), 3),
            },
            timestamp=now,
        )
        return Response(out, headers=scoring.headers(rid))


def _starts(batch: list[list[msgspec.Raw]]) -> list[tuple[int, list[msgspec.Raw]]]:
    out, start = [], 0
    for inner in batch:
        out.append((start, inner))
        start += len(inner)
    return out


def _inner_result(request_id: str, scores: list[TransactionScore | None], now: str) -> BatchResult:
    missing = sum(1 for s in scores if s is None)
    return BatchResult(
        request_id=request_id,
        success=missing == 0,
        predictions=scores,
        error=f"{missing} of {len(scores)} transactions: {NOT_SCORED}" if missing else None,
        metadata={"transactions": len(scores)},
        timestamp=now,
    )
