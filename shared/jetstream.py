"""The JetStream streams and the shared inference consumer, declared idempotently by whoever starts first."""

from __future__ import annotations

import contextlib
import logging

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError

from shared import subjects
from shared.settings import Settings


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except BadRequestError:
        # exists with another config: bring it in line (allowed changes only; retention cannot change)
        with contextlib.suppress(BadRequestError):
            await js.update_stream(config)


async def ensure_streams(js: JetStreamContext, settings: Settings) -> None:
    await _ensure_stream(
        js,
        StreamConfig(
            name=subjects.PARTIALS_STREAM,
            subjects=[subjects.PARTIALS_SUBJECT],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            max_age=settings.partials_max_age_s,
            duplicate_window=min(120.0, settings.partials_max_age_s),
            discard=DiscardPolicy.OLD,
            num_replicas=settings.stream_replicas,
            description="Partial batches waiting for an inference worker (work queue).",
        ),
    )
    await _ensure_stream(
        js,
        StreamConfig(
            name=subjects.DLQ_STREAM,
            subjects=[subjects.DLQ_SUBJECT],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=7 * 24 * 3600.0,
            num_replicas=settings.stream_replicas,
            description="Partials that exhausted their deliveries, with the reason in a header.",
        ),
    )


def inference_consumer_config(settings: Settings) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=subjects.INFERENCE_CONSUMER,
        description="Inference workers: every replica pulls from this one durable consumer.",
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        max_ack_pending=10_000,
        max_waiting=512,
        filter_subject=subjects.PARTIALS_SUBJECT,
    )


async def ensure_inference_consumer(js: JetStreamContext, settings: Settings) -> None:
    config = inference_consumer_config(settings)
    try:
        await js.add_consumer(subjects.PARTIALS_STREAM, config)
    except BadRequestError as exc:
        # Same name, other settings (e.g. ack_wait changed): the server keeps the existing consumer. Say so.
        logging.getLogger("fraudmesh.jetstream").warning(
            "inference consumer exists with other settings; keeping it (delete it to apply new ones): %s", exc
        )


# --- live ingestion (issue 9) ----------------------------------------------------------------------
def ingest_stream_configs(settings: Settings) -> list[StreamConfig]:
    """FRAUD_TXNS and FRAUD_LABELS (limits retention: every feature worker's consumer reads them, and a replay
    from the stream rebuilds the ledger), plus the ingest dead-letter stream."""
    common = {
        "retention": RetentionPolicy.LIMITS,
        "storage": StorageType.FILE,
        "discard": DiscardPolicy.OLD,
        "max_age": settings.ingest_max_age_s,
        "max_bytes": settings.ingest_max_bytes,
        "duplicate_window": min(settings.ingest_dedupe_window_s, settings.ingest_max_age_s),
        "num_replicas": settings.stream_replicas,
    }
    return [
        StreamConfig(
            name=subjects.TXNS_STREAM,
            subjects=[subjects.TXNS_SUBJECT],
            description="Transactions for the ledger, the graph and the online features (one per message).",
            **common,  # type: ignore[arg-type]
        ),
        StreamConfig(
            name=subjects.LABELS_STREAM,
            subjects=[subjects.LABELS_SUBJECT],
            description="Chargebacks and confirmations (one label per message).",
            **common,  # type: ignore[arg-type]
        ),
        StreamConfig(
            name=subjects.INGEST_DLQ_STREAM,
            subjects=[subjects.INGEST_DLQ_SUBJECT],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=7 * 24 * 3600.0,
            num_replicas=settings.stream_replicas,
            description="Ingest messages that cannot be applied, with the reason in a header.",
        ),
    ]


async def ensure_ingest_streams(js: JetStreamContext, settings: Settings) -> None:
    for config in ingest_stream_configs(settings):
        await _ensure_stream(js, config)
