"""`fraud.model.ops`: the operations on models that one inference worker (queue group) carries out for the
gateway's routes `POST /models/load`, `DELETE /models/{version}`, `POST /validate` and `POST /feature-importance`.

- load: this worker swaps to the version first (a version that does not load is refused and nothing changes), then
  writes the registry's `active` key, which every other worker follows; the gateway also broadcasts the activation
  on `fraud.model.control` so they swap at once.
- delete: refused for the version that is active (in the registry, or served by this worker) and for the A/B
  candidate; otherwise removed from the object store and the model dir.
- validate: the active model scores its shipped validation sample (inference_svc/validation.py).
- explain: per-input attributions and baseline predictions, from the active model's explainer (Scorer.attribute).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from inference_svc.artifact import ArtifactError, read_metadata
from inference_svc.model_manager import ModelManager
from inference_svc.registry import MODELS_BUCKET, Registry, RegistryError, local_active
from inference_svc.scorer import Scorer
from inference_svc.validation import validate
from shared.context import ServiceError
from shared.messages import FieldError
from shared.model_messages import (
    ActivateModel,
    DeleteModel,
    ExplainInputs,
    Explanation,
    LoadModel,
    ModelDeleted,
    ModelLoaded,
    ModelOps,
    RowExplanation,
    ValidateModel,
    ValidationReport,
)

MAX_EXPLAIN_ROWS = 100
"""Occlusion costs one model run per input group for every row: explanations are for a few inputs at a time."""


class ModelOpsEndpoint:
    """The handler of `fraud.model.ops` (`(request, ctx) -> reply`)."""

    def __init__(self, models: ModelManager, registry: Registry, instance_id: str) -> None:
        self.models = models
        self.registry = registry
        self.instance_id = instance_id

    async def __call__(
        self, req: ModelOps, _ctx: object
    ) -> ModelLoaded | ModelDeleted | ValidationReport | Explanation:
        if isinstance(req, LoadModel):
            return await self.load(req.version, req.kind)
        if isinstance(req, DeleteModel):
            return await self.delete(req.version)
        if isinstance(req, ValidateModel):
            return await self.validate(req.tolerance)
        return await self.explain(req)

    def active(self) -> Scorer:
        r = self.models.routing
        if r is None:
            raise ServiceError("unavailable", "This worker has no model loaded yet; retry shortly.", retryable=True)
        return r.active

    async def _exists(self, version: str) -> bool:
        try:
            return await self.registry.exists(version)
        except RegistryError as exc:
            raise ServiceError(
                "bad_request", str(exc), errors=[FieldError(path="$.version", message=str(exc))]
            ) from None
        except Exception as exc:
            raise ServiceError(
                "unavailable", f"The model registry cannot be read ({exc!r}); retry shortly.", retryable=True
            ) from None

    # ------------------------------------------------------------------------------------------ load
    async def load(self, version: str, kind: str = "") -> ModelLoaded:
        previous = self.active().model.version
        if self.models.pinned:
            raise ServiceError(
                "conflict",
                f"The inference workers are pinned to {self.models.pinned} (FRAUDMESH_MODEL_VERSION): they ignore "
                "activations. Unset it and restart them to load versions at run time.",
            )
        if not await self._exists(version):
            raise ServiceError("not_found", unknown_version(version, self.models.model_dir))
        if kind:
            try:
                meta = read_metadata(await self.registry.ensure_local(version) / "metadata.json")
            except (RegistryError, ArtifactError) as exc:
                raise ServiceError("bad_request", f"Model version {version!r} cannot be read: {exc}") from None
            if meta.kind != kind:
                raise ServiceError(
                    "bad_request",
                    f"Model version {version!r} is a {meta.kind!r} model, not {kind!r}: nothing changed.",
                    errors=[FieldError(path="$.model_type", message=f"{version} is {meta.kind!r}")],
                )
        state = await self.models.control(ActivateModel(version=version))
        if state.error or state.active != version:
            raise ServiceError(
                "bad_request",
                f"Model version {version!r} cannot be loaded, so nothing changed: {state.error or 'not activated'}",
                errors=[FieldError(path="$.version", message=state.error or "not activated")],
            )
        try:
            await self.registry.set_active(version)
        except Exception as exc:
            raise ServiceError(
                "unavailable",
                f"{version} is loaded on {self.instance_id}, but the registry's `active` key could not be written "
                f"({exc!r}), so other workers may not follow: retry the load.",
                retryable=True,
            ) from None
        meta = self.active().model.meta
        return ModelLoaded(
            version=version,
            previous=previous,
            kind=meta.kind,
            instance_id=self.instance_id,
            input_features=len(meta.feature_names),
        )

    # ---------------------------------------------------------------------------------------- delete
    async def delete(self, version: str) -> ModelDeleted:
        try:
            state = await self.registry.read_state()
        except Exception as exc:
            raise ServiceError(
                "unavailable", f"The model registry cannot be read ({exc!r}); retry shortly.", retryable=True
            ) from None
        r = self.models.routing
        active = {state.active or local_active(self.models.model_dir)}
        candidate = {state.candidate}
        if r is not None:
            active.add(r.active.model.version)
            if r.candidate is not None:
                candidate.add(r.candidate.model.version)
        if version in active:
            raise ServiceError(
                "conflict",
                f"Model version {version!r} is the active version: it cannot be deleted while it serves. Load "
                "another version first (POST /models/load), then delete this one.",
            )
        if version in candidate:
            raise ServiceError(
                "conflict",
                f"Model version {version!r} is the A/B candidate: it cannot be deleted while it may serve. Clear "
                "the candidate first (`fraudmesh model candidate --clear`), then delete it.",
            )
        if not await self._exists(version):
            raise ServiceError("not_found", unknown_version(version, self.models.model_dir))
        try:
            removed = await self.registry.delete(version)
        except Exception as exc:
            raise ServiceError(
                "unavailable", f"Deleting {version} failed part way ({exc!r}); retry the delete.", retryable=True
            ) from None
        return ModelDeleted(version=version, removed_from=removed)

    # -------------------------------------------------------------------------------------- validate
    async def validate(self, tolerance: float) -> ValidationReport:
        if not 0.0 <= tolerance <= 1.0:
            raise ServiceError(
                "bad_request",
                f"tolerance {tolerance} is not between 0 and 1",
                errors=[FieldError(path="$.tolerance", message="between 0 and 1")],
            )
        model = self.active().model
        base = self.models.model_dir / model.version
        report = await asyncio.to_thread(validate, model.meta, base, model.predict, tolerance)
        report.instance_id = self.instance_id
        return report

    # --------------------------------------------------------------------------------------- explain
    async def explain(self, req: ExplainInputs) -> Explanation:
        scorer = self.active()
        names = scorer.model.meta.feature_names
        n = len(req.transactions) + len(req.rows)
        if n == 0 or (req.transactions and req.rows):
            raise ServiceError("bad_request", "Send either transactions or rows of model inputs (1 or more), not both.")
        if n > MAX_EXPLAIN_ROWS:
            raise ServiceError(
                "payload_too_large",
                f"{n} inputs: at most {MAX_EXPLAIN_ROWS} are explained per request (split them).",
            )
        if req.transactions:
            x, _ = await scorer.inputs(req.transactions)
        else:
            x = rows_matrix(req.rows, names, scorer.occlusion is not None)
        a = await asyncio.to_thread(scorer.attribute, x)
        rows = [
            RowExplanation(
                prediction=round(float(a.predictions[i]), 6),
                baseline_prediction=round(float(a.baselines[i]), 6),
                attributions={name: round(float(v), 6) for name, v in zip(a.names, a.values[i].tolist(), strict=True)},
            )
            for i in range(x.shape[0])
        ]
        return Explanation(
            version=scorer.model.version, explainer=a.explainer, baseline=a.baseline, input_names=a.names, rows=rows
        )


def rows_matrix(rows: list[list[float | None]], names: list[str], unknown_ok: bool) -> np.ndarray:
    """Rows of model inputs as a float32 matrix; every problem is a FieldError at `$.features[i]`."""
    errors = []
    for i, row in enumerate(rows):
        if len(row) != len(names):
            errors.append(
                FieldError(
                    path=f"$.features[{i}]",
                    message=f"{len(row)} values; the active model takes {len(names)} inputs, in the order of "
                    "GET /model/features `feature_names` (or send transactions instead).",
                )
            )
            continue
        for j, v in enumerate(row):
            if v is None and not unknown_ok:
                errors.append(
                    FieldError(
                        path=f"$.features[{i}][{j}]",
                        message=f"null ({names[j]} unknown): this model is explained exactly (linear) and needs "
                        "every input.",
                    )
                )
            elif v is not None and not np.isfinite(v):
                errors.append(FieldError(path=f"$.features[{i}][{j}]", message="not a finite number"))
    if errors:
        raise ServiceError(
            "bad_request", f"The inputs are invalid: {len(errors)} problem(s); see `errors`.", errors=errors[:100]
        )
    return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float32)


def unknown_version(version: str, model_dir: Path) -> str:
    return (
        f"Model version {version!r} is unknown: it is neither published in the model registry (object store "
        f"bucket {MODELS_BUCKET}) nor present in the workers' model dir ({model_dir}). GET /models lists the "
        "versions that exist."
    )
