"""The inference worker actor: pulls partials from the shared durable JetStream consumer and scores them.

Delivery contract:
- a partial is acked only after its result has been published to the aggregator's inbox (same connection,
  so the server sees the result first); a worker that dies before acking gets its partial redelivered to
  another worker after `ack_wait`, and the aggregator counts each partial once;
- while a partial takes long, `in_progress` is sent every ack_wait/3 so it is not redelivered under us;
- a partial whose deadline has passed is terminated: its request was already answered as incomplete;
- a partial that fails on its last allowed delivery goes to the dead-letter stream, and its aggregator is told.

Models (inference_svc/registry.py): at start a worker serves FRAUDMESH_MODEL_VERSION when set (pinned), else the
KV's `active` version, else the local `<model_dir>/active` one, fetching a version from the object store when
its directory is not here. It then follows `fraud.model.control` (every worker hears it, and answers with its
state) and watches the KV, so a missed message is not fatal. A swap loads and builds the new Scorer completely
before it replaces one reference (`self.routing`); each partial picks its Scorer once, when it starts, so all
its transactions are scored by one version and partials in flight finish on the version they started with.
A/B: `routing.pick` sends a partial to the candidate when the hash of its request id and index falls below the
share, so a redelivered partial gets the same version.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import FetchTimeoutError
from opentelemetry.trace import SpanKind, Status, StatusCode

from feature_svc.definitions import FEATURE_SET_VERSION
from feature_svc.online import OnlineStore
from inference_svc.artifact import ArtifactError, active_version
from inference_svc.entity_features import EntityFeatureSource
from inference_svc.heartbeat import Heartbeat
from inference_svc.metrics import InferenceMetrics
from inference_svc.model import OnnxModel, load_model
from inference_svc.model_info import ModelInfoEndpoint
from inference_svc.registry import (
    STATE_KEYS,
    Registry,
    RegistryError,
    RegistryState,
    goes_to_candidate,
    is_local,
    local_active,
)
from inference_svc.scorer import ModelInputMismatch, Scorer
from shared import subjects
from shared.jetstream import ensure_inference_consumer, ensure_streams
from shared.logs import log_fields, request_id_var
from shared.messages import Partial, PartialFailed, PartialResult
from shared.model_messages import (
    ActivateModel,
    ClearCandidate,
    ModelControl,
    ModelInfoRequest,
    ModelWorkerState,
    SetCandidate,
)
from shared.service import Context, Service, StartupError, now_ms
from shared.settings import Settings
from shared.telemetry import extract, pass_through

try:  # the embeddings work adds this; a model without embeddings never needs it
    from inference_svc.embeddings import ensure_embeddings_loaded
except ImportError:  # pragma: no cover - until inference_svc/embeddings.py exists
    ensure_embeddings_loaded = None  # type: ignore[assignment]

KV_POLL_S = 15.0
"""Besides the KV watch, the worker re-reads the KV this often (a lost watch must not strand a worker)."""


class ModelLoadError(RuntimeError):
    """A model version could not be made ready; the worker keeps serving what it served."""


@dataclass(frozen=True)
class Routing:
    """Which Scorer serves a partial. Immutable: a swap builds a new Routing and replaces the reference."""

    active: Scorer
    candidate: Scorer | None = None
    share: float = 0.0

    def pick(self, request_id: str, index: int) -> Scorer:
        if self.candidate is not None and goes_to_candidate(request_id, index, self.share):
            return self.candidate
        return self.active

    def arm(self, scorer: Scorer) -> str:
        return "candidate" if scorer is self.candidate and scorer is not self.active else "active"


def embedding_spec(meta: Any) -> Any:
    """The model's embeddings declaration, or None (works before and after ModelMetadata has the field)."""
    fn = getattr(meta, "embedding_spec", None)
    if callable(fn):
        return fn()
    return getattr(meta, "embeddings", None)


class InferenceWorker(Service):
    name = "inference"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.m = InferenceMetrics(self)
        self.routing: Routing | None = None
        self.online: OnlineStore | None = None
        self.js: JetStreamContext | None = None
        self.model_registry: Registry | None = None
        self.model_dir = Path(settings.model_dir)
        self.pinned = settings.model_version
        self.target = RegistryState()
        """What the registry asks for: the KV's entries (with their revisions), updated by control messages."""
        self.swaps = 0
        self.last_model_error = ""
        self._swap_lock = asyncio.Lock()
        self._kv_changed = asyncio.Event()
        self._model_tasks: list[asyncio.Task[None]] = []
        self._watcher: Any = None
        self._pulling = True
        self._puller: asyncio.Task[None] | None = None
        self._psub: JetStreamContext.PullSubscription | None = None

    @property
    def scorer(self) -> Scorer | None:
        """The active version's Scorer."""
        return self.routing.active if self.routing is not None else None

    # ---------------------------------------------------------------------------------- models
    def load_model(self, version: str = "") -> OnnxModel:
        try:
            return load_model(self.model_dir, version or self.settings.model_version, self.settings.onnx_threads)
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

    async def prepare(self, version: str) -> Scorer:
        """Make `version` ready to serve: fetch it when it is not local, load it, load its embeddings, build its
        Scorer. Nothing changes for the partials being scored meanwhile."""
        t0 = time.perf_counter()
        if self.model_registry is not None:
            try:
                await self.model_registry.ensure_local(version)
            except RegistryError as exc:
                raise ModelLoadError(str(exc)) from None
        elif not is_local(self.model_dir, version):
            raise ModelLoadError(f"model version {version!r} is not in {self.model_dir}")
        try:
            # onnxruntime builds its session off the event loop: heartbeats and scoring go on meanwhile
            model = await asyncio.to_thread(load_model, self.model_dir, version, self.settings.onnx_threads)
        except ArtifactError as exc:
            raise ModelLoadError(str(exc)) from None
        if model.version != version:
            raise ModelLoadError(
                f"{self.model_dir / version / 'metadata.json'} says version {model.version!r}, not {version!r}: "
                f"a version's directory must carry its own name"
            )
        if embedding_spec(model.meta) is not None:
            if ensure_embeddings_loaded is None:
                raise ModelLoadError(f"model {version} declares entity embeddings, which this worker cannot load")
            try:
                await ensure_embeddings_loaded(self.settings.redis_url, self.model_dir, model.meta)
            except Exception as exc:
                raise ModelLoadError(f"embeddings of {version} were not loaded into Redis: {exc}") from None
        try:
            scorer = self.build_scorer(model)
        except StartupError as exc:
            raise ModelLoadError(str(exc)) from None
        self.log.info(
            "model ready",
            extra=log_fields(
                version=version, entity_features=scorer.entities is not None, seconds=round(time.perf_counter() - t0, 3)
            ),
        )
        return scorer

    async def _start_models(self) -> None:
        """The first routing: the pinned version, else the KV's active one, else the local `active` file."""
        assert self.model_registry is not None
        try:
            self.target = await self.model_registry.read_state()
        except Exception as exc:
            self.log.warning(
                "model registry unreadable at start; using the local model", extra=log_fields(error=repr(exc))
            )
        choices: list[tuple[str, str]] = []
        if self.pinned:
            choices.append((self.pinned, "FRAUDMESH_MODEL_VERSION"))
        else:
            if self.target.active:
                choices.append((self.target.active, "registry"))
            local = local_active(self.model_dir)
            if local and local != self.target.active:
                choices.append((local, f"{self.model_dir / 'active'}"))
        if not choices:
            try:
                active_version(self.model_dir)
            except ArtifactError as exc:
                raise StartupError(f"{exc} Or activate a published version: `fraudmesh model activate`.") from None
        errors: list[str] = []
        for version, source in choices:
            try:
                active = await self.prepare(version)
                break
            except ModelLoadError as exc:
                errors.append(f"{version} (from {source}): {exc}")
                self.log.error("model could not be loaded", extra=log_fields(version=version, error=str(exc)))
        else:
            raise StartupError("no model could be loaded: " + "; ".join(errors))
        candidate, share = None, 0.0
        want = self.target.candidate if self.target.candidate_share > 0 else ""
        if want and want != active.model.version:
            try:
                candidate, share = await self.prepare(want), self.target.candidate_share
            except ModelLoadError as exc:
                errors.append(f"candidate {want}: {exc}")
                self.m.swap_failures.inc()
        self.last_model_error = "; ".join(errors)
        self._set_routing(Routing(active, candidate, share), swapped=False)

    def _set_routing(self, routing: Routing, *, swapped: bool) -> None:
        self.routing = routing  # the switch: a partial that already picked its Scorer keeps it
        if swapped:
            self.swaps += 1
            self.m.swaps.inc()
        self.m.active_info.clear()
        self.m.active_info.labels(routing.active.model.version).set(1)
        self.m.candidate_share.clear()
        if routing.candidate is not None:
            self.m.candidate_share.labels(routing.candidate.model.version).set(routing.share)
        self.log.info(
            "model routing",
            extra=log_fields(
                active=routing.active.model.version,
                candidate=routing.candidate.model.version if routing.candidate is not None else "",
                share=routing.share,
                swaps=self.swaps,
            ),
        )

    def _loaded(self, version: str) -> Scorer | None:
        r = self.routing
        if r is None:
            return None
        if r.active.model.version == version:
            return r.active
        if r.candidate is not None and r.candidate.model.version == version:
            return r.candidate
        return None

    async def _converge(self) -> tuple[str, str]:
        """Bring the routing in line with `self.target`; returns (active error, candidate error), '' when fine.
        Whatever fails to load leaves that part of the routing as it was."""
        async with self._swap_lock:
            routing = self.routing
            assert routing is not None
            target = self.target
            active_error = candidate_error = ""
            active = routing.active
            want = target.active if target.active and not self.pinned else active.model.version
            if want != active.model.version:
                try:
                    active = self._loaded(want) or await self.prepare(want)
                except ModelLoadError as exc:
                    active_error = f"cannot activate {want}: {exc}"
                    self.m.swap_failures.inc()
            candidate, share = None, 0.0
            want = target.candidate if target.candidate_share > 0 else ""
            if want and want != active.model.version:
                try:
                    candidate, share = self._loaded(want) or await self.prepare(want), target.candidate_share
                except ModelLoadError as exc:
                    candidate_error = f"cannot use candidate {want}: {exc}"
                    self.m.swap_failures.inc()
                    if routing.candidate is not None and routing.candidate is not active:
                        candidate, share = routing.candidate, routing.share
            new = Routing(active, candidate, share)
            if new != routing:
                self._set_routing(new, swapped=new.active is not routing.active)
            self.last_model_error = "; ".join(e for e in (active_error, candidate_error) if e)
            if self.last_model_error:
                self.log.error("model change failed", extra=log_fields(error=self.last_model_error))
            return active_error, candidate_error

    def state(self, error: str = "") -> ModelWorkerState:
        r = self.routing
        return ModelWorkerState(
            instance_id=self.instance_id,
            active=r.active.model.version if r is not None else "",
            candidate=r.candidate.model.version if r is not None and r.candidate is not None else "",
            candidate_share=r.share if r is not None and r.candidate is not None else 0.0,
            pinned=bool(self.pinned),
            swaps=self.swaps,
            error=error,
        )

    async def _control(self, req: ModelControl, _ctx: Context) -> ModelWorkerState:
        """`fraud.model.control`: apply the request, answer with this worker's state. A request that cannot be
        applied (e.g. an unknown version) changes nothing and is answered with the reason."""
        before = self.target
        if isinstance(req, ActivateModel):
            self.target = replace(before, active=req.version)
        elif isinstance(req, SetCandidate):
            self.target = replace(before, candidate=req.version, candidate_share=req.share)
        elif isinstance(req, ClearCandidate):
            self.target = replace(before, candidate="", candidate_share=0.0)
        active_error, candidate_error = await self._converge()
        if isinstance(req, ActivateModel):  # (a pinned worker answers with `pinned` and its pinned version)
            if active_error:
                self.target = replace(self.target, active=before.active)
            return self.state(active_error)
        if isinstance(req, SetCandidate) and candidate_error:
            self.target = replace(self.target, candidate=before.candidate, candidate_share=before.candidate_share)
            return self.state(candidate_error)
        return self.state(self.last_model_error if not isinstance(req, ClearCandidate) else "")

    # ------------------------------------------------------------------------------ the KV
    def _note_kv(self, key: str, value: str, revision: int) -> bool:
        """Merge one KV entry into the target when it is newer than what we know of that key."""
        if key not in STATE_KEYS or revision <= self.target.revision(key):
            return False
        self.target = self.target.with_key(key, value, revision)
        return True

    async def _watch_kv(self) -> None:
        assert self.model_registry is not None
        while True:
            try:
                kv = await self.model_registry.state_kv()
                self._watcher = await kv.watchall()
                async for entry in self._watcher:
                    if entry is None:  # the end of the current values
                        continue
                    value = "" if entry.operation in ("DEL", "PURGE") else (entry.value or b"").decode()
                    if self._note_kv(entry.key, value, entry.revision or 0):
                        self._kv_changed.set()
                await asyncio.sleep(1.0)  # the watcher was stopped (reconnect trouble): start another
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.warning("model state watch failed; retrying", extra=log_fields(error=repr(exc)))
                await asyncio.sleep(2.0)

    async def _follow_kv(self) -> None:
        """Apply KV changes (debounced, so `candidate` and `candidate_share` written together apply together),
        and re-read the KV every KV_POLL_S in case the watch lost something."""
        assert self.model_registry is not None
        while True:
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kv_changed.wait(), timeout=KV_POLL_S)
                changed = self._kv_changed.is_set()
                if changed:
                    await asyncio.sleep(0.02)
                else:
                    for key, (value, revision) in (await self.model_registry.read_entries()).items():
                        changed |= self._note_kv(key, value, revision)
                self._kv_changed.clear()
                if changed or self.last_model_error:
                    await self._converge()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.warning("model state check failed", extra=log_fields(error=repr(exc)))
                await asyncio.sleep(2.0)

    # ---------------------------------------------------------------------------------- lifecycle
    def health_details(self) -> dict[str, str]:
        r = self.routing
        details = {"model_version": r.active.model.version if r is not None else ""}
        if r is not None and r.candidate is not None:
            details["model_candidate"] = r.candidate.model.version
            details["model_candidate_share"] = str(r.share)
        if self.last_model_error:
            details["model_last_error"] = self.last_model_error[:200]
        scorer = self.scorer
        if scorer is not None:
            details["entity_features"] = "on" if scorer.entities is not None else "off"
            if scorer.entities is not None and scorer.entities.last_error:
                details["feature_service_last_error"] = scorer.entities.last_error[:200]
        return details

    async def on_stop(self) -> None:
        if self.online is not None:
            await self.online.close()

    async def on_start(self) -> None:
        self.js = self.nc.jetstream(timeout=5.0)
        self.model_registry = Registry(self.js, self.model_dir, replicas=self.settings.stream_replicas)
        await self._start_models()  # needs the NATS connection (registry, features.compute)
        self.endpoint(subjects.MODEL_CONTROL, ModelControl, self._control, concurrency=4, name="model_control")
        info = ModelInfoEndpoint(
            lambda: self.routing, self.model_registry, self.model_dir, self.instance_id, bool(self.pinned)
        )
        self.endpoint(subjects.MODEL_INFO, ModelInfoRequest, info, queue=subjects.QUEUE_INFERENCE, name="model_info")
        self._model_tasks = [asyncio.create_task(self._watch_kv()), asyncio.create_task(self._follow_kv())]
        await ensure_streams(self.js, self.settings)
        await ensure_inference_consumer(self.js, self.settings)
        psub = await self.js.pull_subscribe_bind(durable=subjects.INFERENCE_CONSUMER, stream=subjects.PARTIALS_STREAM)
        self._psub = psub
        self._puller = asyncio.create_task(self._pull_loop(psub))

    async def before_drain(self) -> None:
        self._pulling = False
        for task in self._model_tasks:
            task.cancel()
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()
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
        assert self.routing is not None and self.js is not None
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
        routing = self.routing
        assert routing is not None
        if deliveries > 1:
            self.m.redeliveries.inc()
        deadline = float(headers.get(subjects.HDR_DEADLINE, "0") or 0)
        if deadline and now_ms() > deadline:
            self.m.partials.labels("expired").inc()
            await msg.term()  # its request was already answered as incomplete
            return
        reply_to = headers.get(subjects.HDR_REPLY_TO)
        partial = self.codec.decode(msg.data, Partial)
        # the one place a partial meets a model version: every transaction of it is scored by this Scorer, even
        # when a swap happens meanwhile; a redelivery of the partial picks the same version (hash of rid:index)
        scorer = routing.pick(partial.request_id, partial.index)
        queue_s = max(0.0, time.time() - partial.enqueued_at / 1000.0) if partial.enqueued_at else 0.0
        self.m.queue_time.observe(queue_s)
        heartbeat = Heartbeat(msg, self.settings.ack_wait_s / 3.0)
        try:
            t0 = time.perf_counter()
            if self.settings.chaos_inference_delay_ms:
                await asyncio.sleep(self.settings.chaos_inference_delay_ms / 1000.0)
            fheaders = {subjects.HDR_DEADLINE: headers.get(subjects.HDR_DEADLINE, "")} if deadline else {}
            if not self.tracing:
                pass_through(headers, fheaders)  # when tracing, the feature source injects its own span
            remaining = (deadline - now_ms()) / 1000.0 if deadline else self.settings.request_timeout_ms / 1000.0
            with self.span("onnx score", **{"fraudmesh.rows": len(partial.transactions)}):
                scores, probs, fstats = await scorer.score(partial.transactions, timeout_s=remaining, headers=fheaders)
            compute_s = time.perf_counter() - t0
        finally:
            heartbeat.cancel()
        version = scorer.model.version
        self.m.model_partials.labels(version, routing.arm(scorer)).inc()
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
