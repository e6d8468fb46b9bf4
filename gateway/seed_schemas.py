"""Bodies of the seed-compatible routes (seed 001's `/score/batch` and `/models`, seed 003's MLflow routes, seed
004's `/` and `/predict/batch`). Transactions inside them are read as raw JSON and validated by the same strict
edge rules as `/predict` (`gateway.envelope`), so their errors name the place in *these* bodies."""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from msgspec import Meta, Struct

from gateway.schemas import FraudScoreResponse, RequestId
from shared.messages import Action, RiskLevel, TransactionScore

SEED_TRANSACTION: dict[str, Any] = {
    "card_id": "card_00001234",
    "transaction_amount": 150.0,
    "merchant_id": "merchant_12345",
    "mcc_code": "5411",
    "country_code": "US",
}
TX = TypeVar("TX")
"""The type of a transaction in a request Struct: `msgspec.Raw` to decode (then `gateway.envelope` checks each with
the `/predict` rules), `StrictTransaction` to document."""
Timestamp = Annotated[
    str, Meta(description="When the reply was made: ISO 8601, UTC.", examples=["2026-12-01T00:00:00Z"])
]


# ----------------------------------------------------------------------------------- seed 001: /score/batch
ModelType = Literal["fraud_detection", "personalization"]


class ScoreBatchRequest(Struct, Generic[TX], kw_only=True, forbid_unknown_fields=True):
    model_type: Annotated[
        ModelType,
        Meta(
            description="The model family: `fraud_detection` (requests are `/score/fraud` bodies) or "
            "`personalization` (requests are `/score/personalization` bodies)."
        ),
    ]
    requests: Annotated[
        list[TX],
        Meta(
            min_length=1,
            description="1 to 10,000 requests, each as `/score/fraud` (or `/score/personalization`) takes one; "
            "scored as one batch.",
        ),
    ]
    batch_id: Annotated[RequestId, Meta(examples=["batch_20240902_001"])] | None = None


class BatchItemError(Struct, kw_only=True):
    """A transaction of a batch that was not scored (its partial missed the deadline)."""

    index: Annotated[int, Meta(ge=0, description="Position of the transaction in `requests`.")]
    transaction_id: Annotated[str, Meta(description="The transaction that has no score.")]
    error: Annotated[str, Meta(description="Why, and what to do.")]
    retryable: Annotated[bool, Meta(description="True: the same request may succeed if sent again.")] = True


class ScoreBatchResponse(Struct, kw_only=True):
    batch_id: Annotated[str, Meta(description="The client's batch id, or one the gateway generated.")]
    model_type: Annotated[ModelType, Meta(description="The model family that scored the batch.")]
    total_requests: Annotated[int, Meta(ge=0, description="Transactions in the batch.")]
    successful_responses: Annotated[int, Meta(ge=0, description="Transactions scored.")]
    failed_responses: Annotated[int, Meta(ge=0, description="Transactions not scored before the deadline.")]
    responses: Annotated[
        list[FraudScoreResponse | None],
        Meta(description="One entry per request, in order: its `/score/fraud` reply, or null (see `failures`)."),
    ]
    failures: Annotated[list[BatchItemError], Meta(description="Why each null entry of `responses` is null.")]
    latency_ms: Annotated[float, Meta(ge=0, description="Time spent in the gateway for the whole batch, in ms.")]


# ---------------------------------------------------------------------------------- seed 003: MLflow style
class BatchPredictRequest(Struct, Generic[TX], kw_only=True, forbid_unknown_fields=True):
    records: Annotated[
        list[TX],
        Meta(min_length=1, description="1 to 1,000 transactions; more is refused with 413 (split the batch)."),
    ]


class Prediction(Struct, kw_only=True):
    transaction_id: Annotated[str, Meta(description="The transaction's id (the client's, or `{request_id}-{i}`).")]
    fraud_score: Annotated[float, Meta(ge=0, le=1, description="Probability of fraud.", examples=[0.07])]
    risk_level: Annotated[RiskLevel, Meta(description="Band of the score, by the model's thresholds.")]
    recommended_action: Annotated[Action, Meta(description="What the model recommends doing.")]
    model_version: Annotated[str, Meta(description="The model version that scored it.")]


class BatchPredictResponse(Struct, kw_only=True):
    request_id: Annotated[str, Meta(description="The request's id (X-Request-Id).")]
    predictions: Annotated[
        list[TransactionScore | None],
        Meta(description="One per record, in order; null for a record not scored before the deadline."),
    ]
    count: Annotated[int, Meta(ge=0, description="Records scored.")]
    complete: Annotated[bool, Meta(description="False when some records were not scored before the deadline.")]
    latency_ms: Annotated[float, Meta(ge=0, description="Time spent in the gateway, in ms.")]


class InvocationsResponse(Struct, kw_only=True):
    predictions: Annotated[
        list[Prediction],
        Meta(description="One per input row, in order (MLflow's scoring-server reply; a list of records)."),
    ]


class PingResponse(Struct, kw_only=True):
    status: Annotated[Literal["ok"], Meta(description="`ok`: requests can be scored.")]


class TransactionField(Struct, kw_only=True):
    name: Annotated[str, Meta(description="Input column name.", examples=["transaction_amount"])]
    type: Annotated[str, Meta(description="JSON type.", examples=["number"])]
    required: Annotated[bool, Meta(description="True for `card_id` and `transaction_amount`.")]
    description: Annotated[str, Meta(description="What the field holds and its format.")]


class ModelFeaturesResponse(Struct, kw_only=True):
    model_version: Annotated[str, Meta(description="The active model version.")]
    input_fields: Annotated[list[TransactionField], Meta(description="The columns a transaction may have.")]
    feature_names: Annotated[list[str], Meta(description="The model's features, computed from the inputs.")]
    feature_count: Annotated[int, Meta(ge=0, description="len(feature_names).")]


# --------------------------------------------------------------------------------------- seed 004: engine style
class RootResponse(Struct, kw_only=True):
    name: Annotated[str, Meta(description="Service name.", examples=["fraudmesh"])]
    version: Annotated[str, Meta(description="Gateway version.", examples=["0.1.0"])]
    description: Annotated[str, Meta(description="What the service does.")]
    status: Annotated[Literal["running"], Meta(description="Always `running` while the process answers.")]
    docs_url: Annotated[str, Meta(description="Where the interactive API docs are.", examples=["/docs"])]


class PredictBatchRequest(Struct, Generic[TX], kw_only=True, forbid_unknown_fields=True):
    batch: Annotated[
        list[Annotated[list[TX], Meta(min_length=1)]],
        Meta(min_length=1, description="Inner batches of transactions; one result per inner batch, in order."),
    ]
    request_ids: (
        Annotated[list[RequestId], Meta(description="One id per inner batch (optional); same length as `batch`.")]
        | None
    ) = None


class BatchResult(Struct, kw_only=True):
    request_id: Annotated[str, Meta(description="The inner batch's id (given, or `{batch_id}-{i}`).")]
    success: Annotated[bool, Meta(description="True when every transaction of this inner batch was scored.")]
    predictions: Annotated[
        list[TransactionScore | None], Meta(description="One per transaction; null where it was not scored.")
    ]
    error: Annotated[str | None, Meta(description="Why some transactions were not scored; null on success.")]
    metadata: Annotated[dict[str, float], Meta(description="`transactions`: the inner batch's size.")]
    timestamp: Timestamp


class PredictBatchResponse(Struct, kw_only=True):
    batch_id: Annotated[str, Meta(description="This request's id (X-Request-Id).")]
    results: Annotated[list[BatchResult], Meta(description="One per inner batch, in order.")]
    metadata: Annotated[
        dict[str, float],
        Meta(description="`total_time_ms`, `batch_size` (inner batches), `success_rate`, `avg_time_per_item_ms`."),
    ]
    timestamp: Timestamp


class DataframeSplit(Struct, kw_only=True, forbid_unknown_fields=True):
    """pandas `DataFrame.to_dict(orient="split")`: column names and rows of values."""

    columns: Annotated[
        list[str],
        Meta(min_length=1, description="Transaction field names.", examples=[["card_id", "transaction_amount"]]),
    ]
    data: Annotated[
        list[list[Any]],
        Meta(min_length=1, description="Rows: one value per column, in column order.", examples=[[["card_1", 10.5]]]),
    ]
    index: Annotated[list[Any], Meta(description="Row labels (ignored).")] | None = None


class InvocationsRequest(Struct, Generic[TX], kw_only=True, forbid_unknown_fields=True):
    """MLflow's scoring formats; send exactly one of `dataframe_split`, `dataframe_records`, `instances`, `inputs`.
    `instances` and `inputs` take a list of records or an object of columns (`{"card_id": [...], ...}`)."""

    dataframe_split: DataframeSplit | None = None
    dataframe_records: Annotated[list[TX], Meta(min_length=1, description="pandas `orient=records`.")] | None = None
    instances: Annotated[list[TX] | dict[str, list[Any]], Meta(description="Records, or columns.")] | None = None
    inputs: Annotated[list[TX] | dict[str, list[Any]], Meta(description="Records, or columns.")] | None = None
    params: (
        Annotated[dict[str, Any], Meta(description="MLflow inference params: none are supported (send {}).")] | None
    ) = None


# ------------------------------------------------------------------------------------ models (seeds 001, 003)
class ModelView(Struct, kw_only=True):
    version: Annotated[str, Meta(description="Model version.", examples=["bootstrap-20261201-000000"])]
    kind: Annotated[str, Meta(description="Model kind.", examples=["hetero_graphsage"])]
    created_at: Annotated[str, Meta(description="When it was trained (ISO 8601).")]
    metrics: Annotated[dict[str, Any], Meta(description="Validation metrics recorded by the trainer.")]
    thresholds: Annotated[
        dict[str, float],
        Meta(description="Score cut-offs of `medium`, `high`, `critical` (fraud; empty for personalization)."),
    ]


class ModelFamily(Struct, kw_only=True):
    name: Annotated[Literal["fraud", "personalization"], Meta(description="Model family.")]
    status: Annotated[
        Literal["serving", "not_served"], Meta(description="`not_served`: the family is not deployed yet.")
    ]
    active: Annotated[ModelView | None, Meta(description="The version scoring requests (null if not served).")]
    candidate: Annotated[ModelView | None, Meta(description="The A/B candidate, if any.")]
    candidate_share: Annotated[float, Meta(ge=0, le=1, description="Share of partials the candidate scores.")]
    versions: Annotated[list[str], Meta(description="Versions that can be activated (registry and model dir).")]


class ModelsResponse(Struct, kw_only=True):
    families: Annotated[list[ModelFamily], Meta(description="Every model family, served or not.")]


class ModelMetadataView(Struct, kw_only=True):
    name: Annotated[str, Meta(description="Model family.", examples=["fraud"])]
    version: Annotated[str, Meta(description="The active version.")]
    kind: Annotated[str, Meta(description="Model kind.")]
    created_at: Annotated[str, Meta(description="When it was trained (ISO 8601).")]
    metrics: Annotated[dict[str, Any], Meta(description="Validation metrics recorded by the trainer.")]
    thresholds: Annotated[dict[str, float], Meta(description="Score cut-offs of `medium`, `high`, `critical`.")]
    feature_count: Annotated[int, Meta(ge=0, description="Number of model features.")]
    training: Annotated[dict[str, Any], Meta(description="What the trainer recorded about its data.")]
    training_data_range: Annotated[
        dict[str, str] | None,
        Meta(description="The training data's time split (`start`, `train_end`, `val_end`, `end`); null if none."),
    ]
