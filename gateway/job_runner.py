"""The job runner of a gateway process: a `Service` with one priority consumer on FRAUD_JOBS (shared/consumer.py
`PriorityConsumer`, the project's one way in for JetStream messages), scoring each job through the same NATS
path as `POST /predict` (`NatsBridge.score`: admission control, deadline, `fraud.score`).

Priority: one subject and one durable consumer per priority; for every free slot the runner asks high, then
normal, then low for one message (no-wait pull requests) and runs the first it gets. So a queued high job always
starts before a queued normal or low one, whatever the order they were submitted in, and no message is fetched
before a slot is free to run it (an idle runner elsewhere can take it). Jobs already running are not preempted.

A run: the job's state goes `running` (attempts + 1), the transactions are scored with the job's `timeout_ms` as
deadline, the result is written, then the state `completed`, and only then is the message acked. A gateway that
dies mid-run leaves the message unacked: JetStream gives it to a runner again after FRAUDMESH_JOB_ACK_WAIT_S (a
running job's heartbeats keep it from being redelivered while it runs), and the new run scores the same
transaction ids again (ingestion is idempotent on them). A retryable failure (a service down, the deadline)
puts the job back to `pending` with the error and the message is retried with backoff; after
FRAUDMESH_JOB_MAX_DELIVER runs, or at once for a non-retryable error, the job is `failed` with the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import msgspec
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import Metric

from gateway.bridge import BridgeError, NatsBridge
from gateway.controllers.score import nothing_scored, predict_response
from gateway.job_store import JobStore
from shared import subjects
from shared.consumer import PriorityConsumer
from shared.context import Delivery, Transient
from shared.jetstream import jobs_policy
from shared.job_messages import FINISHED, JobMessage, JobRecord
from shared.logs import log_fields
from shared.messages import ErrorReply, ScoreRequest
from shared.service import Service
from shared.settings import Settings

log = logging.getLogger("fraudmesh.gateway.jobs")
_json = msgspec.json.Encoder()
START_RETRY_S = 2.0


class JobRunner(Service):
    name = "jobs"
    description = "Async scoring jobs of a gateway: runs FRAUD_JOBS (high, then normal, then low priority)"

    def __init__(self, settings: Settings, store: JobStore, bridge: NatsBridge) -> None:
        own = msgspec.structs.replace(
            settings,
            instance_id=f"{settings.instance_id}-jobs" if settings.instance_id else "",
            metrics_port=0,  # the gateway serves /metrics
        )
        super().__init__(own)
        self.store = store
        self.bridge = bridge
        self.route: PriorityConsumer[JobMessage] | None = None

    async def on_start(self) -> None:
        if self.route is not None:
            return
        self.route = self.priority_consumer(
            name="jobs",
            stream=subjects.JOBS_STREAM,
            durables=[subjects.job_consumer(p) for p in subjects.JOB_PRIORITIES],
            message_type=JobMessage,
            handler=self.run_job,
            max_wait_s=self.settings.job_poll_max_ms / 1000.0,
            concurrency=self.settings.job_concurrency,
            policy=jobs_policy(self.settings),
        )
        self.store.on_submit = self.route.wake

    def health_details(self) -> dict[str, str]:
        return {"job_mean_s": f"{self.store.timing.mean_s:.3f}"}

    async def run_job(self, job: JobMessage, delivery: Delivery) -> None:
        last = delivery.deliveries >= self.settings.job_max_deliver
        record = await self.store.get(job.job_id, job.request_id)
        if record is None or record.status in FINISHED:
            return  # expired (nothing to report to), or finished by a run whose ack was lost
        started = time.time()
        record = msgspec.structs.replace(
            record, status="running", started_at=started, attempts=record.attempts + 1, runner=self.instance_id
        )
        try:
            await self.store.save(record)
            await self._score(job, record, started, last)
        except Transient:
            raise
        except Exception as exc:  # NATS trouble writing the state or the result, or a bug
            if not last:
                raise  # the policy retries it with backoff
            error = ErrorReply(
                code="internal",
                request_id=job.request_id,
                message=f"The job could not be run after {delivery.deliveries} tries ({type(exc).__name__}: "
                f"{str(exc)[:200]}); submit it again.",
            )
            with contextlib.suppress(Exception):
                await self.store.save(
                    msgspec.structs.replace(record, status="failed", finished_at=time.time(), error=error)
                )

    async def _score(self, job: JobMessage, record: JobRecord, started: float, last: bool) -> None:
        req = ScoreRequest(transactions=job.transactions, request_id=job.request_id, ingest=job.ingest)
        try:
            reply = await self.bridge.score(req, started * 1000.0 + job.timeout_ms, job.request_id)
            if (error := nothing_scored(reply, job.request_id)) is not None:
                raise error
        except BridgeError as exc:
            if exc.reply.retryable and not last:
                await self.store.save(msgspec.structs.replace(record, status="pending", error=exc.reply))
                log.info("job will be retried", extra=log_fields(job_id=job.job_id, error=exc.reply.message))
                raise Transient(exc.reply.message) from None
            finished = msgspec.structs.replace(record, status="failed", finished_at=time.time(), error=exc.reply)
            await self.store.save(finished)
            return
        elapsed = time.time() - started
        result = predict_response(reply, round(elapsed * 1000.0, 3))
        await self.store.save_result(job.job_id, _json.encode(result))
        await self.store.save(msgspec.structs.replace(record, status="completed", finished_at=time.time(), error=None))
        self.store.timing.observe(elapsed)


class HandlerFamilies:
    """The job runner's handler metrics (`fraudmesh_handler_*{service="jobs", handler="jobs"}`: jobs run, by
    outcome, and their duration) as a collector of the gateway's registry, so that its `/metrics` shows them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> list[Metric]:
        return [m for m in self.registry.collect() if m.name.startswith("fraudmesh_handler_")]

    def describe(self) -> list[Metric]:
        return self.collect()


class Jobs:
    """The async jobs of one gateway process: the store, and the runner (none with FRAUDMESH_JOB_CONCURRENCY=0).
    `start` never fails the gateway: the queue is declared, and the runner started, in the background (retried
    while JetStream is not there); the job routes answer 503 meanwhile."""

    def __init__(self, settings: Settings, bridge: NatsBridge) -> None:
        self.settings = settings
        self.store = JobStore(bridge, settings)
        self.runner = JobRunner(settings, self.store, bridge) if settings.job_concurrency > 0 else None
        self._starting: asyncio.Task[None] | None = None
        self._metrics: HandlerFamilies | None = None

    async def start(self) -> None:
        if self.runner is not None:
            metrics = HandlerFamilies(self.runner.registry)
            with contextlib.suppress(ValueError):  # another app of this process exposes its own (tests)
                REGISTRY.register(metrics)
                self._metrics = metrics
        self._starting = asyncio.create_task(self._start(), name="start jobs")

    async def _start(self) -> None:
        while True:
            try:
                await self.store.kv()
                break
            except Exception as exc:
                log.warning("job queue not declared yet; retrying", extra=log_fields(error=str(exc)[:300]))
                await asyncio.sleep(START_RETRY_S)
        if self.runner is not None:
            try:
                await self.runner.start()
            except Exception as exc:
                log.error("job runner did not start; this gateway runs no jobs", extra=log_fields(error=repr(exc)))

    async def stop(self) -> None:
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            with contextlib.suppress(BaseException):
                await self._starting
        if self.runner is not None and self.runner.ready:
            await self.runner.stop()
        if self._metrics is not None:
            with contextlib.suppress(KeyError):
                REGISTRY.unregister(self._metrics)
            self._metrics = None
