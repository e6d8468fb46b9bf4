"""Every NATS subject, stream, consumer and header name fraudmesh uses, in one place.

These names are a public API: other systems publish to them (see docs/nats-api.md). Rename nothing;
add new names instead.
"""

from __future__ import annotations

# --- request-reply subjects (core NATS, queue groups) ---------------------------------------------
SCORE = "fraud.score"
"""Score a batch of transactions. Body: ScoreRequest (msgpack). Reply: ScoreReply | ErrorReply."""

FEATURES_COMPUTE = "features.compute"
"""Compute features for entities from the ledger and the graph, write them to Redis, reply with vectors."""

FEATURES_COMPUTE_CHUNK = "features.compute.chunk"
"""Internal: a feature worker cuts a large `features.compute` request into chunks and sends them here (same
queue group), so several workers share one request. Not for other systems."""

FEATURES_GET = "features.get"
"""Read features through the Redis online store."""

MODEL_CONTROL = "fraud.model.control"
"""Model control (activate a version, A/B split, reload one worker's models). Every inference worker listens (no
queue group)."""

MODEL_INFO = "fraud.model.info"
"""What the inference fleet serves (active and candidate versions, their metadata, the registry's versions).
Body: ModelInfoRequest; reply: ModelInfo | ErrorReply. One worker answers (queue group `QUEUE_INFERENCE`)."""

MODEL_OPS = "fraud.model.ops"
"""Operations on the models that ONE inference worker carries out (queue group `QUEUE_INFERENCE`): load a version
(swap this worker, then write the registry's `active`), delete a version that is not served, validate the active
model on its shipped validation sample, explain inputs (per-input attributions and the baseline prediction).
Body: ModelOps (shared/model_messages.py); reply: ModelOpsReply. The gateway then broadcasts on `MODEL_CONTROL`
where every worker must act (a load's hot swap, a rolling reload)."""

HEALTH_PREFIX = "fraudmesh.health"
"""`fraudmesh.health.<service>`: every instance of the service answers (no queue group), so a caller that
gathers replies for a moment learns how many instances are up."""


def health_subject(service: str) -> str:
    return f"{HEALTH_PREFIX}.{service}"


RESULTS_PREFIX = "fraud.results"
"""Partial results go to `fraud.results.<aggregator instance id>`: each aggregator's own inbox."""


def results_subject(instance_id: str) -> str:
    return f"{RESULTS_PREFIX}.{instance_id}"


# --- queue groups ----------------------------------------------------------------------------------
QUEUE_AGGREGATOR = "aggregator"
QUEUE_FEATURES = "feature_svc"
QUEUE_DEAD_LETTERS = "aggregator-dead-letters"
"""Aggregators share the max-deliveries advisory: one of them dead-letters each unacked partial."""
QUEUE_INFERENCE = "inference"

# --- JetStream -------------------------------------------------------------------------------------
PARTIALS_STREAM = "FRAUD_PARTIALS"
PARTIALS_SUBJECT = "fraud.partials"
"""Work queue of partial batches (JetStream, work-queue retention)."""
INFERENCE_CONSUMER = "inference"
"""Durable pull consumer shared by every inference replica (the JetStream form of a queue group)."""

DLQ_STREAM = "FRAUD_DLQ"
DLQ_SUBJECT = "fraud.partials.dlq"
"""Partials that will not be scored land here (undecodable, poison, failed on their last delivery, or never acked
within max_deliver), unchanged, with the reason in the `Fraudmesh-Dead-Letter-Reason` header."""

MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"


def max_deliveries_advisory(stream: str = PARTIALS_STREAM, consumer: str = INFERENCE_CONSUMER) -> str:
    return f"{MAX_DELIVERIES_ADVISORY}.{stream}.{consumer}"


# --- buckets ---------------------------------------------------------------------------------------
MODEL_ARTIFACTS_BUCKET = "fraudmesh_models"
"""Object Store: model versions, `<version>/<file>` then `<version>/.manifest.json` (inference_svc/registry.py)."""
MODEL_STATE_BUCKET = "fraudmesh_model_state"
"""KV: `active`, `candidate`, `candidate_share`: what every inference worker serves."""
CONFIG_BUCKET = "fraudmesh_config"
"""KV: runtime settings (`POST /config`), watched by every gateway, aggregator, inference and feature instance
(shared/runtime_config.py). One key, CONFIG_KEY, holds the JSON object of the overridden settings."""
CONFIG_KEY = "runtime"

# --- headers ---------------------------------------------------------------------------------------
HDR_DEADLINE = "Fraudmesh-Deadline"
"""Absolute deadline of the request, Unix epoch milliseconds (integer as text). Checked before costly steps."""
HDR_REQUEST_ID = "Fraudmesh-Request-Id"
HDR_REPLY_TO = "Fraudmesh-Reply-To"
"""On a partial: where to publish its result (a JetStream message's own reply subject is its ack subject)."""
HDR_MSG_ID = "Nats-Msg-Id"
"""JetStream deduplication id; for partials `{request_id}:{index}`."""
HDR_CONTENT_TYPE = "Content-Type"
HDR_DLQ_REASON = "Fraudmesh-Dead-Letter-Reason"

# --- live ingestion (issue 9) ----------------------------------------------------------------------
TXNS_STREAM = "FRAUD_TXNS"
TXNS_SUBJECT = "fraud.txns.ingest"
"""One transaction per message (TxnIngest, msgpack or JSON by Content-Type), Nats-Msg-Id = transaction_id."""
LABELS_STREAM = "FRAUD_LABELS"
LABELS_SUBJECT = "fraud.labels.ingest"
"""One label per message (Label: transaction_id, label fraud|legit, fraud_kind, label_time)."""
TXNS_CONSUMER = "ingest-txns"
LABELS_CONSUMER = "ingest-labels"
"""Durable pull consumers shared by every feature worker."""
CLICKS_STREAM = "FRAUD_CLICKS"
CLICKS_SUBJECT = "fraud.clicks.ingest"
"""The personalization family's clickstream: one ClickEvent per message (shared/click_messages.py, msgpack or JSON),
Nats-Msg-Id = event_id; feature workers bring the user, item and session features up to date from it."""
CLICKS_CONSUMER = "ingest-clicks"
INGEST_DLQ_STREAM = "FRAUD_INGEST_DLQ"
INGEST_DLQ_SUBJECT = "fraud.ingest.dlq"
"""Ingest messages that can never be applied (undecodable, or a label whose transaction never arrived)."""
HDR_ACK = "Fraudmesh-Ack"
"""On a `fraud.score` request: "1" asks the aggregator that takes it to send, before its answer, an empty message on
the reply subject with `Fraudmesh-Accepted-By` (its instance id) and `Fraudmesh-Service-Id` (its `$SRV` id), so
the caller can watch that instance (`$SRV.PING.aggregator.<id>`) and learn within about a second if it dies.
Callers that do not send it get exactly one message, the answer."""
HDR_ACCEPTED_BY = "Fraudmesh-Accepted-By"
HDR_SERVICE_ID = "Fraudmesh-Service-Id"

# --- async scoring jobs (seed 004: POST /predict/async, GET /jobs) ---------------------------------
JOBS_STREAM = "FRAUD_JOBS"
"""Work queue of async scoring jobs (work-queue retention): one message per job, `Nats-Msg-Id` = job id, on the
subject of its priority. Internal to the gateways (they publish and run jobs); clients use the HTTP routes."""
JOB_PRIORITIES = ("high", "normal", "low")
"""In the order a job runner drains them: a queued high job always starts before a queued normal or low one."""
JOBS_PREFIX = "fraud.jobs"


def job_subject(priority: str) -> str:
    """`fraud.jobs.high|normal|low`: the work-queue subject of one priority."""
    return f"{JOBS_PREFIX}.{priority}"


def job_consumer(priority: str) -> str:
    """`jobs-high|normal|low`: the durable pull consumer of one priority, shared by every job runner."""
    return f"jobs-{priority}"


JOBS_DLQ_STREAM = "FRAUD_JOBS_DLQ"
JOBS_DLQ_SUBJECT = "fraud.jobs.dlq"
"""Job messages that cannot be read (undecodable), unchanged, with the reason in `Fraudmesh-Dead-Letter-Reason`."""
JOBS_BUCKET = "fraudmesh_jobs"
"""KV: `<job_id>` holds the job's state (JobRecord, JSON); `<job_id>.result` its /predict-shaped result (JSON).
Keys expire FRAUDMESH_JOB_TTL_S after their last write (the bucket's max age): an expired job answers 404."""


# --- the personalization model family (seed 001's `/score/personalization`) -----------------------
PERSONALIZATION_SCORE = "personalization.score"
"""Score (user, item) pairs. Body: PersonalizationScoreRequest (shared/personalization_messages.py); reply:
PersonalizationScoreReply | ErrorReply. Inference workers answer (queue group `QUEUE_INFERENCE`)."""

PERSONALIZATION_MODEL_CONTROL = "personalization.model.control"
"""Activate a personalization model version. Body: PersonalizationModelControl; reply: PersonalizationModelState
(one per worker: every inference worker listens, no queue group)."""

PERSONALIZATION_MODEL_INFO = "personalization.model.info"
"""What the fleet serves of the personalization family. Body: PersonalizationModelInfoRequest; reply:
PersonalizationModelInfo | ErrorReply. One worker answers (queue group `QUEUE_INFERENCE`)."""
