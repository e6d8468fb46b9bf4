"""Bodies of seed 004's operations routes: `POST /models/load`, `DELETE /models/{version}`, `POST /validate`,
`POST /restart` (admin) and `POST /feature-importance`."""

from __future__ import annotations

import re
from typing import Annotated, Any, Generic, Literal, TypeVar

from msgspec import Meta, Struct

from gateway.seed_schemas import Timestamp

TX = TypeVar("TX")
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
"""The registry's rule for a version name (inference_svc/registry.py VERSION_RE)."""
Where = Literal["object_store", "model_dir"]
WHERE: tuple[Where, ...] = ("object_store", "model_dir")
Version = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=128,
        pattern=VERSION_PATTERN,
        description="A model version (GET /models lists them).",
        examples=["bootstrap-20261201-000000"],
    ),
]
Row = Annotated[
    list[Annotated[float, Meta(description="A model input (null: unknown).")] | None],
    Meta(
        min_length=1,
        description="Model inputs in the order of GET /model/features `feature_names`; null means unknown (only "
        "for models explained by occlusion).",
    ),
]
MAX_IMPORTANCE_INPUTS = 100


# ------------------------------------------------------------------------------------------------ load
class ModelLoadRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    """Name the version with `version`, or (seed 004) with `model_path`, whose last path component is the version."""

    version: Version | None = None
    model_path: (
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=512,
                description="Seed 004's field: a path whose last component is the version (`models/<version>`, "
                "`<version>`); send it or `version`.",
                examples=["models/bootstrap-20261201-000000"],
            ),
        ]
        | None
    ) = None
    model_type: (
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=64,
                description="When given, the version's kind must be this (e.g. logistic_regression, "
                "hetero_graphsage), or nothing changes (400).",
                examples=["logistic_regression"],
            ),
        ]
        | None
    ) = None
    compile_model: (
        Annotated[
            bool,
            Meta(description="Accepted for seed 004: onnxruntime always optimises a model's graph when loading it."),
        ]
        | None
    ) = None


class WorkerModel(Struct, kw_only=True):
    instance_id: Annotated[str, Meta(description="The inference worker.", examples=["inference-0"])]
    active: Annotated[str, Meta(description="The version it serves now.")]
    candidate: Annotated[str, Meta(description="Its A/B candidate ('' when none).")]
    error: Annotated[str, Meta(description="What failed on this worker ('' when nothing did).")]


class ModelInputInfo(Struct, kw_only=True):
    input_features: Annotated[int, Meta(ge=0, description="Number of model inputs.", examples=[20])]
    output_shape: Annotated[list[int], Meta(description="One fraud probability per row: [1].", examples=[[1]])]


class ModelLoadResponse(Struct, kw_only=True):
    success: Annotated[bool, Meta(description="True when every worker that answered serves the version now.")]
    message: Annotated[str, Meta(description="What happened, in words.")]
    version: Annotated[str, Meta(description="The version now active.")]
    previous_version: Annotated[str, Meta(description="The version that was active before.")]
    model_type: Annotated[str, Meta(description="The version's kind.", examples=["logistic_regression"])]
    model_info: Annotated[ModelInputInfo, Meta(description="The model's inputs and outputs.")]
    workers: Annotated[list[WorkerModel], Meta(description="Every inference worker that answered, after the swap.")]
    timestamp: Timestamp


# ---------------------------------------------------------------------------------------------- delete
class ModelDeleteResponse(Struct, kw_only=True):
    success: Annotated[bool, Meta(description="True: the version is gone.")]
    message: Annotated[str, Meta(description="What happened, in words.")]
    version: Annotated[str, Meta(description="The deleted version.")]
    removed_from: Annotated[
        list[Where],
        Meta(description="Where it was removed: the registry's object store, the workers' model dir."),
    ]
    timestamp: Timestamp


# -------------------------------------------------------------------------------------------- validate
class MetricCheckView(Struct, kw_only=True):
    name: Annotated[str, Meta(description="The metric.", examples=["roc_auc"])]
    reported: Annotated[float, Meta(description="Recorded by the trainer on the sample.", examples=[0.8371])]
    observed: Annotated[float, Meta(description="Computed now from the served model's scores.", examples=[0.8371])]
    difference: Annotated[float, Meta(ge=0, description="|observed - reported|.", examples=[0.0])]
    agrees: Annotated[bool, Meta(description="difference <= tolerance.")]


class ValidateResponse(Struct, kw_only=True):
    success: Annotated[bool, Meta(description="True when the model ships a sample and every metric agrees.")]
    message: Annotated[str, Meta(description="The verdict in words (or why there is none).")]
    model_version: Annotated[str, Meta(description="The validated (active) version.")]
    model_type: Annotated[str, Meta(description="Its kind.")]
    sample_available: Annotated[bool, Meta(description="False: the model ships no validation sample.")]
    rows: Annotated[int, Meta(ge=0, description="Rows in the sample.")]
    positives: Annotated[int, Meta(ge=0, description="Fraud rows in the sample.")]
    tolerance: Annotated[float, Meta(ge=0, description="Largest |observed - reported| that agrees.")]
    reported: Annotated[dict[str, float], Meta(description="Metrics the trainer recorded on the sample.")]
    observed: Annotated[dict[str, float], Meta(description="The same metrics from the served model's scores.")]
    checks: Annotated[list[MetricCheckView], Meta(description="Each metric compared.")]
    agrees: Annotated[bool, Meta(description="Every check agrees.")]
    model_report: Annotated[dict[str, Any], Meta(description="The scalar metrics of the model's own report.")]
    instance_id: Annotated[str, Meta(description="The inference worker that ran the check.")]
    timestamp: Timestamp


# --------------------------------------------------------------------------------------------- restart
class WorkerReload(Struct, kw_only=True):
    instance_id: Annotated[str, Meta(description="The inference worker.", examples=["inference-0"])]
    reloaded: Annotated[bool, Meta(description="True: it swapped to freshly loaded models.")]
    active: Annotated[str, Meta(description="The version it serves.")]
    candidate: Annotated[str, Meta(description="Its A/B candidate ('' when none).")]
    reload_ms: Annotated[float, Meta(ge=0, description="How long its reload took, ms.")]
    error: Annotated[str, Meta(description="Why it did not reload ('' when it did).")]


class RestartResponse(Struct, kw_only=True):
    success: Annotated[bool, Meta(description="True when every worker reloaded.")]
    message: Annotated[str, Meta(description="What happened, in words.")]
    state: Annotated[Literal["READY", "DEGRADED"], Meta(description="READY when every worker reloaded.")]
    reloaded: Annotated[list[WorkerReload], Meta(description="Each worker, in the order they were reloaded.")]
    timestamp: Timestamp


# ---------------------------------------------------------------------------------- feature importance
class FeatureImportanceRequest(Struct, Generic[TX], kw_only=True, forbid_unknown_fields=True):
    """`FeatureImportanceRequest[msgspec.Raw]` to decode; `[StrictTransaction | Row]` to document."""

    features: Annotated[
        list[TX],
        Meta(
            min_length=1,
            max_length=MAX_IMPORTANCE_INPUTS,
            description="1 to 100 inputs, all of one kind: transactions (their features are built as for scoring) "
            "or rows of model inputs (seed 004's `[[0.1, 0.2, ...]]`, one value per model input).",
        ),
    ]


class InputAttribution(Struct, kw_only=True):
    prediction: Annotated[float, Meta(ge=0, le=1, description="The model's fraud probability for this input.")]
    baseline_prediction: Annotated[float, Meta(ge=0, le=1, description="The explainer's baseline (see `baseline`).")]
    attributions: Annotated[dict[str, float], Meta(description="Input (or input group) -> contribution, log-odds.")]


class FeatureImportanceResponse(Struct, kw_only=True):
    success: Annotated[bool, Meta(description="True.")]
    model_version: Annotated[str, Meta(description="The model that explained the inputs.")]
    explainer: Annotated[Literal["linear", "occlusion"], Meta(description="How the attributions are defined.")]
    units: Annotated[Literal["log_odds"], Meta(description="Unit of the attributions.")]
    baseline: Annotated[str, Meta(description="What `baseline_prediction` is and how it relates to the score.")]
    feature_importance: Annotated[
        dict[str, float],
        Meta(description="Attribution of each input, averaged over the inputs sent (for one input: its own)."),
    ]
    baseline_prediction: Annotated[list[float], Meta(description="The baseline prediction of each input, in order.")]
    predictions: Annotated[list[float], Meta(description="The fraud probability of each input, in order.")]
    inputs: Annotated[list[InputAttribution], Meta(description="Per input, in order: prediction, baseline and all.")]
    timestamp: Timestamp
