"""`fraud.model.info`: what this worker serves (active and A/B candidate, with their metadata) and every version it
could serve (published in the registry's object store, or present in its model dir). Read only; one worker of the
queue group answers. The gateway's `/models`, `/model/metadata`, `/model/features` and OIP metadata ask here."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import msgspec

from inference_svc.artifact import ModelMetadata
from inference_svc.registry import Registry
from shared.model_messages import ModelInfo, ModelInfoRequest, ModelSummary
from shared.service import ServiceError

FAMILY = "fraud"


class _Scorer(Protocol):
    @property
    def model(self) -> Any: ...


class _Routing(Protocol):
    @property
    def active(self) -> Any: ...

    @property
    def candidate(self) -> Any: ...

    @property
    def share(self) -> float: ...


def summary(meta: ModelMetadata) -> ModelSummary:
    return ModelSummary(
        version=meta.version,
        kind=meta.kind,
        created_at=meta.created_at,
        feature_names=list(meta.feature_names),
        thresholds=msgspec.to_builtins(meta.thresholds),
        metrics=dict(meta.metrics),
        training={k: v for k, v in meta.training.items() if k != "embeddings"},
    )


def local_versions(model_dir: Path) -> set[str]:
    return {p.parent.name for p in model_dir.glob("*/metadata.json") if (p.parent / "model.onnx").exists()}


async def published_versions(registry: Registry | None, model_dir: Path) -> list[str]:
    """Versions of the registry's family with a manifest in the object store, and complete ones in the model dir."""
    found = await asyncio.to_thread(local_versions, model_dir)
    if registry is not None:
        with contextlib.suppress(Exception):  # no bucket yet, or nothing published: the local ones still count
            found.update(m.version for m in await registry.published())  # the registry's family only
    return sorted(found)


class ModelInfoEndpoint:
    """The handler of `fraud.model.info` (`(request, ctx) -> ModelInfo`)."""

    def __init__(
        self,
        routing: Callable[[], _Routing | None],
        registry: Registry | None,
        model_dir: Path,
        instance_id: str,
        pinned: bool,
    ) -> None:
        self.routing = routing
        self.registry = registry
        self.model_dir = model_dir
        self.instance_id = instance_id
        self.pinned = pinned

    async def __call__(self, req: ModelInfoRequest, _ctx: object) -> ModelInfo:
        if req.family != FAMILY:
            raise ServiceError(
                "not_found", f"Model family {req.family!r} is not served by this fleet; it serves {FAMILY!r}."
            )
        r = self.routing()
        if r is None:
            raise ServiceError("unavailable", "This worker has no model loaded yet; retry shortly.", retryable=True)
        candidate = r.candidate if r.candidate is not None and r.candidate is not r.active else None
        return ModelInfo(
            family=FAMILY,
            instance_id=self.instance_id,
            active=summary(r.active.model.meta),
            candidate=summary(candidate.model.meta) if candidate is not None else None,
            candidate_share=r.share if candidate is not None else 0.0,
            versions=await published_versions(self.registry, self.model_dir),
            pinned=self.pinned,
        )
