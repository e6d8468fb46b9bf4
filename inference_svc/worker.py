"""The inference worker actor: pulls partials from the shared durable JetStream consumer and scores them.

Delivery contract:
- a partial is acked only after its result has been published to the aggregator's inbox (same connection,
  so the server sees the result first); a worker that dies before acking gets its partial redelivered to
  another worker after `ack_wait`, and the aggregator counts each partial once;
- while a partial takes long, `in_progress` is sent every ack_wait/3 so it is not redelivered under us;
- a partial whose deadline has passed is terminated: its request was already answered as incomplete;
- a partial that fails on its last allowed delivery goes to the dead-letter stream, and its aggregator is told.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import numpy as np
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import FetchTimeoutError
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Counter, Histogram

from feature_svc.definitions import FEATURE_SET_VERSION
from feature_svc.online import OnlineStore
from inference_svc.artifact import ArtifactError
from inference_svc.entity_features import EntityFeatureSource, EntityStats
from inference_svc.model import OnnxModel, load_model
from inference_svc.scorer import ModelInputMismatch, Scorer
from shared import subjects
from shared.jetstream import ensure_inference_consumer, ensure_streams
from shared.logs import log_fields, request_id_var
from shared.messages import Partial, PartialFailed, PartialResult
from shared.service import Service, StartupError, now_ms
from shared.settings import Settings
from shared.telemetry import extract, pass_through

SCORE_BUCKETS = tuple(round(i * 0.05, 2) for i in range(1, 21))


class InferenceMetrics:
    def __init__(self, service: Service) -> None:
        r = service.registry
        self.partials = Counter(
            "fraudmesh_inference_partials",
            "Partials handled by this worker, by outcome (scored, expired, retried, dead_lettered).",
            ["outcome"],
            registry=r,
        )
        self.redeliveries = Counter(
            "fraudmesh_partial_redeliveries", "Partials this worker received on a redelivery.", registry=r
        )
        self.dead_lettered = Counter(
            "fraudmesh_partials_dead_lettered",
            "Partials this worker sent to the dead-letter stream.",
            registry=r,
        )
        self.queue_time = Histogram(
            "fraudmesh_partial_queue_seconds",
            "Time a partial waited in the work queue before a worker took it.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.compute_time = Histogram(
            "fraudmesh_partial_compute_seconds",
            "Time to score a partial (features, ONNX, decisions), by stage.",
            ["stage"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=r,
        )
        self.feature_cache = Counter(
            "fraudmesh_feature_cache_requests",
            "Entity feature reads on the scoring path, by result (hit, miss, stale).",
            ["result"],
            registry=r,
        )
        for result in ("hit", "miss", "stale"):
            self.feature_cache.labels(result)
        self.features_computed = Counter(
            "fraudmesh_features_computed_on_the_fly",
            "Entities whose features were computed by features.compute while scoring.",
            registry=r,
        )
        self.features_unavailable = Counter(
            "fraudmesh_features_unavailable",
            "Entities scored without features (feature service did not answer in time).",
            registry=r,
        )
        self.feature_age = Histogram(
            "fraudmesh_feature_age_seconds",
            "Age of the oldest entity feature behind each score.",
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 21600, 86400),
            registry=r,
        )
        self.scores = Histogram(
            "fraudmesh_model_score",
            "Fraud scores produced, by model version.",
            ["model_version"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )

    def record_features(self, stats: EntityStats) -> None:
        self.feature_cache.labels("hit").inc(stats.cache_hits)
        self.feature_cache.labels("miss").inc(stats.cache_misses)
        self.feature_cache.labels("stale").inc(stats.cache_stale)
        self.features_computed.inc(stats.computed)
        self.features_unavailable.inc(stats.unavailable)
        observe = self.feature_age.observe
        for age in stats.row_age_s[~np.isnan(stats.row_age_s)].tolist():
            observe(age)


class InferenceWorker(Service):
    name = "inference"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.m = InferenceMetrics(self)
        self.scorer: Scorer | None = None
        self.online: OnlineStore | None = None
        self._model: OnnxModel | None = None
        self.js: JetStreamContext | None = None
        self._pulling = True
        self._puller: asyncio.Task[None] | None = None
        self._psub: JetStreamContext.PullSubscription | None = None

    def load_model(self) -> OnnxModel:
        try:
            return load_model(Path(self.settings.model_dir), self.settings.model_version, self.settings.onnx_threads)
        except ArtifactError as exc:
            raise StartupError(str(exc)) from None

    def build_scorer(self, model: OnnxModel) -> Scorer:
        source = None
        if self.settings.entity_features != "off":
            if self.online is None:
                self.online = OnlineStore.from_url(
                    self.settings.redis_url, version=FEATURE_SET_VERSION, ttl_s=self.settings.feature_ttl_s
                )
            source = EntityFeatureSource(
                self.online, self.nc, max_age_s=self.settings.feature_max_age_s, span=self.span
            )
        try:
            return Scorer(model, source, always_fetch=self.settings.entity_features == "always")
        except ModelInputMismatch as exc:
            raise StartupError(str(exc)) from None

    async def start(self) -> None:
        self._model = self.load_model()  # fail fast, before connecting anywhere
        self.log.info("model loaded", extra=log_fields(version=self._model.version))
        await super().start()

    def health_details(self) -> dict[str, str]:
        details = {"model_version": self._model.version if self._model else ""}
        if self.scorer is not None:
            details["entity_features"] = "on" if self.scorer.entities is not None else "off"
            if self.scorer.entities is not None and self.scorer.entities.last_error:
                details["feature_service_last_error"] = self.scorer.entities.last_error[:200]
        return details

    async def on_stop(self) -> None:
        if self.online is not None:
            await self.online.close()

    async def on_start(self) -> None:
        assert self._model is not None
        self.scorer = self.build_scorer(self._model)  # needs the NATS connection (features.compute)
        self.log.info(
            "scorer ready",
            extra=log_fields(model=self._model.version, entity_features=self.scorer.entities is not None),
        )
        self.js = self.nc.jetstream(timeout=5.0)
        await ensure_streams(self.js, self.settings)
        await ensure_inference_consumer(self.js, self.settings)
        psub = await self.js.pull_subscribe_bind(durable=subjects.INFERENCE_CONSUMER, stream=subjects.PARTIALS_STREAM)
        self._psub = psub
        self._puller = asyncio.create_task(self._pull_loop(psub))

    async def before_drain(self) -> None:
        self._pulling = False
        if self._puller is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._puller, timeout=3.0)
        if self._psub is not None:
            with contextlib.suppress(Exception):
                await self._psub.unsubscribe()

    # ---------------------------------------------------------------------------------- pulling
    async def _pull_loop(self, psub: JetStreamContext.PullSubscription) -> None:
        # One partial per fetch: a worker never hoards partials that another idle worker could be scoring.
        slots = asyncio.Semaphore(self.settings.inference_concurrency)
        while self._pulling:
            await slots.acquire()
            try:
                msgs = await psub.fetch(1, timeout=0.5)
            except (TimeoutError, FetchTimeoutError):
                msgs = []
            except Exception as exc:  # connection trouble: nats-py reconnects; back off briefly
                if self._pulling:
                    self.log.warning("fetch failed", extra=log_fields(error=repr(exc)))
                    await asyncio.sleep(0.2)
                msgs = []
            if not msgs:
                slots.release()
                continue
            task = asyncio.create_task(self._process(msgs[0]))
            self._tasks.add(task)
            task.add_done_callback(lambda t: (self._tasks.discard(t), slots.release()))

    async def _process(self, msg: Msg) -> None:
        assert self.scorer is not None and self.js is not None
        headers = msg.headers or {}
        meta = msg.metadata
        deliveries = meta.num_delivered
        token = request_id_var.set(headers.get(subjects.HDR_REQUEST_ID, ""))
        span_cm = (
            self.tracer.start_as_current_span(
                "inference partial",
                context=extract(headers),
                kind=SpanKind.CONSUMER,
                attributes={"messaging.system": "nats", "fraudmesh.deliveries": deliveries},
            )
            if self.tracing
            else contextlib.nullcontext(None)
        )
        with span_cm as span:
            try:
                await self._score_partial(msg, headers, deliveries)
            except Exception as exc:
                if span is not None:
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, str(exc)))
                await self._failed(msg, headers, deliveries, exc)
        request_id_var.reset(token)

    async def _score_partial(self, msg: Msg, headers: dict[str, str], deliveries: int) -> None:
        assert self.scorer is not None
        if deliveries > 1:
            self.m.redeliveries.inc()
        deadline = float(headers.get(subjects.HDR_DEADLINE, "0") or 0)
        if deadline and now_ms() > deadline:
            self.m.partials.labels("expired").inc()
            await msg.term()  # its request was already answered as incomplete
            return
        reply_to = headers.get(subjects.HDR_REPLY_TO)
        partial = self.codec.decode(msg.data, Partial)
        queue_s = max(0.0, time.time() - partial.enqueued_at / 1000.0) if partial.enqueued_at else 0.0
        self.m.queue_time.observe(queue_s)
        heartbeat = _Heartbeat(msg, self.settings.ack_wait_s / 3.0)
        try:
            t0 = time.perf_counter()
            if self.settings.chaos_inference_delay_ms:
                await asyncio.sleep(self.settings.chaos_inference_delay_ms / 1000.0)
            fheaders = {subjects.HDR_DEADLINE: headers.get(subjects.HDR_DEADLINE, "")} if deadline else {}
            if not self.tracing:
                pass_through(headers, fheaders)  # when tracing, the feature source injects its own span
            remaining = (deadline - now_ms()) / 1000.0 if deadline else self.settings.request_timeout_ms / 1000.0
            with self.span("onnx score", **{"fraudmesh.rows": len(partial.transactions)}):
                scores, probs, fstats = await self.scorer.score(
                    partial.transactions, timeout_s=remaining, headers=fheaders
                )
            compute_s = time.perf_counter() - t0
        finally:
            heartbeat.cancel()
        version = self.scorer.model.version
        self.m.compute_time.labels("total").observe(compute_s)
        timings = {"total_ms": round(compute_s * 1000.0, 3)}
        entity_counts = {}
        if fstats is not None:
            self.m.record_features(fstats)
            timings.update(redis_ms=round(fstats.redis_ms, 3), features_compute_ms=round(fstats.compute_ms, 3))
            entity_counts = {
                "entities": fstats.entities,
                "entities_from_cache": fstats.cache_hits,
                "entities_computed": fstats.computed,
            }
        observe = self.m.scores.labels(version).observe
        for p in probs.tolist():
            observe(p)
        result = PartialResult(
            request_id=partial.request_id,
            index=partial.index,
            scores=scores,
            worker_id=self.instance_id,
            model_version=version,
            deliveries=deliveries,
            queue_ms=queue_s * 1000.0,
            compute_ms=compute_s * 1000.0,
            timings_ms=timings,
            **entity_counts,
        )
        if reply_to:
            await self.nc.publish(reply_to, self.codec.encode(result), headers=self.outgoing_headers())
        await msg.ack()  # only after the result is on the wire: a crash before this means redelivery
        self.m.partials.labels("scored").inc()

    async def _failed(self, msg: Msg, headers: dict[str, str], deliveries: int, exc: Exception) -> None:
        assert self.js is not None
        reason = f"{type(exc).__name__}: {exc}"
        if deliveries < self.settings.max_deliver:
            self.m.partials.labels("retried").inc()
            self.log.warning("partial failed; will be retried", extra=log_fields(error=reason, deliveries=deliveries))
            with contextlib.suppress(Exception):
                await msg.nak(delay=min(0.1 * 2**deliveries, 2.0))
            return
        self.log.error("partial failed on its last delivery; dead-lettering", extra=log_fields(error=reason))
        dlq_headers = {k: v for k, v in headers.items() if k != subjects.HDR_MSG_ID}
        dlq_headers[subjects.HDR_DLQ_REASON] = reason[:500]
        with contextlib.suppress(Exception):
            await self.js.publish(subjects.DLQ_SUBJECT, msg.data, headers=dlq_headers)
        reply_to = headers.get(subjects.HDR_REPLY_TO)
        if reply_to:
            try:
                partial = self.codec.decode(msg.data, Partial)
                failed = PartialFailed(
                    request_id=partial.request_id,
                    index=partial.index,
                    reason=reason,
                    worker_id=self.instance_id,
                )
                await self.nc.publish(reply_to, self.codec.encode(failed))
            except Exception:
                self.log.error("dead-lettered partial is undecodable; its aggregator will time out")
        with contextlib.suppress(Exception):
            await msg.term()
        self.m.partials.labels("dead_lettered").inc()
        self.m.dead_lettered.inc()


class _Heartbeat:
    """Sends `in_progress` every `period` seconds while a partial is being scored, so JetStream does not
    redeliver it under us. A timer, not a task: most partials finish long before the first beat."""

    def __init__(self, msg: Msg, period: float) -> None:
        self._msg = msg
        self._period = period
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(period, self._beat)
        self._tasks: set[asyncio.Task[None]] = set()

    def _beat(self) -> None:
        task = self._loop.create_task(self._send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._handle = self._loop.call_later(self._period, self._beat)

    async def _send(self) -> None:
        with contextlib.suppress(Exception):
            await self._msg.in_progress()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
