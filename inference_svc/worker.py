"""The inference worker actor: wiring of its models (inference_svc/model_manager.py) to NATS, and the scoring
of the partials it pulls from the shared durable JetStream consumer.

Delivery contract (the consumer of the service base, shared/consumer.py, carries it out):
- a partial is acked only after its result has been published to the aggregator's inbox (same connection,
  so the server sees the result first); a worker that dies before acking gets its partial redelivered to
  another worker after `ack_wait`, and the aggregator counts each partial once;
- while a partial takes long, `in_progress` is sent every ack_wait/3 so it is not redelivered under us;
- a partial whose deadline has passed is terminated unscored: its request was already answered as incomplete;
- a partial that cannot be decoded is dead-lettered at once; one that fails on a dependency (Redis, NATS) is
  retried with backoff and never dead-lettered; one that fails otherwise on its last allowed delivery is
  dead-lettered; in both dead-letter cases its aggregator is told (shared/jetstream.py `partials_policy`).

Models: the manager serves the pinned, registry or local version and follows `fraud.model.control` (every worker
hears it and answers with its state; `ReloadModels` reloads the one it names) and the registry's KV (watched
through the base, and re-read every KV_POLL_S), so a missed message is not fatal. `fraud.model.ops` (one worker
of the queue group): load, delete, validate, explain (inference_svc/model_ops.py).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from nats.js.kv import KeyValue

from feature_svc.definitions import FEATURE_SET_VERSION
from feature_svc.online import OnlineStore
from inference_svc.entity_features import EntityFeatureSource
from inference_svc.metrics import InferenceMetrics
from inference_svc.model import OnnxModel
from inference_svc.model_info import ModelInfoEndpoint
from inference_svc.model_manager import ModelLoadError, ModelManager, NoModel
from inference_svc.model_ops import ModelOpsEndpoint
from inference_svc.personalization.endpoint import Personalization, attach, model_dir_of
from inference_svc.registry import Registry
from inference_svc.scorer import ModelInputMismatch, Scorer
from shared import subjects
from shared.jetstream import ensure_inference_consumer, ensure_streams, partials_policy
from shared.messages import Partial, PartialResult
from shared.model_messages import ModelControl, ModelInfoRequest, ModelOps, ModelWorkerState
from shared.probes import Probes
from shared.service import Context, Delivery, Poison, Service, StartupError
from shared.settings import Settings
from shared.telemetry import MODEL_FAMILY, label_family, pass_through


class InferenceWorker(Service):
    name = "inference"
    description = "fraudmesh inference worker: scores partial batches with the active model (and the A/B candidate)"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.m = InferenceMetrics(self.registry)
        self.online: OnlineStore | None = None
        self.models = ModelManager(
            model_dir=Path(settings.model_dir),
            build=self.build_scorer,
            metrics=self.m,
            pinned=settings.model_version,
            onnx_threads=settings.onnx_threads,
            instance_id=self.instance_id,
        )
        self._follower: asyncio.Task[None] | None = None
        self.probes = Probes({})
        self.personalization: Personalization | None = None  # the second model family (personalization/)

    @property
    def scorer(self) -> Scorer | None:
        """The active version's Scorer."""
        r = self.models.routing
        return r.active if r is not None else None

    # ---------------------------------------------------------------------------------- models
    def build_scorer(self, model: OnnxModel) -> Scorer:
        source = None
        if self.settings.entity_features != "off":
            if self.online is None:
                self.online = OnlineStore.from_url(
                    self.settings.redis_url, version=FEATURE_SET_VERSION, ttl_s=self.settings.feature_ttl_s
                )
            source = EntityFeatureSource(
                self.online,
                self.nc,
                max_age_s=self.settings.feature_max_age_s,
                span=self.span,
                producer_span=self.producer_span,
                # only the model's columns are read, unless every entity feature is asked for
                wanted=None if self.settings.entity_features == "always" else model.meta.feature_names,
            )
        try:
            return Scorer(model, source, always_fetch=self.settings.entity_features == "always")
        except ModelInputMismatch as exc:
            raise ModelLoadError(str(exc)) from None

    async def _control(self, req: ModelControl, _ctx: Context) -> ModelWorkerState:
        """`fraud.model.control`: apply the request, answer with this worker's state."""
        return await self.models.control(req)

    async def _on_kv_entry(self, entry: KeyValue.Entry, _ctx: Context) -> None:
        value = "" if entry.operation in ("DEL", "PURGE") else (entry.value or b"").decode()
        self.models.note_kv(entry.key, value, entry.revision or 0)
        if self.personalization is not None:  # its `personalization.*` keys (the fraud manager ignores them)
            await self.personalization.on_kv(entry.key, value)

    # ---------------------------------------------------------------------------------- lifecycle
    def on_settings(self, settings: Settings) -> None:
        """The freshness bound of entity features, for the scorers loaded now (new ones read `self.settings`)."""
        r = self.models.routing
        for scorer in (r.active, r.candidate) if r is not None else ():
            source = scorer.entities if scorer is not None else None
            if source is not None:
                source.max_age_s = settings.feature_max_age_s

    def health_details(self) -> dict[str, str]:
        details = {**self.models.health_details(), **self.probes.details()}
        scorer = self.scorer
        if scorer is not None:
            details["entity_features"] = "on" if scorer.entities is not None else "off"
            if scorer.entities is not None and scorer.entities.last_error:
                details["feature_service_last_error"] = scorer.entities.last_error[:200]
        return details

    async def on_start(self) -> None:
        js = self.nc.jetstream(timeout=5.0)
        registry = Registry(js, self.models.model_dir, replicas=self.settings.stream_replicas)
        self.models.source = registry
        try:
            await self.models.start()  # needs the NATS connection (registry, features.compute)
        except NoModel as exc:
            raise StartupError(str(exc)) from None
        self.endpoint(subjects.MODEL_CONTROL, ModelControl, self._control, concurrency=4, name="model_control")
        info = ModelInfoEndpoint(
            lambda: self.models.routing, registry, self.models.model_dir, self.instance_id, bool(self.models.pinned)
        )
        self.endpoint(subjects.MODEL_INFO, ModelInfoRequest, info, queue=subjects.QUEUE_INFERENCE, name="model_info")
        ops = ModelOpsEndpoint(self.models, registry, self.instance_id)
        self.endpoint(
            subjects.MODEL_OPS, ModelOps, ops, queue=subjects.QUEUE_INFERENCE, concurrency=2, name="model_ops"
        )
        self.kv_watch(subjects.MODEL_STATE_BUCKET, self._on_kv_entry, registry.state_kv, name="model_state")
        self._follower = asyncio.create_task(self.models.follow())
        if self.online is not None:
            self.probes = Probes({"redis": self.online.ping})
            self.probes.start()
        await ensure_streams(js, self.settings)
        await ensure_inference_consumer(js, self.settings)
        self.consumer(
            name="partials",
            stream=subjects.PARTIALS_STREAM,
            durable=subjects.INFERENCE_CONSUMER,
            message_type=Partial,
            handler=self._score_partial,
            concurrency=self.settings.inference_concurrency,
            policy=partials_policy(self.settings, self.instance_id),
        )
        # personalization.score + its model control; its versions in the same registry (family keys of the same KV)
        family = Registry(js, model_dir_of(self.settings), self.settings.stream_replicas, family="personalization")
        self.personalization = await attach(self, family)

    async def on_stop(self) -> None:
        await self.probes.stop()
        if self._follower is not None:
            self._follower.cancel()
        if self.online is not None:
            await self.online.close()
        if self.personalization is not None:
            await self.personalization.close()

    # ---------------------------------------------------------------------------------- scoring
    async def _score_partial(self, partial: Partial, delivery: Delivery) -> None:
        """Score one partial and publish its result; the base acks it when this returns (shared/consumer.py)."""
        label_family(partial.family)
        if partial.family != "fraud":
            raise Poison(
                f"partial {partial.request_id}:{partial.index} is of model family {partial.family!r}; partials are "
                "fraud's (a personalization request goes whole to personalization.score)"
            )
        routing = self.models.routing
        assert routing is not None
        if delivery.deliveries > 1:
            self.m.redeliveries.inc()
        headers = delivery.headers
        reply_to = headers.get(subjects.HDR_REPLY_TO)
        # the one place a partial meets a model version: every transaction of it is scored by this Scorer, even
        # when a swap happens meanwhile; a redelivery of the partial picks the same version (hash of rid:index)
        scorer = routing.pick(partial.request_id, partial.index)
        queue_s = max(0.0, time.time() - partial.enqueued_at / 1000.0) if partial.enqueued_at else 0.0
        self.m.queue_time.observe(queue_s)
        t0 = time.perf_counter()
        if self.settings.chaos_inference_delay_ms:
            await asyncio.sleep(self.settings.chaos_inference_delay_ms / 1000.0)
        fheaders = {subjects.HDR_DEADLINE: headers[subjects.HDR_DEADLINE]} if delivery.has_deadline else {}
        if not self.tracing:
            pass_through(headers, fheaders)  # when tracing, the feature source injects its own span
        remaining = delivery.remaining_s() if delivery.has_deadline else self.settings.request_timeout_ms / 1000.0
        stages: dict[str, float] = {}
        with self.span("onnx score", **{"fraudmesh.rows": len(partial.transactions), MODEL_FAMILY: partial.family}):
            scores, probs, fstats = await scorer.score(
                partial.transactions, timeout_s=remaining, headers=fheaders, timings=stages
            )
        compute_s = time.perf_counter() - t0
        version = scorer.model.version
        self.m.model_partials.labels(version, routing.arm(scorer)).inc()
        self.m.compute_time.labels("total").observe(compute_s)
        timings = {"total_ms": round(compute_s * 1000.0, 3)}
        for key, ms in stages.items():  # the stages of Scorer.score (scorer.STAGES), as hop histograms too
            self.m.compute_time.labels(key.removesuffix("_ms")).observe(ms / 1000.0)
            timings[key] = round(ms, 3)
        entity_counts = {}
        if fstats is not None:
            self.m.record_features(fstats)
            timings["redis_ms"] = timings["read_ms"]  # the name earlier releases reported
            entity_counts = {
                "entities": fstats.entities,
                "entities_from_cache": fstats.cache_hits,
                "entities_computed": fstats.computed,
            }
        self.m.observe_scores(version, probs)
        result = PartialResult(
            request_id=partial.request_id,
            index=partial.index,
            scores=scores,
            worker_id=self.instance_id,
            model_version=version,
            family=partial.family,
            deliveries=delivery.deliveries,
            queue_ms=queue_s * 1000.0,
            compute_ms=compute_s * 1000.0,
            timings_ms=timings,
            **entity_counts,
        )
        if reply_to:
            # only after the result is on the wire is the partial acked: a crash before means redelivery
            with self.producer_span(subjects.RESULTS_PREFIX, f"{partial.request_id}:{partial.index}"):
                await self.nc.publish(reply_to, self.codec.encode(result), headers=self.outgoing_headers())
        self.m.partials.labels("scored").inc()
