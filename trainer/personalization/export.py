"""The served artifact of the personalization family: `<out>/<version>/model.onnx` (the embedding tables with a cold
row each, the relevance percentile and the conversion head, so the server needs neither torch nor the graph),
`ids.json` (the user and item ids of the table rows) and `metadata.json`; `<out>/active` names the active version.

ONNX inputs: `user_index` int64 [N], `item_index` int64 [N] (the last row of each table is the cold start: the mean
embedding), `context` float32 [N, len(CONTEXT_FEATURES)]. Outputs: `relevance` (share of all items the user's
affinity ranks below this one), `affinity` (the embeddings' dot product), `conversion` (P(bought | viewed))."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from feature_svc.world.personalization.features import CONTEXT_FEATURES, FEATURE_SET_VERSION
from trainer.personalization.model import ConversionHead

OPSET = 17
INPUTS = ("user_index", "item_index", "context")
OUTPUTS = ("relevance", "affinity", "conversion")


class Served(nn.Module):
    def __init__(self, users: np.ndarray, items: np.ndarray, head: ConversionHead) -> None:
        super().__init__()
        u = np.vstack([users, users.mean(0, keepdims=True)])
        i = np.vstack([items, items.mean(0, keepdims=True)])
        self.register_buffer("users", torch.as_tensor(u))
        self.register_buffer("items", torch.as_tensor(i))
        self.n_items = len(items)
        self.head = head.eval()

    def forward(
        self, user_index: torch.Tensor, item_index: torch.Tensor, context: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        u = self.users[user_index]
        i = self.items[item_index]
        affinity = (u * i).sum(-1)
        every = u @ self.items[: self.n_items].T
        relevance = (every < affinity.unsqueeze(-1)).float().mean(-1)
        conversion = torch.sigmoid(self.head(u, i, context))
        return relevance, affinity, conversion


def onnx_bytes(users: np.ndarray, items: np.ndarray, head: ConversionHead) -> bytes:
    model = Served(users, items, head).eval()
    example = (
        torch.zeros(2, dtype=torch.int64),
        torch.zeros(2, dtype=torch.int64),
        torch.zeros(2, len(CONTEXT_FEATURES), dtype=torch.float32),
    )
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            example,
            buf,
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_axes={name: {0: "n"} for name in (*INPUTS, *OUTPUTS)},
            opset_version=OPSET,
            dynamo=False,
        )
    return buf.getvalue()


def new_version(out: Path | None = None) -> str:
    """`pers-<UTC time>`, with a suffix when `out` already holds that version (two runs in one second)."""
    base = "pers-" + dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    version, n = base, 1
    while out is not None and (out / version).exists():
        n += 1
        version = f"{base}-{n}"
    return version


def write(
    out: Path,
    version: str,
    onnx: bytes,
    user_ids: list[str],
    item_ids: list[str],
    metrics: dict[str, Any],
    training: dict[str, Any],
    activate: bool = True,
) -> Path:
    base = out / version
    base.mkdir(parents=True, exist_ok=True)
    (base / "model.onnx").write_bytes(onnx)
    (base / "ids.json").write_text(json.dumps({"users": user_ids, "items": item_ids}))
    meta = {
        "family": "personalization",
        "version": version,
        "kind": "lightgcn",
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "feature_set_version": FEATURE_SET_VERSION,
        "context_features": list(CONTEXT_FEATURES),
        "inputs": list(INPUTS),
        "outputs": list(OUTPUTS),
        "metrics": metrics,
        "training": training,
    }
    (base / "metadata.json").write_text(json.dumps(meta, indent=2))
    if activate:
        tmp = out / ".active.tmp"
        tmp.write_text(version + "\n")
        os.replace(tmp, out / "active")
    return base
