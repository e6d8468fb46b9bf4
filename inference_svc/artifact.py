"""A model artifact on disk: `<model_dir>/<version>/model.onnx` plus `metadata.json`, and `<model_dir>/active`
naming the version workers load by default."""

from __future__ import annotations

from pathlib import Path

import msgspec

from shared.entities import ENTITY_TYPES


class Thresholds(msgspec.Struct, kw_only=True):
    """Score cut-offs of the risk levels, chosen on validation data: low < medium < high < critical."""

    medium: float
    high: float
    critical: float


class LinearExplainer(msgspec.Struct, kw_only=True, tag="linear"):
    """Per-feature contribution = coef * (x - mean): exact for a logistic regression's logit."""

    coef: list[float]
    mean: list[float]


class EmbeddingSpec(msgspec.Struct, kw_only=True):
    """Entity embeddings a model takes as inputs (`emb_<type>_<k>` columns), shipped beside it as Parquet.

    Serving loads them into the worker's memory with the model (never from Redis); an entity without a row (new,
    or absent from the transaction) gets `default[type]`: what the model saw in training for an entity new to the
    graph."""

    file: str
    dim: int
    types: list[str]
    as_of: str = ""
    default: dict[str, list[float]] = {}
    encoder: str = ""

    def column_names(self) -> list[str]:
        return [f"emb_{t}_{k}" for t in self.types for k in range(self.dim)]


class ValidationSpec(msgspec.Struct, kw_only=True):
    """The validation sample shipped beside a model (`POST /validate`): a Parquet file with one column per model
    input (the `feature_names`, in order), `label` (1 fraud, 0 legit) and `trainer_score` (the trainer's own
    prediction), plus the metrics the trainer computed from those predictions, which serving must reproduce."""

    file: str
    rows: int
    positives: int
    metrics: dict[str, float]
    source: str = ""
    """Which rows: e.g. "bootstrap validation split (last 20% of the synthetic sample)"."""


class ModelMetadata(msgspec.Struct, kw_only=True, omit_defaults=True):
    version: str
    kind: str
    feature_names: list[str]
    thresholds: Thresholds
    explainer: LinearExplainer | None = None
    created_at: str = ""
    training: dict[str, object] = {}
    metrics: dict[str, object] = {}
    input_name: str = "input"
    output_name: str = "probabilities"
    embeddings: EmbeddingSpec | None = None
    validation: ValidationSpec | None = None

    def embedding_spec(self) -> EmbeddingSpec | None:
        """The embeddings declaration (older artifacts kept it under training["embeddings"])."""
        if self.embeddings is not None:
            return self.embeddings
        raw = self.training.get("embeddings")
        if isinstance(raw, dict) and "file" in raw and "dim" in raw:
            types = list(raw.get("types") or raw.get("default", {}).keys() or ENTITY_TYPES)
            return msgspec.convert({**raw, "types": types}, EmbeddingSpec, strict=False)
        return None


class ArtifactError(RuntimeError):
    """The model artifact is missing or unreadable; the message says where and what to run."""


def active_version(model_dir: Path) -> str:
    marker = model_dir / "active"
    if not marker.exists():
        raise ArtifactError(
            f"no active model: {marker} does not exist. Create the bootstrap model with "
            f"`fraudmesh model init --model-dir {model_dir}`, or set FRAUDMESH_MODEL_VERSION."
        )
    return marker.read_text().strip()


def artifact_paths(model_dir: Path, version: str) -> tuple[Path, Path]:
    base = model_dir / version
    onnx_path, meta_path = base / "model.onnx", base / "metadata.json"
    for p in (onnx_path, meta_path):
        if not p.exists():
            raise ArtifactError(
                f"model version {version!r} is incomplete: {p} is missing. Re-create it "
                f"(`fraudmesh model init`) or pick another version."
            )
    return onnx_path, meta_path


def read_metadata(path: Path) -> ModelMetadata:
    try:
        return msgspec.json.decode(path.read_bytes(), type=ModelMetadata)
    except msgspec.ValidationError as exc:
        raise ArtifactError(f"{path} is not valid model metadata: {exc}") from None


def write_artifact(model_dir: Path, meta: ModelMetadata, onnx_bytes: bytes, activate: bool = True) -> Path:
    base = model_dir / meta.version
    base.mkdir(parents=True, exist_ok=True)
    (base / "model.onnx").write_bytes(onnx_bytes)
    (base / "metadata.json").write_bytes(msgspec.json.format(msgspec.json.encode(meta), indent=2))
    if activate:
        tmp = model_dir / ".active.tmp"
        tmp.write_text(meta.version + "\n")
        tmp.replace(model_dir / "active")
    return base
