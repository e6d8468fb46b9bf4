"""The JetStream streams and the shared inference consumer, declared idempotently by whoever starts first,
and the failure policy of the partials (what a dead-lettered partial's aggregator is told)."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import msgspec
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, BucketNotFoundError
from nats.js.kv import KeyValue

from shared import subjects
from shared.messages import PartialFailed
from shared.policy import TRANSIENT_ERRORS, Action, ConsumerPolicy, Decision, OwnerNotice
from shared.settings import Settings

DEAD_LETTER_MAX_AGE_S = 7 * 24 * 3600.0
"""How long a dead-letter stream keeps what it holds (an operator reads it; it is not replayed by itself)."""


def dead_letter_stream(name: str, subject: str, description: str, settings: Settings) -> StreamConfig:
    """The config of a dead-letter stream: one subject, limits retention on file, kept DEAD_LETTER_MAX_AGE_S."""
    return StreamConfig(
        name=name,
        subjects=[subject],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=DEAD_LETTER_MAX_AGE_S,
        num_replicas=settings.stream_replicas,
        description=description,
    )


def work_queue_stream(
    name: str, subject_list: list[str], max_age: float, description: str, settings: Settings
) -> StreamConfig:
    """The config of a work queue on file: each message goes to one consumer; one older than `max_age` is dropped,
    and one published again with the same message id within min(120 s, `max_age`) is a duplicate."""
    return StreamConfig(
        name=name,
        subjects=subject_list,
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        max_age=max_age,
        duplicate_window=min(120.0, max_age),
        discard=DiscardPolicy.OLD,
        num_replicas=settings.stream_replicas,
        description=description,
    )


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
        work_queue_stream(
            subjects.PARTIALS_STREAM,
            [subjects.PARTIALS_SUBJECT],
            settings.partials_max_age_s,
            "Partial batches waiting for an inference worker (work queue).",
            settings,
        ),
    )
    await _ensure_stream(
        js,
        dead_letter_stream(
            subjects.DLQ_STREAM,
            subjects.DLQ_SUBJECT,
            "Partials that exhausted their deliveries, with the reason in a header.",
            settings,
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


class _PartialRef(msgspec.Struct, tag="partial", tag_field="type", kw_only=True):
    """The identity of a partial, decoded without its transactions."""

    request_id: str
    index: int


_partial_ref = msgspec.msgpack.Decoder(_PartialRef)


def partials_owner_notice(worker_id: str = "") -> OwnerNotice:
    """Tells a dead-lettered partial's aggregator to stop waiting for it (a `PartialFailed` on its inbox)."""

    def notice(data: bytes, reason: str) -> PartialFailed:
        ref = _partial_ref.decode(data)
        return PartialFailed(request_id=ref.request_id, index=ref.index, reason=reason, worker_id=worker_id)

    return notice


def partials_policy(settings: Settings, worker_id: str = "") -> ConsumerPolicy:
    """What happens to a partial that fails (shared/policy.py), for the inference consumer."""
    return ConsumerPolicy(
        max_deliver=settings.max_deliver,
        dead_letter_subject=subjects.DLQ_SUBJECT,
        owner_notice=partials_owner_notice(worker_id),
    )


# --- live ingestion (issue 9) ----------------------------------------------------------------------
def ingest_stream_configs(settings: Settings) -> list[StreamConfig]:
    """FRAUD_TXNS, FRAUD_LABELS and FRAUD_CLICKS (limits retention: every feature worker's consumer reads them, and
    a replay from the stream rebuilds the ledger and the event log), plus the ingest dead-letter stream."""
    common: dict[str, Any] = {
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
            **common,
        ),
        StreamConfig(
            name=subjects.LABELS_STREAM,
            subjects=[subjects.LABELS_SUBJECT],
            description="Chargebacks and confirmations (one label per message).",
            **common,
        ),
        StreamConfig(
            name=subjects.CLICKS_STREAM,
            subjects=[subjects.CLICKS_SUBJECT],
            description="The personalization clickstream: views, add-to-carts, purchases (one event per message).",
            **common,
        ),
        dead_letter_stream(
            subjects.INGEST_DLQ_STREAM,
            subjects.INGEST_DLQ_SUBJECT,
            "Ingest messages that cannot be applied, with the reason in a header.",
            settings,
        ),
    ]


async def ensure_ingest_streams(js: JetStreamContext, settings: Settings) -> None:
    for config in ingest_stream_configs(settings):
        await _ensure_stream(js, config)


INGEST_MAX_DELIVER = 20
"""Deliveries of an ingest micro-batch that keeps failing for a reason of its own (not a dependency being down)
before it is dead-lettered. The durable consumer itself redelivers without limit (max_deliver -1)."""


def ingest_consumer_config(durable: str, subject: str) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=durable,
        description="Feature workers: every replica pulls micro-batches from this one durable consumer.",
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=60.0,
        max_deliver=-1,
        max_ack_pending=20_000,
        max_waiting=512,
        filter_subject=subject,
    )


async def ensure_ingest_consumers(js: JetStreamContext) -> None:
    """The durable pull consumers of FRAUD_TXNS, FRAUD_LABELS and FRAUD_CLICKS (kept as they are when they exist)."""
    for stream, durable, subject in (
        (subjects.TXNS_STREAM, subjects.TXNS_CONSUMER, subjects.TXNS_SUBJECT),
        (subjects.LABELS_STREAM, subjects.LABELS_CONSUMER, subjects.LABELS_SUBJECT),
        (subjects.CLICKS_STREAM, subjects.CLICKS_CONSUMER, subjects.CLICKS_SUBJECT),
    ):
        try:
            await js.add_consumer(stream, ingest_consumer_config(durable, subject))
        except BadRequestError as exc:
            logging.getLogger("fraudmesh.jetstream").warning("ingest consumer %s kept as it is: %s", durable, exc)


@dataclass(frozen=True)
class IngestPolicy(ConsumerPolicy):
    """The ingest streams never give up on a message because a store is down: an accepted transaction must reach
    the ledger, so a batch that failed for a transient reason is nak'ed with backoff (up to `backoff_max_s`) for as
    long as it takes; only a batch that fails for a reason of its own is dead-lettered after `max_deliver`."""

    def decide(self, exc: BaseException, deliveries: int) -> Decision:
        if isinstance(exc, TRANSIENT_ERRORS):
            return Decision(Action.NAK, "retried", self.backoff(deliveries), f"{type(exc).__name__}: {exc}"[:500])
        return super().decide(exc, deliveries)


def ingest_policy() -> ConsumerPolicy:
    return IngestPolicy(
        max_deliver=INGEST_MAX_DELIVER, backoff_max_s=30.0, dead_letter_subject=subjects.INGEST_DLQ_SUBJECT
    )


# --- async jobs (seed 004) -------------------------------------------------------------------------
def jobs_stream_configs(settings: Settings) -> list[StreamConfig]:
    """FRAUD_JOBS (work queue, one subject per priority; a job still queued after the job TTL is dropped, as its
    state has expired too) and its dead-letter stream."""
    return [
        work_queue_stream(
            subjects.JOBS_STREAM,
            [subjects.job_subject(p) for p in subjects.JOB_PRIORITIES],
            settings.job_ttl_s,
            "Async scoring jobs waiting for a job runner (work queue; one subject per priority).",
            settings,
        ),
        dead_letter_stream(
            subjects.JOBS_DLQ_STREAM,
            subjects.JOBS_DLQ_SUBJECT,
            "Job messages that cannot be read, with the reason in a header.",
            settings,
        ),
    ]


def jobs_consumer_config(priority: str, settings: Settings) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=subjects.job_consumer(priority),
        description=f"Job runners: {priority}-priority jobs (every gateway's runner pulls from this one consumer).",
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=settings.job_ack_wait_s,
        max_deliver=settings.job_max_deliver,
        max_ack_pending=10_000,
        max_waiting=512,
        filter_subject=subjects.job_subject(priority),
    )


def jobs_bucket_config(settings: Settings) -> KeyValueConfig:
    return KeyValueConfig(
        bucket=subjects.JOBS_BUCKET,
        description="fraudmesh async jobs: <job_id> state (JSON), <job_id>.result its result",
        history=1,
        ttl=settings.job_ttl_s,
        storage=StorageType.FILE,
        replicas=settings.stream_replicas,
    )


async def ensure_jobs(js: JetStreamContext, settings: Settings) -> KeyValue:
    """FRAUD_JOBS, its dead-letter stream, the three priority consumers and the KV bucket; returns the bucket.
    A bucket that exists with another TTL is brought in line (the KV's stream `max_age`)."""
    for config in jobs_stream_configs(settings):
        await _ensure_stream(js, config)
    for priority in subjects.JOB_PRIORITIES:
        try:
            await js.add_consumer(subjects.JOBS_STREAM, jobs_consumer_config(priority, settings))
        except BadRequestError as exc:
            logging.getLogger("fraudmesh.jetstream").warning(
                "job consumer %s exists with other settings; keeping it: %s", subjects.job_consumer(priority), exc
            )
    try:
        kv = await js.key_value(subjects.JOBS_BUCKET)
    except BucketNotFoundError:
        pass
    else:
        info = await js.stream_info(f"KV_{subjects.JOBS_BUCKET}")
        if info.config.max_age != settings.job_ttl_s:
            info.config.max_age = settings.job_ttl_s
            info.config.duplicate_window = min(info.config.duplicate_window or 120.0, settings.job_ttl_s)
            try:
                await js.update_stream(info.config)
            except Exception as exc:  # keep serving with the bucket's TTL; say so
                logging.getLogger("fraudmesh.jetstream").warning(
                    "jobs bucket TTL not changed to %ss: %s", settings.job_ttl_s, exc
                )
        return kv
    try:
        return await js.create_key_value(jobs_bucket_config(settings))
    except BadRequestError:  # created by another gateway meanwhile
        return await js.key_value(subjects.JOBS_BUCKET)


def jobs_policy(settings: Settings) -> ConsumerPolicy:
    """What happens to a job message whose run raised (the runner itself marks a job failed on its last run)."""
    return ConsumerPolicy(
        max_deliver=settings.job_max_deliver,
        backoff_base_s=0.25,
        backoff_max_s=5.0,
        dead_letter_subject=subjects.JOBS_DLQ_SUBJECT,
    )
