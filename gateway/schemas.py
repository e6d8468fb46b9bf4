"""HTTP request and response bodies. Transactions and scores are the wire Structs of shared.messages.

The request bodies are the HTTP edge's *strict* variants: an unknown field is refused (a misspelled optional field
must not silently change a score), whereas on NATS unknown fields are ignored (schema rule 3 in shared.messages).
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

from shared.messages import Action, PartialInfo, RiskFactor, RiskLevel, Transaction, TransactionScore

REQUEST_ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,64}$"
"""A request id becomes part of generated transaction ids, Msg-Ids and log lines: a short, plain token."""
RequestId = Annotated[
    str, Meta(pattern=REQUEST_ID_PATTERN, description="1-64 characters from letters, digits and _ . : -")
]


class StrictTransaction(Transaction, forbid_unknown_fields=True):
    """A transaction as the HTTP edge accepts it: the wire Struct, refusing unknown fields."""


class PredictRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    transactions: Annotated[list[StrictTransaction], Meta(min_length=1, description="1 to 10,000 transactions.")]
    request_id: RequestId | None = None
    partial_size: Annotated[int, Meta(ge=1, le=10_000)] | None = None


class PredictResponse(Struct, kw_only=True):
    request_id: str
    complete: bool
    """False when the deadline passed before every partial was scored; see missing_transaction_ids."""
    results: list[TransactionScore | None]
    """One entry per input transaction, in order; null for a transaction that was not scored in time."""
    partials: list[PartialInfo]
    missing_transaction_ids: list[str]
    model_versions: list[str]
    inference_workers: list[str]
    latency_ms: float
    features_computed: int = 0
    """Feature values computed on the fly, summed over the transactions."""
    oldest_feature_age_s: float | None = None
    degraded_reasons: list[str] = []
    """Why some scores are degraded (each result says whether it is); empty when none is."""


class FeaturesResponse(Struct, kw_only=True):
    entity_type: str
    entity_id: str
    values: dict[str, float]
    computed_at: float
    """Unix epoch seconds: the point in time the values describe."""
    version: str
    """Feature-set version."""
    source: Literal["cache", "computed"]
    age_s: float


class FraudScoreResponse(Struct, kw_only=True):
    """Seed 001's /score/fraud response, with structured reasons."""

    request_id: str
    transaction_id: str
    fraud_score: float
    risk_level: RiskLevel
    recommended_action: Action
    confidence: float
    explanation: str
    top_risk_factors: list[RiskFactor]
    features_used: int
    model_version: str
    feature_freshness_sec: float | None
    """Age of the oldest entity feature used (0 = computed just now); null when the model uses none."""
    features_computed: int
    """Feature values computed on the fly for this score (their entities were missing or stale in Redis)."""
    latency_ms: float
    degraded: bool = False
    """True when the score was built without some of its inputs (see `degraded_reasons`, FRAUDMESH_DEGRADED_POLICY)."""
    degraded_reasons: list[str] = []


class ServiceHealth(Struct, kw_only=True):
    status: Literal["ok", "degraded", "down"]
    instances: int
    details: dict[str, dict[str, str]] = {}


class ReadyResponse(Struct, kw_only=True):
    """`GET /ready`: whether requests can be scored now, and if not, why."""

    status: Literal["ready", "not ready"]
    reason: str = ""
    """What is down, in words (only when not ready)."""
    down: list[str] = []
    """Dependencies that are down: `nats`, `redis`, `postgres`, `aggregator`, `inference` (no instance), `feature`."""
    model_version: str = ""
    """The active model version of the inference workers."""
    age_s: float = 0.0
    """Age of this information: seconds since the services' health replies were gathered."""


class HealthResponse(Struct, kw_only=True):
    status: Literal["ok", "degraded", "down"]
    nats: Literal["connected", "disconnected"]
    services: dict[str, ServiceHealth]
    down: list[str] = []
    """Dependencies that are down: `nats`, `redis`, `postgres`, `aggregator`, `inference` (no instance), `feature`."""
    problems: dict[str, str] = {}
    """Per dependency that is down: what was seen and by whom."""
    model_version: str = ""
    """The active model version of the inference workers (comma-separated when they disagree)."""
    age_s: float = 0.0
    """Age of this information: seconds since the services' health replies were gathered."""
