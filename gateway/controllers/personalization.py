"""`POST /score/personalization` (seed 001): one (user, item) pair, scored by the personalization model family on
`personalization.score`; and the personalization side of `POST /score/batch` (`score_batch`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from litestar import Controller, Request, Response, post
from litestar.di import Provide

from gateway.controllers.score import Scoring
from gateway.dependencies import Gateway
from gateway.envelope import check_count, decode_envelope, json_body
from gateway.openapi_spec import body_operation_of, error_responses
from gateway.personalization_schemas import (
    SEED_PERSONALIZATION,
    PersonalizationBatchResponse,
    PersonalizationScoreResponse,
)
from gateway.validation import BodyError
from shared.messages import FieldError, field_error_of
from shared.personalization_messages import (
    PersonalizationItem,
    PersonalizationScore,
    PersonalizationScoreReply,
    PersonalizationScoreRequest,
)

_item = msgspec.json.Decoder(PersonalizationItem)


def response_of(
    item: PersonalizationItem, s: PersonalizationScore, request_id: str, latency_ms: float
) -> PersonalizationScoreResponse:
    return PersonalizationScoreResponse(
        request_id=request_id,
        user_id=item.user_id,
        item_id=item.item_id,
        relevance_score=s.relevance_score,
        conversion_probability=s.conversion_probability,
        engagement_score=s.engagement_score,
        user_segment=s.user_segment,
        behavioral_signals=s.behavioral_signals,
        features_used=s.features_used,
        feature_freshness_sec=s.feature_freshness_sec,
        latency_ms=latency_ms,
        model_version=s.model_version,
    )


async def _score(scoring: Scoring, items: list[PersonalizationItem], request_id: str) -> PersonalizationScoreReply:
    req = PersonalizationScoreRequest(items=items, request_id=request_id)
    return await scoring.bridge.personalize(req, scoring.deadline_ms, request_id)


def decode_items(raws: Sequence[msgspec.Raw], prefix: str) -> list[PersonalizationItem]:
    """Each pair of a batch strictly, every error at its place in the client's body (`prefix[i]...`)."""
    items, errors = [], []
    for i, raw in enumerate(raws):
        try:
            items.append(_item.decode(raw))
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            e = field_error_of(exc)
            errors.append(FieldError(path=f"{prefix}[{i}]{e.path[1:]}", message=e.message))
    if errors:
        raise BodyError(errors[:100], f"The request body is invalid: {len(errors)} problem(s); see `errors`.")
    return items


async def score_batch(scoring: Scoring, raws: Sequence[msgspec.Raw], batch_id: str) -> PersonalizationBatchResponse:
    """`/score/batch` with `model_type: "personalization"`: every pair in one NATS request."""
    check_count(len(raws), scoring.settings.max_batch_size)
    items = decode_items(raws, "$.requests")
    reply = await _score(scoring, items, batch_id)
    latency = scoring.latency_ms()
    return PersonalizationBatchResponse(
        batch_id=batch_id,
        model_type="personalization",
        total_requests=len(items),
        successful_responses=len(reply.scores),
        failed_responses=len(items) - len(reply.scores),
        responses=[response_of(it, s, batch_id, latency) for it, s in zip(items, reply.scores, strict=True)],
        latency_ms=latency,
    )


async def provide_personalization(
    request: Request[Any, Any, Any], gateway: Gateway, timeout_ms: int | None = None
) -> Scoring:
    """The scoring context without `?ingest=` (nothing of a personalization request enters the ledger)."""
    # no ledger entry, and (as for any what-if scoring) no idempotency record
    return Scoring.of(request, gateway, timeout_ms, ingest=False)


class PersonalizationController(Controller):
    tags = ["personalization"]
    dependencies = {"scoring": Provide(provide_personalization)}

    @post(
        "/score/personalization",
        operation_id="scorePersonalization",
        operation_class=body_operation_of(PersonalizationItem, SEED_PERSONALIZATION),
        summary="Score one (user, item) pair with the personalization model family (seed 001)",
        status_code=200,
        responses=error_responses(400, 401, 413, 415, 429, 503, 504),
    )
    async def score_personalization(self, scoring: Scoring) -> Response[PersonalizationScoreResponse]:
        """How relevant the item is to the user (LightGCN embeddings of the user-item graph), how likely a view
        converts, how engaged the user is, their segment and the signals behind it. `user_id` and `item_id` are
        required; `item_category` and `item_price` override the catalogue's; `session_id` adds the session's
        behaviour. An unknown user or item is scored from the cold-start embedding (signal `cold_start_user`,
        `unknown_item`)."""
        body = decode_envelope(await json_body(scoring.request), _item)
        reply = await _score(scoring, [body], scoring.request_id)
        out = response_of(body, reply.scores[0], scoring.request_id, scoring.latency_ms())
        return Response(out, headers={"X-Request-Id": scoring.request_id})
