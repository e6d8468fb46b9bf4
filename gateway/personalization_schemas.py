"""HTTP bodies of the personalization family (seed 001's `/score/personalization`, and `/score/batch` with
`model_type: "personalization"`). The request is the wire Struct `PersonalizationItem` (unknown fields refused)."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

from shared.personalization_messages import UserSegment

SEED_PERSONALIZATION: dict[str, object] = {
    "user_id": "user_00005678",
    "item_id": "item_electronics_001",
    "item_category": "electronics",
    "item_price": 299.99,
    "session_id": "session_abc123",
}


class PersonalizationScoreResponse(Struct, kw_only=True):
    """Seed 001's /score/personalization response."""

    request_id: Annotated[str, Meta(description="The request's id (your X-Request-Id or a generated one).")]
    user_id: Annotated[str, Meta(description="The user scored.")]
    item_id: Annotated[str, Meta(description="The item scored.")]
    relevance_score: Annotated[
        float,
        Meta(ge=0, le=1, description="Share of the catalogue the user's taste ranks below this item.", examples=[0.78]),
    ]
    conversion_probability: Annotated[
        float, Meta(ge=0, le=1, description="Probability that a view of it is bought in the session.", examples=[0.12])
    ]
    engagement_score: Annotated[
        float, Meta(ge=0, le=1, description="How engaged the user and session are, 0 to 1.", examples=[0.85])
    ]
    user_segment: Annotated[
        UserSegment, Meta(description="high_value_engaged, engaged, browser, casual or new_visitor (unknown user).")
    ]
    behavioral_signals: Annotated[
        list[str],
        Meta(
            description="What drives the score, strongest first (at most 5).",
            examples=[["category_affinity", "multi_page_session"]],
        ),
    ]
    features_used: Annotated[int, Meta(ge=0, description="Feature values known for this pair.", examples=[31])]
    feature_freshness_sec: Annotated[
        float | None, Meta(description="Age of the oldest feature row used, s; null when none was found.")
    ]
    latency_ms: Annotated[float, Meta(ge=0, description="Time spent in the gateway, ms.", examples=[3.2])]
    model_version: Annotated[str, Meta(description="The personalization model version that scored it.")]


class PersonalizationBatchResponse(Struct, kw_only=True):
    batch_id: Annotated[str, Meta(description="The client's batch id, or one the gateway generated.")]
    model_type: Annotated[str, Meta(description="`personalization`.")]
    total_requests: Annotated[int, Meta(ge=0, description="Pairs in the batch.")]
    successful_responses: Annotated[int, Meta(ge=0, description="Pairs scored (all of them: one worker scores all).")]
    failed_responses: Annotated[int, Meta(ge=0, description="Pairs not scored (0).")]
    responses: Annotated[
        list[PersonalizationScoreResponse],
        Meta(description="One `/score/personalization` reply per request, in order."),
    ]
    latency_ms: Annotated[float, Meta(ge=0, description="Time spent in the gateway for the whole batch, in ms.")]
