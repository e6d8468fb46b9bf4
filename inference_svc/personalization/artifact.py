"""A personalization model on disk (trainer/personalization/export.py): `<dir>/<version>/model.onnx`, `ids.json`,
`metadata.json`, and `<dir>/active` naming the served version. Loaded into onnxruntime; torch is never imported."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from feature_svc.world.personalization.features import CONTEXT_FEATURES

INPUTS = ("user_index", "item_index", "context")
OUTPUTS = ("relevance", "affinity", "conversion")


class PersonalizationModelError(RuntimeError):
    """The model cannot be loaded; the message says which file and what to do."""


@dataclass(frozen=True)
class PersonalizationModel:
    version: str
    session: ort.InferenceSession
    user_index: dict[str, int]
    item_index: dict[str, int]
    metadata: dict[str, Any]

    @property
    def cold_user(self) -> int:
        return len(self.user_index)

    @property
    def cold_item(self) -> int:
        return len(self.item_index)

    def run(
        self, users: np.ndarray, items: np.ndarray, context: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = self.session.run(list(OUTPUTS), {"user_index": users, "item_index": items, "context": context})
        return np.asarray(out[0]), np.asarray(out[1]), np.asarray(out[2])


def active_version(model_dir: Path) -> str | None:
    marker = model_dir / "active"
    return marker.read_text().strip() or None if marker.exists() else None


def versions(model_dir: Path) -> list[str]:
    if not model_dir.is_dir():
        return []
    return sorted(p.name for p in model_dir.iterdir() if (p / "model.onnx").exists())


def load(model_dir: Path, version: str, threads: int = 1) -> PersonalizationModel:
    base = model_dir / version
    try:
        meta = json.loads((base / "metadata.json").read_text())
        ids = json.loads((base / "ids.json").read_text())
    except (OSError, ValueError) as exc:
        raise PersonalizationModelError(
            f"personalization model {version!r} in {model_dir}: cannot read its metadata.json/ids.json ({exc}); "
            "train one with `python -m trainer.personalization --out {model_dir}`."
        ) from None
    if list(meta.get("context_features", [])) != list(CONTEXT_FEATURES):
        raise PersonalizationModelError(
            f"personalization model {version!r} was trained on context features {meta.get('context_features')}, "
            f"this server builds {list(CONTEXT_FEATURES)}: retrain it with this release."
        )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(base / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise PersonalizationModelError(f"onnxruntime cannot load {base / 'model.onnx'}: {exc}") from None
    names = tuple(i.name for i in session.get_inputs())
    if names != INPUTS:
        raise PersonalizationModelError(f"{base / 'model.onnx'} takes inputs {names}, expected {INPUTS}.")
    return PersonalizationModel(
        version=version,
        session=session,
        user_index={u: k for k, u in enumerate(ids["users"])},
        item_index={i: k for k, i in enumerate(ids["items"])},
        metadata=meta,
    )
