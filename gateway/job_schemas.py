"""HTTP bodies of the async job routes (seed 004): `POST /predict/async`, `GET /jobs/{job_id}`, `GET /jobs`."""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from msgspec import Meta, Struct

from gateway.schemas import PredictResponse, RequestId
from gateway.seed_schemas import SEED_TRANSACTION, Timestamp
from shared.job_messages import JobStatus, Priority
from shared.messages import ErrorReply

TX = TypeVar("TX")
JobId = Annotated[str, Meta(description="The job's id: 32 hex digits.", examples=["6f1c0d9e2b7a4e8f9a1b2c3d4e5f6a7b"])]
PriorityField = Annotated[
    Priority,
    Meta(
        description="`high`, `normal` or `low`: a queued high job starts before any queued normal one, a normal "
        "before any low (running jobs are not interrupted)."
    ),
]
StatusField = Annotated[
    JobStatus,
    Meta(
        description="`pending` (queued, or waiting to be retried), `running`, `completed` (see `result`) or "
        "`failed` (see `error`)."
    ),
]
EtaField = (
    Annotated[
        float,
        Meta(ge=0, description="Estimated seconds until the job is done (0 when overdue); null once it is finished."),
    ]
    | None
)
Iso = Annotated[str, Meta(description="ISO 8601, UTC.", examples=["2026-12-01T00:00:00.000Z"])]

ASYNC_EXAMPLE: dict[str, Any] = {
    "transactions": [SEED_TRANSACTION, {"card_id": "card_2", "transaction_amount": 500}],
    "request_id": "optional-client-request-id",
    "priority": "high",
    "timeout_ms": 5000,
}


class AsyncPredictRequest(Struct, Generic[TX], kw_only=True, forbid_unknown_fields=True):
    transactions: Annotated[
        list[TX],
        Meta(min_length=1, description="1 to 10,000 transactions, each as `POST /predict` takes them."),
    ]
    request_id: RequestId | None = None
    priority: PriorityField = "normal"
    timeout_ms: (
        Annotated[
            float,
            Meta(
                gt=0,
                le=60000,
                description="Deadline of the scoring once the job runs, in ms (default FRAUDMESH_REQUEST_TIMEOUT_MS; "
                "at most FRAUDMESH_MAX_REQUEST_TIMEOUT_MS). Time in the queue does not count.",
                examples=[5000],
            ),
        ]
        | None
    ) = None


class JobAccepted(Struct, kw_only=True):
    job_id: JobId
    status: StatusField
    priority: PriorityField
    eta_seconds: Annotated[float, Meta(ge=0, description="Estimated seconds until the job is done.")]
    created_at: Iso
    location: Annotated[str, Meta(description="Where to poll the job (also the Location header).")]
    timestamp: Timestamp


class JobView(Struct, kw_only=True):
    job_id: JobId
    status: StatusField
    priority: PriorityField
    request_id: Annotated[str, Meta(description="The scoring request's id (yours, or the job id).")]
    transactions: Annotated[int, Meta(ge=1, description="Transactions in the job.")]
    created_at: Iso
    started_at: Annotated[str | None, Meta(description="When its last run started (ISO 8601, UTC); null if none.")]
    finished_at: Annotated[str | None, Meta(description="When it completed or failed (ISO 8601, UTC).")]
    age_seconds: Annotated[float, Meta(ge=0, description="Seconds since it was submitted.")]
    attempts: Annotated[int, Meta(ge=0, description="Runs started (more than 1 after a retry or a gateway restart).")]
    eta_seconds: EtaField
    result: Annotated[
        PredictResponse | None,
        Meta(description="When completed: the result, exactly as `POST /predict` would have answered."),
    ] = None
    error: Annotated[
        ErrorReply | None,
        Meta(description="When failed: why. While pending after a failed run: the error it will be retried for."),
    ] = None
    timestamp: Timestamp


class JobSummary(Struct, kw_only=True):
    job_id: JobId
    status: StatusField
    priority: PriorityField
    transactions: Annotated[int, Meta(ge=1, description="Transactions in the job.")]
    created_at: Iso
    age_seconds: Annotated[float, Meta(ge=0, description="Seconds since it was submitted.")]


class JobList(Struct, kw_only=True):
    jobs: Annotated[list[JobSummary], Meta(description="Newest first, at most `limit`.")]
    total_count: Annotated[int, Meta(ge=0, description="Jobs with that status (all jobs without one), unexpired.")]
    timestamp: Timestamp
