"""An ONNX model served by onnxruntime, with its metadata (feature order, thresholds, explainer) and, for a GNN,
its entity embeddings (in memory: inference_svc/embeddings.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from inference_svc.artifact import ArtifactError, ModelMetadata, active_version, artifact_paths, read_metadata
from inference_svc.embeddings import EmbeddingBlock


class OnnxModel:
    def __init__(
        self, onnx_path: Path, meta: ModelMetadata, threads: int = 1, embeddings: EmbeddingBlock | None = None
    ) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ArtifactError(f"onnxruntime cannot load {onnx_path}: {exc}") from None
        self.meta = meta
        self.version = meta.version
        self.embeddings = embeddings
        self.input_name = self.session.get_inputs()[0].name
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_name = meta.output_name if meta.output_name in outputs else outputs[-1]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Fraud probability per row."""
        out = self.session.run([self.output_name], {self.input_name: x.astype(np.float32, copy=False)})[0]
        out = np.asarray(out)
        return out[:, 1] if out.ndim == 2 else out.reshape(-1)

    def contributions(self, x: np.ndarray) -> np.ndarray | None:
        """Per-feature contribution to each row's logit, where the model has an exact explainer."""
        ex = self.meta.explainer
        if ex is None:
            return None
        return (x - np.asarray(ex.mean, dtype=np.float32)) * np.asarray(ex.coef, dtype=np.float32)


def load_model(model_dir: Path, version: str = "", threads: int = 1) -> OnnxModel:
    """Load `version` (or the active one) from `model_dir`; raises ArtifactError with a fix when it cannot."""
    version = version or active_version(model_dir)
    onnx_path, meta_path = artifact_paths(model_dir, version)
    meta = read_metadata(meta_path)
    spec = meta.embedding_spec()
    embeddings = EmbeddingBlock.load(spec, meta.version, onnx_path.parent) if spec is not None else None
    return OnnxModel(onnx_path, meta, threads=threads, embeddings=embeddings)
