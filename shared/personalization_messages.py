"""The NATS contract of the personalization model family (seed 001's `/score/personalization`), on subject
`personalization.score` (shared/subjects.py `PERSONALIZATION_SCORE`): a `PersonalizationScoreRequest` of one or
more (user, item) pairs, answered by a `PersonalizationScoreReply` (one score per pair, in order) or an
`ErrorReply`. Msgpack on the wire, like every fraudmesh message."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

from shared.messages import ErrorReply

UserId = Annotated[str, Meta(min_length=6, max_length=64, pattern=r"^user_[A-Za-z0-9_]+$")]
ItemId = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")]
Category = Annotated[str, Meta(min_length=1, max_length=50, pattern=r"^[A-Za-z0-9_ &-]+$")]
Price = Annotated[float, Meta(ge=0.0, le=1e9)]
SessionId = Annotated[str, Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:@-]+$")]
UserSegment = Literal["high_value_engaged", "engaged", "browser", "casual", "new_visitor"]


class PersonalizationItem(Struct, kw_only=True, forbid_unknown_fields=True):
    """One (user, item) pair to score. `item_category` and `item_price` override the catalogue's values."""

    user_id: UserId
    item_id: ItemId
    item_category: Category | None = None
    item_price: Price | None = None
    session_id: SessionId | None = None


class PersonalizationScoreRequest(Struct, tag="personalization_score", tag_field="type", kw_only=True):
    items: Annotated[list[PersonalizationItem], Meta(min_length=1, max_length=10_000)]
    request_id: str = ""


class PersonalizationScore(Struct, kw_only=True):
    relevance_score: float
    """Share of the catalogue the user's embedding ranks below this item, 0 to 1."""
    conversion_probability: float
    """P(bought in this session | viewed), 0 to 1."""
    engagement_score: float
    """How engaged the user (and the session, if known) is, 0 to 1."""
    user_segment: UserSegment
    behavioral_signals: list[str]
    """Codes of what drives the score, strongest first (at most 5)."""
    features_used: int
    """Feature values that were known for this pair (user, item, session rows and the request)."""
    model_version: str
    feature_freshness_sec: float | None = None
    """Age of the oldest feature row used, s; null when none was found (cold start)."""


class PersonalizationScoreReply(Struct, tag="personalization_reply", tag_field="type", kw_only=True):
    request_id: str
    scores: list[PersonalizationScore]
    model_version: str
    worker_id: str = ""


PersonalizationAnswer = PersonalizationScoreReply | ErrorReply


class PersonalizationModelControl(Struct, tag="personalization_model_control", tag_field="type", kw_only=True):
    """On `personalization.model.control` (every inference worker hears it): load `version` from the worker's
    personalization model directory and serve it; an empty version only reports. A request is scored by the
    version that was active when it arrived, whole."""

    version: str = ""


class PersonalizationModelState(Struct, tag="personalization_model_state", tag_field="type", kw_only=True):
    worker_id: str
    version: str
    """The version this worker serves now ("" when none is loaded)."""
    versions: list[str]
    """The versions in its model directory."""
    error: str = ""


PersonalizationControlAnswer = PersonalizationModelState | ErrorReply


class PersonalizationModelInfoRequest(Struct, tag="personalization_model_info", tag_field="type", kw_only=True):
    """On `personalization.model.info` (one inference worker answers): what does it serve?"""


class PersonalizationModelInfo(Struct, tag="personalization_model_info_reply", tag_field="type", kw_only=True):
    version: str
    """The served version ("" when none is loaded: then `status` is `not_served`)."""
    kind: str
    created_at: str
    metrics: dict[str, float]
    """The trainer's test-split metrics (`lightgcn.ndcg@10`, `popularity.ndcg@10`, ...)."""
    versions: list[str]
    worker_id: str = ""


PersonalizationInfoAnswer = PersonalizationModelInfo | ErrorReply
