"""The personalization family on an inference worker: `personalization.score` (queue group `inference`) and
`personalization.model.info` (queue group) and `personalization.model.control` (every worker). `attach(service)`
registers them on the service base from the
worker's `on_start`; the fraud routes are untouched, and a worker without a personalization model still starts
(its personalization requests are answered `unavailable`, naming the directory to fill).

The family's versions live in the same registry as fraud's (inference_svc/registry.py, family `personalization`:
KV key `personalization.active`, versions fetched from the object store into the family's directory). A worker
serves the registry's active version when there is one (else its directory's `active` file) and follows the key
(KV watch): a restarted worker serves what was activated, `fraudmesh model activate --family personalization`
swaps every worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from feature_svc.online import OnlineStore
from feature_svc.world.personalization.online import store as online_store
from inference_svc.personalization.artifact import PersonalizationModelError, active_version, load, versions
from inference_svc.personalization.metrics import FAMILY, PersonalizationMetrics
from inference_svc.personalization.scorer import PersonalizationScorer
from inference_svc.registry import (
    KEY_ACTIVE,
    KEY_CANDIDATE,
    KEY_SHARE,
    Registry,
    RegistryError,
    goes_to_candidate,
    parse_share,
    state_key,
)
from shared import subjects
from shared.personalization_messages import (
    PersonalizationModelControl,
    PersonalizationModelInfo,
    PersonalizationModelInfoRequest,
    PersonalizationModelState,
    PersonalizationScoreReply,
    PersonalizationScoreRequest,
)
from shared.service import Context, Service, ServiceError
from shared.settings import Settings
from shared.telemetry import MODEL_FAMILY, label_family

SpanFactory = Callable[..., contextlib.AbstractContextManager[Any]]


def _no_span(_name: str, **_attributes: Any) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext(None)


FAMILY_KEY = state_key(FAMILY, KEY_ACTIVE)
CANDIDATE_KEY = state_key(FAMILY, KEY_CANDIDATE)
SHARE_KEY = state_key(FAMILY, KEY_SHARE)


def model_dir_of(settings: Settings) -> Path:
    return Path(settings.personalization_model_dir or f"{settings.model_dir.rstrip('/')}-personalization")


class Personalization:
    """The served personalization version of one worker, and its endpoints."""

    def __init__(
        self,
        settings: Settings,
        instance_id: str,
        metrics: PersonalizationMetrics,
        registry: Registry | None = None,
        span: SpanFactory | None = None,
    ) -> None:
        self.settings = settings
        self.span: SpanFactory = span or _no_span
        """Child spans of the current one (the service's `span`; none in tests of the scorer)."""
        self.registry = registry
        """The family's view of the model registry (None: the directory alone, as in tests of the scorer)."""
        self.m = metrics
        self.instance_id = instance_id
        self.model_dir = model_dir_of(settings)
        self.store: OnlineStore = online_store(settings.redis_url, settings.feature_ttl_s)
        self.scorer: PersonalizationScorer | None = None
        self.candidate: PersonalizationScorer | None = None
        """A/B: the registry's `personalization.candidate`, scoring `share` of the requests (by request id)."""
        self.share = 0.0
        self.error = ""
        self._swap = asyncio.Lock()

    async def activate(self, version: str) -> None:
        async with self._swap:
            model = await asyncio.to_thread(load, self.model_dir, version, self.settings.onnx_threads)
            self.m.served(self.scorer.model.version if self.scorer is not None else None, model.version)
            # no max age: nothing recomputes these rows on the scoring path (they are as fresh as their last load,
            # which each reply reports in feature_freshness_sec); another feature-set version is still refused
            self.scorer = PersonalizationScorer(model, self.store, None)
            self.error = ""

    async def set_candidate(self, version: str) -> None:
        """Load the A/B candidate ("" clears it)."""
        if not version:
            self.candidate = None
            return
        await self.fetch(version)
        model = await asyncio.to_thread(load, self.model_dir, version, self.settings.onnx_threads)
        self.candidate = PersonalizationScorer(model, self.store, None)

    def pick(self, request_id: str) -> PersonalizationScorer | None:
        """The scorer of one request: the candidate for `share` of the request ids (the same id, the same arm)."""
        candidate = self.candidate
        if candidate is not None and goes_to_candidate(request_id, 0, self.share):
            return candidate
        return self.scorer

    async def fetch(self, version: str) -> None:
        """Make `version` local: fetched from the registry's object store when the directory lacks it."""
        if version in versions(self.model_dir) or self.registry is None:
            return
        await self.registry.ensure_local(version)

    async def known_versions(self) -> list[str]:
        """The versions this worker could serve: its directory's and the family's published ones."""
        found = set(versions(self.model_dir))
        if self.registry is not None:
            with contextlib.suppress(Exception):  # no bucket yet, or NATS away: the local ones still count
                found.update(m.version for m in await self.registry.published())
        return sorted(found)

    async def start(self) -> None:
        """Serve the registry's active version of the family, else the directory's `active` one."""
        version, source = active_version(self.model_dir), f"{self.model_dir}/active"
        if self.registry is not None:
            try:
                state = await self.registry.read_state()
            except Exception as exc:  # the registry unreadable: the local model will do
                self.error = f"registry unreadable ({exc!r})"
            else:
                if state.active:
                    version, source = state.active, f"the registry's {FAMILY_KEY}"
                self.share = state.candidate_share
                if state.candidate:
                    try:
                        await self.set_candidate(state.candidate)
                    except (PersonalizationModelError, RegistryError) as exc:
                        self.error = f"cannot load the candidate {state.candidate!r}: {exc}"
        if version is None:
            self.error = f"no personalization model in {self.model_dir} (no `active` file) nor in the registry"
            return
        try:
            await self.fetch(version)
            await self.activate(version)
        except (PersonalizationModelError, RegistryError) as exc:
            self.error = f"cannot serve {version!r} ({source}): {exc}"

    async def on_kv(self, key: str, value: str) -> None:
        """A `personalization.*` key of the registry moved: serve the new active version (one this worker cannot
        load leaves the served one in place, with the reason in `error`), load or clear the A/B candidate, or take
        the new candidate share."""
        if key == SHARE_KEY:
            self.share = parse_share(value)
            return
        if key == CANDIDATE_KEY:
            try:
                await self.set_candidate(value)
            except (PersonalizationModelError, RegistryError) as exc:
                self.error = f"cannot load the candidate {value!r} ({CANDIDATE_KEY}): {exc}"
            return
        if key != FAMILY_KEY or not value:
            return
        if self.scorer is not None and self.scorer.model.version == value:
            return
        try:
            await self.fetch(value)
            await self.activate(value)
        except (PersonalizationModelError, RegistryError) as exc:
            self.error = f"cannot serve {value!r} (the registry's {FAMILY_KEY}): {exc}"

    async def close(self) -> None:
        await self.store.close()

    def state(self, error: str = "") -> PersonalizationModelState:
        return PersonalizationModelState(
            worker_id=self.instance_id,
            version=self.scorer.model.version if self.scorer is not None else "",
            versions=versions(self.model_dir),
            error=error,
        )

    async def score(self, req: PersonalizationScoreRequest, ctx: Context) -> PersonalizationScoreReply:
        label_family(FAMILY)
        scorer = self.pick(req.request_id or ctx.request_id)  # one version for the whole request, whatever happens
        if scorer is None:
            raise ServiceError(
                "unavailable",
                f"The personalization model family is not loaded on this worker: {self.error}. Train one "
                f"(`python -m trainer.personalization --out {self.model_dir}`) and activate it.",
                retryable=False,
            )
        ctx.check_deadline("personalization: before scoring")
        with self.span("onnx score", **{"fraudmesh.rows": len(req.items), MODEL_FAMILY: FAMILY}):
            scores = await scorer.score(req.items)
        version = scorer.model.version
        self.m.pairs.labels(FAMILY, version).inc(len(scores))
        observe = self.m.relevance.labels(version).observe
        for s in scores:
            observe(s.relevance_score)
        return PersonalizationScoreReply(
            request_id=req.request_id or ctx.request_id,
            scores=scores,
            model_version=scorer.model.version,
            worker_id=self.instance_id,
        )

    async def info(self, _req: PersonalizationModelInfoRequest, _ctx: Context) -> PersonalizationModelInfo:
        scorer = self.scorer
        meta = scorer.model.metadata if scorer is not None else {}
        metrics = meta.get("metrics", {})
        return PersonalizationModelInfo(
            version=scorer.model.version if scorer is not None else "",
            kind=str(meta.get("kind", "")),
            created_at=str(meta.get("created_at", "")),
            metrics={str(k): float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
            versions=await self.known_versions(),
            worker_id=self.instance_id,
        )

    async def control(self, req: PersonalizationModelControl, _ctx: Context) -> PersonalizationModelState:
        if not req.version:
            return self.state(self.error)
        try:
            await self.fetch(req.version)
        except RegistryError as exc:
            return self.state(f"version {req.version!r} is neither in {self.model_dir} nor fetchable: {exc}")
        if req.version not in versions(self.model_dir):
            return self.state(f"version {req.version!r} is not in {self.model_dir}")
        try:
            await self.activate(req.version)
        except PersonalizationModelError as exc:
            return self.state(str(exc))
        return self.state()


async def attach(service: Service, registry: Registry | None = None) -> Personalization:
    """Load the active personalization version (the registry's, else the directory's) and register its endpoints on
    `service`; with a registry, follow its `personalization.active` key."""
    p = Personalization(
        service.settings, service.instance_id, PersonalizationMetrics(service.registry), registry, service.span
    )
    await p.start()
    service.endpoint(
        subjects.PERSONALIZATION_SCORE,
        PersonalizationScoreRequest,
        p.score,
        queue=subjects.QUEUE_INFERENCE,
        name="personalization_score",
    )
    service.endpoint(
        subjects.PERSONALIZATION_MODEL_INFO,
        PersonalizationModelInfoRequest,
        p.info,
        queue=subjects.QUEUE_INFERENCE,
        concurrency=2,
        name="personalization_model_info",
    )
    service.endpoint(
        subjects.PERSONALIZATION_MODEL_CONTROL,
        PersonalizationModelControl,
        p.control,
        concurrency=2,
        name="personalization_model_control",
    )
    return p
