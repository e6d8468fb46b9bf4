"""Every message on the wire, as msgspec Structs (msgpack on NATS, JSON over HTTP).

Schema rules, because other systems depend on these shapes (docs/nats-api.md):
1. A new field always gets a default, so old publishers keep working.
2. A field's type never changes, and a field is never renamed or reused. Deprecate and add a new one.
3. Unknown fields are ignored on decode, so old consumers keep working when new fields appear. This is the NATS
   rule (services are upgraded one at a time); the HTTP edge refuses unknown fields (gateway/schemas.py).
4. Union members carry a `type` tag; a tag value is never reused for another shape.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta, Struct

MAX_AMOUNT = 1e12
T = TypeVar("T")

Amount = Annotated[
    float,
    Meta(ge=0, le=MAX_AMOUNT, description="Transaction amount in major currency units; finite and >= 0."),
]
Identifier = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@\-]+$")]
OPAQUE_ID_MAX = 128
TransactionId = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=OPAQUE_ID_MAX,
        # no control characters (C0, DEL, C1), line/paragraph separators, bidi controls or BOM; the HTTP edge also
        # applies Python's full `str.isprintable()` rule
        pattern="^[^\\x00-\\x1f\\x7f-\\x9f\\u2028-\\u202e\\u2066-\\u2069\\ufeff]+$",
        description="The client's own transaction id: an opaque string, 1-128 printable Unicode characters.",
    ),
]
"""Transaction ids are opaque client strings. Nothing may use one raw in a NATS subject, a header or a Redis key:
encode it first (`encode_key`)."""
RequestIdField = Annotated[
    str,
    Meta(
        max_length=100,
        pattern=r"^[A-Za-z0-9_.:\-]*$",
        description="Empty, or up to 100 of A-Z a-z 0-9 _ . : - (it becomes part of generated transaction ids, "
        "`{request_id}-{index}`, and of JetStream Msg-Ids).",
    ),
]
ShortCode = Annotated[str, Meta(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_\-]+$")]

ModelFamily = Literal["fraud", "personalization"]
"""The model families one registry and one inference fleet serve (DESIGN.md "Model families")."""
RiskLevel = Literal["low", "medium", "high", "critical"]
Action = Literal["approve", "review", "decline"]
Channel = Literal["pos", "ecom", "atm", "moto", "p2p", "other"]


class Transaction(Struct, kw_only=True, omit_defaults=True):
    """One payment transaction. Seed 001's request fields are accepted unchanged."""

    card_id: Identifier
    transaction_amount: Amount
    merchant_id: Identifier | None = None
    mcc_code: Annotated[str, Meta(pattern=r"^[0-9]{4}$", description="ISO 18245 merchant category code")] | None = None
    country_code: Annotated[str, Meta(pattern=r"^[A-Za-z]{2}$", description="ISO 3166-1 alpha-2")] | None = None
    transaction_id: TransactionId | None = None
    timestamp: datetime | None = None
    device_id: Identifier | None = None
    ip_address: Annotated[str, Meta(max_length=45, pattern=r"^[0-9A-Fa-f:.]+$")] | None = None
    currency: Annotated[str, Meta(pattern=r"^[A-Za-z]{3}$", description="ISO 4217")] | None = None
    channel: Channel | None = None


FactorSource = Literal["transaction", "features", "graph", "model"]


class RiskFactor(Struct, kw_only=True):
    """One reason behind a score, strongest first."""

    code: str
    description: str
    weight: float = 0.0
    source: FactorSource = "transaction"


class TransactionScore(Struct, kw_only=True):
    transaction_id: str
    fraud_score: float
    risk_level: RiskLevel
    recommended_action: Action
    confidence: float
    model_version: str
    top_risk_factors: list[RiskFactor] = []
    features_used: int = 0
    feature_freshness_sec: float | None = None
    """Age of the oldest entity feature this score used (0 when computed just now); null without entity features."""
    features_computed: int = 0
    """Feature values of this transaction's entities that were computed on the fly (not read from Redis)."""
    degraded: bool = False
    """True when this score was built without some of its inputs (feature store or feature service unreachable,
    `features.compute` timed out): the model saw missing values. `degraded_reasons` says which inputs."""
    degraded_reasons: list[str] = []
    """Why the score is degraded, e.g. `feature_store_unavailable`, `features_unavailable`; empty when not."""


class FieldError(Struct, kw_only=True):
    """One problem with the input, at a JSON path such as `$.transactions[3].transaction_amount`."""

    path: str
    message: str


def field_error_of(exc: Exception) -> FieldError:
    """The FieldError of a msgspec error ("<message> - at `$.path`"); path `$` when it names none."""
    text = str(exc)
    if " - at `" in text:
        message, _, path = text.rpartition(" - at `")
        return FieldError(path=path.rstrip("`"), message=message)
    return FieldError(path="$", message=text)


ErrorCode = Literal[
    "bad_request",
    "payload_too_large",
    "deadline_exceeded",
    "incomplete",
    "unavailable",
    "unauthorized",
    "rate_limited",
    "not_found",
    "conflict",
    "internal",
]


class ErrorReply(Struct, tag="error", tag_field="type", kw_only=True):
    """The one error shape, on NATS and (as JSON) over HTTP."""

    code: ErrorCode
    message: str
    request_id: str = ""
    errors: list[FieldError] = []
    retryable: bool = False
    missing_transaction_ids: list[str] = []
    error_count: int = 0
    """How many problems were found in all, when `errors` lists only the first ones (0: `errors` is complete)."""
    retry_after_s: float = 0.0
    """When `retryable`: how long to wait before retrying (the HTTP gateway sends it as `Retry-After`); 0: no hint."""


# ---------------------------------------------------------------------------------------------- score


class ScoreRequest(Struct, tag="score", tag_field="type", kw_only=True, omit_defaults=True):
    """Body of `fraud.score`. `type` may be omitted when publishing straight to that subject."""

    transactions: Annotated[list[Transaction], Meta(min_length=1)]
    request_id: RequestIdField = ""
    partial_size: Annotated[int, Meta(ge=1, le=10_000)] | None = None
    ingest: bool = True
    """Record these transactions in the ledger after scoring (the live features). False for what-if scoring:
    a replay, a test or a simulation that must not change any entity's history."""


class PartialInfo(Struct, kw_only=True):
    """How one partial was scored: by which worker, after how many deliveries, and how long it took."""

    index: int
    size: int
    worker_id: str = ""
    model_version: str = ""
    deliveries: int = 1
    queue_ms: float = 0.0
    compute_ms: float = 0.0
    scored: bool = True
    entities: int = 0
    entities_from_cache: int = 0
    entities_computed: int = 0


class ScoreReply(Struct, tag="score_reply", tag_field="type", kw_only=True):
    """Reply on `fraud.score`: one entry per input transaction, in order; null where it was not scored."""

    request_id: str
    complete: bool
    results: list[TransactionScore | None]
    partials: list[PartialInfo] = []
    missing_transaction_ids: list[str] = []
    latency_ms: float = 0.0
    timings_ms: dict[str, float] = {}
    features_computed: int = 0
    """Feature values computed on the fly for this request (entities missing or stale in Redis)."""
    oldest_feature_age_s: float | None = None
    """Age of the oldest entity feature any score of this request used; null without entity features."""
    degraded_reasons: list[str] = []
    """The reasons of every degraded score of this request (see TransactionScore.degraded); empty when none is."""


ScoreAnswer = ScoreReply | ErrorReply

# ------------------------------------------------------------------------------------------- partials


class Partial(Struct, tag="partial", tag_field="type", kw_only=True, omit_defaults=True):
    """A slice of a batch on the JetStream work queue. Its result goes to the HDR_REPLY_TO header subject."""

    request_id: str
    index: int
    count: int
    transactions: list[Transaction]
    enqueued_at: float = 0.0
    family: ModelFamily = "fraud"
    """The model family that scores it: only `fraud` partials exist (a personalization request is scored whole by
    one worker on `personalization.score`); a worker dead-letters a partial of a family it cannot score."""


class PartialResult(Struct, tag="partial_result", tag_field="type", kw_only=True):
    request_id: str
    index: int
    scores: list[TransactionScore]
    worker_id: str
    model_version: str
    family: ModelFamily = "fraud"
    """The family of the model that scored it (the partial's)."""
    deliveries: int = 1
    queue_ms: float = 0.0
    compute_ms: float = 0.0
    timings_ms: dict[str, float] = {}
    entities: int = 0
    entities_from_cache: int = 0
    entities_computed: int = 0


class PartialFailed(Struct, tag="partial_failed", tag_field="type", kw_only=True):
    """A partial that will not be scored (dead-lettered): the aggregator stops waiting for it."""

    request_id: str
    index: int
    reason: str
    worker_id: str = ""


PartialOutcome = PartialResult | PartialFailed

# ------------------------------------------------------------------------------------------- health


class HealthPing(Struct, tag="health", tag_field="type", kw_only=True):
    pass


class HealthReply(Struct, kw_only=True):
    service: str
    instance_id: str
    status: Literal["ok", "degraded"]
    details: dict[str, str] = {}


# --------------------------------------------------------------------------------------------- codec


class Codec:
    """Reused msgpack encoder and per-type decoders. One per process; cheap to share across tasks."""

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._decoders: dict[object, msgspec.msgpack.Decoder[Any]] = {}

    def encode(self, obj: object) -> bytes:
        return self._encoder.encode(obj)

    def decoder(self, type_: object) -> msgspec.msgpack.Decoder[Any]:
        dec = self._decoders.get(type_)
        if dec is None:
            dec = self._decoders[type_] = msgspec.msgpack.Decoder(type_)
        return dec

    def decode(self, data: bytes, type_: type[T]) -> T:
        decoded: T = self.decoder(type_).decode(data)
        return decoded


def encode_key(opaque: str) -> str:
    """An opaque client string (a transaction id) as a key safe in NATS subjects, headers, Msg-Ids and Redis keys:
    unpadded URL-safe base64 of its UTF-8 bytes (letters, digits, `-` and `_` only)."""
    return base64.urlsafe_b64encode(opaque.encode()).rstrip(b"=").decode()
