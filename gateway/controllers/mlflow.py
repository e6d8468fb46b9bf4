"""Seed 003's MLflow-style routes: `POST /batch-predict` (1 to 1,000 records) and `POST /invocations` (MLflow's
scoring-server formats). `GET /ping` is in `PingController` (open, like the other probes)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.di import Provide

from gateway.bridge import BridgeError, NatsBridge
from gateway.compression import GZIP
from gateway.controllers.health import unready_reason
from gateway.controllers.models import READ_ONLY
from gateway.controllers.score import Scoring, provide_scoring
from gateway.envelope import Locate, at, check_count, decode_envelope, decode_transactions, json_body
from gateway.openapi_spec import body_operation_of, error_responses
from gateway.schemas import StrictTransaction
from gateway.seed_schemas import (
    SEED_TRANSACTION,
    BatchPredictRequest,
    BatchPredictResponse,
    InvocationsRequest,
    InvocationsResponse,
    PingResponse,
    Prediction,
)
from gateway.validation import BodyError, echo
from shared.messages import ErrorReply, FieldError, ScoreReply

MAX_RECORDS = 1000
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_batch_predict = msgspec.json.Decoder(BatchPredictRequest[msgspec.Raw])
_invocations = msgspec.json.Decoder(InvocationsRequest[msgspec.Raw])
_encode = msgspec.json.Encoder().encode


class PingController(Controller):
    dependencies = READ_ONLY
    tags = ["operations"]

    @get(
        "/ping",
        operation_id="ping",
        summary="MLflow-style liveness-and-readiness probe: 200 when requests can be scored",
        responses=error_responses(503),
    )
    async def ping(self, bridge: NatsBridge, request_id: str) -> PingResponse:
        """200 `{"status": "ok"}` when the gateway is connected to NATS and an aggregator and an inference worker
        answer; 503 otherwise (the error says what is missing)."""
        why = await unready_reason(bridge)
        if why:
            raise BridgeError(
                ErrorReply(code="unavailable", request_id=request_id, retryable=True, message=f"Not ready: {why}.")
            )
        return PingResponse(status="ok")


class MlflowController(Controller):
    middleware = [GZIP]
    tags = ["mlflow"]
    dependencies = {"scoring": Provide(provide_scoring)}

    @post(
        "/batch-predict",
        operation_id="batchPredict",
        operation_class=body_operation_of(
            BatchPredictRequest[StrictTransaction],
            {"records": [SEED_TRANSACTION, {"card_id": "card_2", "transaction_amount": 500}]},
        ),
        summary="Score 1 to 1,000 records (seed 003)",
        status_code=200,
        responses=error_responses(400, 401, 413, 415, 429, 503, 504),
    )
    async def batch_predict(self, scoring: Scoring) -> Response[BatchPredictResponse]:
        """One score per record, in order; more than 1,000 records are refused with 413 (split the batch)."""
        body = decode_envelope(await json_body(scoring.request), _batch_predict)
        check_count(len(body.records), MAX_RECORDS)
        txs = decode_transactions(body.records, at("$.records"), scoring.settings.card_ids_are_tokens)
        reply = await scoring.score(txs)
        out = BatchPredictResponse(
            request_id=reply.request_id,
            predictions=reply.results,
            count=sum(1 for s in reply.results if s is not None),
            complete=reply.complete,
            latency_ms=scoring.latency_ms(),
        )
        return Response(out, headers={"X-Request-Id": reply.request_id})

    @post(
        "/invocations",
        operation_id="invocations",
        operation_class=body_operation_of(
            InvocationsRequest[StrictTransaction],
            {"dataframe_split": {"columns": ["card_id", "transaction_amount"], "data": [["card_1", 100.0]]}},
        ),
        summary="MLflow scoring server: dataframe_split, dataframe_records, instances or inputs",
        status_code=200,
        responses=error_responses(400, 401, 413, 415, 429, 503, 504),
    )
    async def invocations(self, scoring: Scoring) -> Response[InvocationsResponse]:
        """Rows are transactions, columns their fields (`card_id` and `transaction_amount` required). The reply
        is `{"predictions": [...]}`, one record per row; all rows are scored or the request fails (504)."""
        body = decode_envelope(await json_body(scoring.request), _invocations)
        raws, locate = _rows(body)
        check_count(len(raws), scoring.settings.max_batch_size)
        txs = decode_transactions(raws, locate, scoring.settings.card_ids_are_tokens)
        reply = await scoring.score(txs)
        all_scored(reply, "rows")
        predictions = [
            Prediction(
                transaction_id=s.transaction_id,
                fraud_score=s.fraud_score,
                risk_level=s.risk_level,
                recommended_action=s.recommended_action,
                model_version=s.model_version,
            )
            for s in reply.results
            if s is not None
        ]
        return Response(InvocationsResponse(predictions=predictions), headers={"X-Request-Id": reply.request_id})


def all_scored(reply: ScoreReply, what: str) -> None:
    """For replies that cannot hold a gap (MLflow, OIP): a 504 naming what was not scored, unless all was."""
    if not reply.complete:
        raise BridgeError(
            ErrorReply(
                code="deadline_exceeded",
                request_id=reply.request_id,
                retryable=True,
                message=f"Some {what} were not scored before the deadline; retry with a larger timeout_ms.",
                missing_transaction_ids=reply.missing_transaction_ids[:1000],
            )
        )


def _invalid(path: str, message: str) -> BodyError:
    return BodyError([FieldError(path=path, message=message)], "The request body is invalid: 1 problem; see `errors`.")


def _rows(body: InvocationsRequest[msgspec.Raw]) -> tuple[list[bytes | msgspec.Raw], Locate]:
    """The transactions of an MLflow body as raw JSON objects, and where each one's fields are in the body."""
    given = [f for f in FORMATS if getattr(body, f) is not None]
    if len(given) != 1:
        raise _invalid(
            "$",
            f"Send exactly one of {', '.join(FORMATS)} (got {', '.join(given) or 'none'}).",
        )
    if body.params:
        raise _invalid("$.params", f"No inference params are supported (got {echo(sorted(body.params))}).")
    fmt = given[0]
    if body.dataframe_split is not None:
        split = body.dataframe_split
        for i, row in enumerate(split.data):
            if len(row) != len(split.columns):
                raise _invalid(f"$.dataframe_split.data[{i}]", f"{len(row)} values for {len(split.columns)} columns.")
        cols = {c: j for j, c in enumerate(split.columns)}
        if len(cols) != len(split.columns):
            raise _invalid("$.dataframe_split.columns", "A column name appears twice.")
        return [_encode(dict(zip(split.columns, row, strict=True))) for row in split.data], _split_locate(cols)
    value: list[msgspec.Raw] | dict[str, list[Any]] = getattr(body, fmt)
    if isinstance(value, list):
        if not value:
            raise _invalid(f"$.{fmt}", "No rows: send at least one.")
        return list(value), at(f"$.{fmt}")
    return _columns(value, fmt), lambda i, rest: _column_path(fmt, i, rest)


def _columns(columns: dict[str, list[Any]], fmt: str) -> list[bytes | msgspec.Raw]:
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1 or 0 in lengths:
        raise _invalid(f"$.{fmt}", f"Every column needs the same number (>= 1) of values (got {sorted(lengths)}).")
    n = lengths.pop()
    return [_encode({c: v[i] for c, v in columns.items()}) for i in range(n)]


def _column_path(fmt: str, i: int, rest: str) -> str:
    if rest.startswith("."):
        name, _, tail = rest[1:].partition(".")
        return f"$.{fmt}.{name}[{i}]{'.' + tail if tail else ''}"
    return f"$.{fmt}"


def _split_locate(cols: dict[str, int]) -> Locate:
    def locate(i: int, rest: str) -> str:
        name = rest[1:] if rest.startswith(".") else ""
        if name in cols:
            return f"$.dataframe_split.data[{i}][{cols[name]}]"
        return "$.dataframe_split.columns" if name else f"$.dataframe_split.data[{i}]"

    return locate
