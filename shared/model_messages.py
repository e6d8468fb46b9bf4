"""The model control API on `fraud.model.control` (msgpack on NATS), for operators and the `fraudmesh model` CLI.

Every inference worker subscribes to the subject WITHOUT a queue group, so a request reaches all of them, and each
answers with its own `ModelWorkerState` (or an `ErrorReply` when the request does not decode). A caller gathers the
replies for a moment, as with `fraudmesh.health.<service>`.

The control message is the fast path. The source of truth is the NATS KV bucket `fraudmesh_model_state`
(`inference_svc/registry.py`): the CLI writes the KV first and then publishes the message, and workers also
watch the KV, so a worker that missed the message (or starts later) still converges.

Schema rules as in shared/messages.py: new fields get defaults, a field's type never changes and is never
renamed or reused, unknown fields are ignored, and every top-level Struct carries a `type` tag.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from msgspec import Meta, Struct

from shared.messages import ErrorReply, Transaction

ModelVersion = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$",
        description="A model version: the name of its directory in the model dir and its prefix in the object store.",
    ),
]
Share = Annotated[float, Meta(ge=0.0, le=1.0, description="Fraction of partials routed to the candidate.")]


class ActivateModel(Struct, tag="activate_model", tag_field="type", kw_only=True):
    """Switch every worker to `version` (fetched from the object store where a worker does not have it). Partials
    in flight finish on the version they started with."""

    version: ModelVersion


class SetCandidate(Struct, tag="set_candidate", tag_field="type", kw_only=True):
    """A/B: route `share` of the partials (chosen by a hash of request id and partial index) to `version`."""

    version: ModelVersion
    share: Share


class ClearCandidate(Struct, tag="clear_candidate", tag_field="type", kw_only=True):
    """Stop the A/B split: every partial goes to the active version."""


class ModelStatus(Struct, tag="model_status", tag_field="type", kw_only=True):
    """Change nothing; every worker answers with its state."""


class ReloadModels(Struct, tag="reload_models", tag_field="type", kw_only=True):
    """The worker `instance_id` loads its active version (and candidate) again from the model dir or the registry
    and swaps to the fresh copies, serving the old ones meanwhile; every other worker just answers its state. A
    rolling restart (`POST /restart`) sends one per worker, each after the previous one answered."""

    instance_id: str


ModelControl = Union[ActivateModel, SetCandidate, ClearCandidate, ModelStatus, ReloadModels]  # noqa: UP007
"""Body of a request on `fraud.model.control`. (`typing.Union`, not `|`: the service base names the request type
in its error replies, and only this form has a `__name__`.)"""


class ModelWorkerState(Struct, tag="model_state", tag_field="type", kw_only=True):
    """One worker's answer: what it serves after handling the request. `error` is empty when the request was
    applied; otherwise it says what failed, and the worker kept serving what it served before."""

    instance_id: str
    active: str
    candidate: str = ""
    candidate_share: float = 0.0
    pinned: bool = False
    """The worker runs FRAUDMESH_MODEL_VERSION and ignores activations (A/B candidates still apply)."""
    swaps: int = 0
    """Times this worker switched its active version since it started."""
    error: str = ""
    reloads: int = 0
    """Times this worker reloaded its models (`ReloadModels`) since it started."""
    reload_ms: float = 0.0
    """How long its last reload took, ms (0 before the first)."""


ModelControlReply = ModelWorkerState | ErrorReply


# ------------------------------------------------------------------------------------ model info (read only)
class ModelInfoRequest(Struct, tag="model_info", tag_field="type", kw_only=True):
    """Body of a request on `fraud.model.info`: what does the fleet serve? One inference worker answers (queue
    group), from what it has loaded and from the registry (`fraudmesh_models`, `fraudmesh_model_state`)."""

    family: str = "fraud"


class ModelSummary(Struct, kw_only=True):
    """One model version as its metadata describes it (`<model_dir>/<version>/metadata.json`)."""

    version: str
    kind: str = ""
    created_at: str = ""
    feature_names: list[str] = []
    thresholds: dict[str, float] = {}
    """Score cut-offs of the risk levels: `medium`, `high`, `critical`."""
    metrics: dict[str, Any] = {}
    training: dict[str, Any] = {}
    """What the trainer recorded: source, rows, seed, and the training data's time range where it has one."""


class ModelInfo(Struct, tag="model_info_reply", tag_field="type", kw_only=True):
    family: str
    instance_id: str
    active: ModelSummary
    candidate: ModelSummary | None = None
    candidate_share: float = 0.0
    versions: list[str] = []
    """Every version this worker can serve: published in the registry or present in its model dir."""
    pinned: bool = False


ModelInfoReply = ModelInfo | ErrorReply


# ---------------------------------------------------------------------------- model operations (fraud.model.ops)
class LoadModel(Struct, tag="load_model", tag_field="type", kw_only=True):
    """Make `version` the active one: the worker that takes the request swaps to it first (so a version that does
    not load is refused before anything changes), then writes the registry's `active` key. The caller then
    broadcasts `ActivateModel` so every worker swaps now rather than on its next KV read."""

    version: ModelVersion
    kind: str = ""
    """When set, the version's `kind` (its metadata) must be this, or nothing changes (seed 004's `model_type`)."""


class ModelLoaded(Struct, tag="model_loaded", tag_field="type", kw_only=True):
    version: str
    previous: str
    """The version that was active before."""
    kind: str = ""
    instance_id: str = ""
    input_features: int = 0


class DeleteModel(Struct, tag="delete_model", tag_field="type", kw_only=True):
    """Remove a version from the registry's object store and the model dir. Refused (`conflict`) for the active
    version and the A/B candidate, `not_found` for a version that exists nowhere."""

    version: ModelVersion


class ModelDeleted(Struct, tag="model_deleted", tag_field="type", kw_only=True):
    version: str
    removed_from: list[str] = []
    """`object_store` and/or `model_dir`."""


class ValidateModel(Struct, tag="validate_model", tag_field="type", kw_only=True):
    """Score the active model's shipped validation sample and compare the metrics with those the trainer recorded."""

    tolerance: float = 0.005


class MetricCheck(Struct, kw_only=True):
    name: str
    reported: float
    observed: float
    difference: float
    agrees: bool


class ValidationReport(Struct, tag="validation_report", tag_field="type", kw_only=True):
    version: str
    kind: str = ""
    instance_id: str = ""
    sample_available: bool = False
    message: str = ""
    sample_file: str = ""
    rows: int = 0
    positives: int = 0
    tolerance: float = 0.0
    reported: dict[str, float] = {}
    """The metrics the trainer recorded on this sample (its own predictions, before the ONNX export)."""
    observed: dict[str, float] = {}
    """The same metrics from this worker's onnxruntime scores of the sample."""
    checks: list[MetricCheck] = []
    agrees: bool = False
    model_report: dict[str, Any] = {}
    """The scalar metrics of the model's metadata (the trainer's report)."""


class ExplainInputs(Struct, tag="explain_inputs", tag_field="type", kw_only=True):
    """Per-input attributions of the active model for some transactions (their features are built as for scoring)
    or for rows of model inputs (in the order of the model's `feature_names`; null: unknown, NaN)."""

    transactions: list[Transaction] = []
    rows: list[list[float | None]] = []


class RowExplanation(Struct, kw_only=True):
    prediction: float
    baseline_prediction: float
    attributions: dict[str, float]


class Explanation(Struct, tag="explanation", tag_field="type", kw_only=True):
    version: str
    explainer: str
    """`linear` (coef * (x - mean), exact for the model's logit) or `occlusion` (drop in logit when a group of
    inputs is set unknown)."""
    baseline: str
    """What `baseline_prediction` is, in words."""
    input_names: list[str]
    rows: list[RowExplanation]


ModelOps = Union[LoadModel, DeleteModel, ValidateModel, ExplainInputs]  # noqa: UP007
"""Body of a request on `fraud.model.ops`."""
ModelOpsReply = ModelLoaded | ModelDeleted | ValidationReport | Explanation | ErrorReply
