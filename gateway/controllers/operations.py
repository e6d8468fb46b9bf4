"""Seed 004's operations routes, over NATS like every route:

- admin (an FRAUDMESH_ADMIN_API_KEYS key whenever API keys are configured: `admin_key_guard`):
  `POST /models/load` (one inference worker swaps and writes the registry's `active` on `fraud.model.ops`, then every
  worker is asked to swap on `fraud.model.control`), `DELETE /models/{version}` (409 for the active version and
  the A/B candidate), `POST /validate` (the active model scores its shipped validation sample) and `POST /restart`
  (a rolling reload: one worker at a time, each after the previous one answered, so scoring never stops);
- `POST /feature-importance` (an API route): per-input attributions and the baseline prediction, from the active
  model's explainer.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, post
from litestar.params import Parameter

from gateway.bridge import BridgeError, NatsBridge
from gateway.compression import GZIP
from gateway.controllers.models import READ_ONLY
from gateway.envelope import decode_envelope, decode_transactions, json_body
from gateway.openapi_spec import body_operation_of, error_responses
from gateway.ops_schemas import (
    VERSION_PATTERN,
    VERSION_RE,
    WHERE,
    FeatureImportanceRequest,
    FeatureImportanceResponse,
    InputAttribution,
    MetricCheckView,
    ModelDeleteResponse,
    ModelInputInfo,
    ModelLoadRequest,
    ModelLoadResponse,
    RestartResponse,
    Row,
    ValidateResponse,
    WorkerModel,
    WorkerReload,
)
from gateway.schemas import StrictTransaction
from gateway.seed_schemas import SEED_TRANSACTION
from gateway.validation import BodyError
from shared.messages import ErrorReply, FieldError, field_error_of
from shared.model_messages import (
    ActivateModel,
    DeleteModel,
    ExplainInputs,
    Explanation,
    LoadModel,
    ModelDeleted,
    ModelLoaded,
    ModelStatus,
    ReloadModels,
    ValidateModel,
    ValidationReport,
)
from shared.settings import Settings

ADMIN_ERRORS = error_responses(401, 429, 503, 504)
_load = msgspec.json.Decoder(ModelLoadRequest)
_importance = msgspec.json.Decoder(FeatureImportanceRequest[msgspec.Raw])
_row = msgspec.json.Decoder(list[float | None])


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _bad(path: str, message: str) -> BodyError:
    return BodyError([FieldError(path=path, message=message)], "The request is invalid: 1 problem; see `errors`.")


def load_target(body: ModelLoadRequest) -> str:
    """The version a load names: `version`, or the last path component of `model_path`."""
    if (body.version is None) == (body.model_path is None):
        raise _bad("$", "Name the version to load with `version` (or seed 004's `model_path`), exactly one of them.")
    if body.version is not None:
        return body.version
    assert body.model_path is not None
    name = body.model_path.rstrip("/").rsplit("/", 1)[-1]
    if not VERSION_RE.match(name):
        raise _bad("$.model_path", f"its last component {name!r} is not a model version name (GET /models lists them)")
    return name


class ModelAdminController(Controller):
    """Admin routes; app.py mounts them behind `admin_key_guard`."""

    dependencies = READ_ONLY
    middleware = [GZIP]
    tags = ["operations"]

    @post(
        "/models/load",
        operation_id="loadModel",
        operation_class=body_operation_of(
            ModelLoadRequest,
            {"model_path": "models/bootstrap-20261201-000000", "model_type": "logistic_regression"},
        ),
        summary="Activate a registry version: hot swap on every inference worker (admin)",
        status_code=200,
        responses={**ADMIN_ERRORS, **error_responses(400, 404, 409, 413, 415)},
    )
    async def load(self, request: Request[Any, Any, Any], bridge: NatsBridge, request_id: str) -> ModelLoadResponse:
        """The version must exist in the registry (object store) or the workers' model dir (404 otherwise) and
        load (400 otherwise); then it becomes the registry's `active` version and every worker swaps to it, the
        partials in flight finishing on the version they started with."""
        body = decode_envelope(await json_body(request), _load)
        version = load_target(body)
        loaded = await bridge.model_ops(LoadModel(version=version, kind=body.model_type or ""), request_id)
        assert isinstance(loaded, ModelLoaded)
        states = await bridge.model_control(
            ActivateModel(version=version), request_id, expect=await bridge.inference_workers()
        )
        workers = [
            WorkerModel(instance_id=w.instance_id, active=w.active, candidate=w.candidate, error=w.error)
            for w in states
        ]
        behind = [w.instance_id for w in workers if w.active != version]
        message = (
            f"Model {version} loaded; every worker ({len(workers)}) serves it (was {loaded.previous})."
            if not behind
            else f"Model {version} is active in the registry, but {', '.join(behind)} still serve another version "
            "(see `error`); they follow the registry within seconds."
        )
        return ModelLoadResponse(
            success=not behind,
            message=message,
            version=version,
            previous_version=loaded.previous,
            model_type=loaded.kind,
            model_info=ModelInputInfo(input_features=loaded.input_features, output_shape=[1]),
            workers=workers,
            timestamp=utc_now(),
        )

    @delete(
        "/models/{version:str}",
        operation_id="deleteModel",
        summary="Remove a model version that is neither active nor the A/B candidate (admin)",
        status_code=200,
        responses={**ADMIN_ERRORS, **error_responses(400, 404, 409)},
    )
    async def remove(
        self,
        bridge: NatsBridge,
        request_id: str,
        version: Annotated[
            str, Parameter(description="The version to remove.", pattern=VERSION_PATTERN, min_length=1, max_length=128)
        ],
    ) -> ModelDeleteResponse:
        """Removed from the registry's object store and the workers' model dir. 409 for the active version (load
        another first) and for the A/B candidate (clear it first); 404 for a version that exists nowhere."""
        if not VERSION_RE.match(version):
            raise _bad("path.version", "not a model version name (letters, digits, '_', '.', '-'; GET /models)")
        deleted = await bridge.model_ops(DeleteModel(version=version), request_id)
        assert isinstance(deleted, ModelDeleted)
        return ModelDeleteResponse(
            success=True,
            message=f"Model {version} removed from {' and '.join(deleted.removed_from)}.",
            version=version,
            removed_from=[w for w in WHERE if w in deleted.removed_from],
            timestamp=utc_now(),
        )

    @post(
        "/validate",
        operation_id="validateModel",
        summary="Score the active model's shipped validation sample and compare with its report (admin)",
        status_code=200,
        responses={**ADMIN_ERRORS, **error_responses(400)},
    )
    async def validate(
        self,
        bridge: NatsBridge,
        request_id: str,
        tolerance: Annotated[
            float,
            Parameter(
                description="Largest |observed - reported| difference of a metric that still agrees.", ge=0.0, le=0.5
            ),
        ] = 0.005,
    ) -> ValidateResponse:
        """`success` is true when the model ships a validation sample and the served model reproduces, within
        `tolerance`, every metric the trainer recorded on it. A model that ships no sample answers
        `sample_available: false` and says so in `message`."""
        r = await bridge.model_ops(ValidateModel(tolerance=tolerance), request_id)
        assert isinstance(r, ValidationReport)
        return ValidateResponse(
            success=r.sample_available and r.agrees,
            message=r.message,
            model_version=r.version,
            model_type=r.kind,
            sample_available=r.sample_available,
            rows=r.rows,
            positives=r.positives,
            tolerance=r.tolerance,
            reported=r.reported,
            observed=r.observed,
            checks=[
                MetricCheckView(
                    name=c.name, reported=c.reported, observed=c.observed, difference=c.difference, agrees=c.agrees
                )
                for c in r.checks
            ],
            agrees=r.agrees,
            model_report=r.model_report,
            instance_id=r.instance_id,
            timestamp=utc_now(),
        )

    @post(
        "/restart",
        operation_id="restartWorkers",
        summary="Rolling reload of the inference workers, one at a time (admin)",
        status_code=200,
        responses=ADMIN_ERRORS,
    )
    async def restart(self, bridge: NatsBridge, request_id: str) -> RestartResponse:
        """Each worker in turn loads its models again and swaps to the fresh copies while it keeps scoring with the
        old ones; the next starts only when the previous one answered, so at most one worker is busy reloading."""
        workers = await bridge.model_control(ModelStatus(), request_id, expect=await bridge.inference_workers())
        if not workers:
            raise BridgeError(
                ErrorReply(
                    code="unavailable",
                    request_id=request_id,
                    retryable=True,
                    message="No inference worker answered on fraud.model.control: nothing to restart. Start them "
                    "(`fraudmesh up`).",
                )
            )
        done = []
        for w in workers:
            states = await bridge.model_control(
                ReloadModels(instance_id=w.instance_id), request_id, expect=1, wanted=w.instance_id
            )
            mine = next((s for s in states if s.instance_id == w.instance_id), None)
            if mine is None:
                done.append(
                    WorkerReload(
                        instance_id=w.instance_id,
                        reloaded=False,
                        active=w.active,
                        candidate=w.candidate,
                        reload_ms=0.0,
                        error="did not answer (stopped or busy); it was left as it was",
                    )
                )
                continue
            done.append(
                WorkerReload(
                    instance_id=w.instance_id,
                    reloaded=not mine.error and mine.reloads > w.reloads,
                    active=mine.active,
                    candidate=mine.candidate,
                    reload_ms=mine.reload_ms,
                    error=mine.error,
                )
            )
        ok = all(d.reloaded for d in done)
        return RestartResponse(
            success=ok,
            message=f"Reloaded {sum(d.reloaded for d in done)} of {len(done)} inference worker(s), one at a time.",
            state="READY" if ok else "DEGRADED",
            reloaded=done,
            timestamp=utc_now(),
        )


class FeatureImportanceController(Controller):
    dependencies = READ_ONLY
    middleware = [GZIP]
    tags = ["operations"]

    @post(
        "/feature-importance",
        operation_id="featureImportance",
        operation_class=body_operation_of(
            FeatureImportanceRequest[StrictTransaction | Row], {"features": [SEED_TRANSACTION]}
        ),
        summary="Per-input attributions and the baseline prediction, from the active model's explainer",
        status_code=200,
        responses={**error_responses(400, 401, 413, 415, 429, 503, 504)},
    )
    async def feature_importance(
        self, request: Request[Any, Any, Any], bridge: NatsBridge, settings: Settings, request_id: str
    ) -> FeatureImportanceResponse:
        """Linear models (the bootstrap) are explained exactly: attribution = coef * (x - training mean), and
        logit(prediction) = logit(baseline_prediction) + sum(attributions). Others (the GNN) by occlusion: per input
        group, logit(prediction) - logit(prediction with the group unknown); the baseline is the prediction with
        every group unknown. Transactions are not recorded in the ledger."""
        body = decode_envelope(await json_body(request), _importance)
        first = bytes(body.features[0]).lstrip()[:1]
        kinds = {bytes(raw).lstrip()[:1] == b"[" for raw in body.features}
        if len(kinds) > 1:
            raise _bad("$.features", "send inputs of one kind: all transactions, or all rows of model inputs")
        if first == b"[":
            rows = []
            for i, raw in enumerate(body.features):
                try:
                    rows.append(_row.decode(raw))
                except msgspec.ValidationError as exc:
                    err = field_error_of(exc)
                    raise _bad(f"$.features[{i}]{err.path[1:]}", err.message) from None
            req = ExplainInputs(rows=rows)
        else:
            txs = decode_transactions(
                body.features, lambda i, rest: f"$.features[{i}]{rest}", settings.card_ids_are_tokens
            )
            req = ExplainInputs(transactions=txs)
        e = await bridge.model_ops(req, request_id)
        assert isinstance(e, Explanation)
        n = len(e.rows)
        mean = {name: round(sum(r.attributions[name] for r in e.rows) / n, 6) for name in e.input_names}
        return FeatureImportanceResponse(
            success=True,
            model_version=e.version,
            explainer="linear" if e.explainer == "linear" else "occlusion",
            units="log_odds",
            baseline=e.baseline,
            feature_importance=dict(sorted(mean.items(), key=lambda kv: -abs(kv[1]))),
            baseline_prediction=[r.baseline_prediction for r in e.rows],
            predictions=[r.prediction for r in e.rows],
            inputs=[
                InputAttribution(
                    prediction=r.prediction, baseline_prediction=r.baseline_prediction, attributions=r.attributions
                )
                for r in e.rows
            ],
            timestamp=utc_now(),
        )
